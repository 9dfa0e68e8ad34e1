"""Overhead of compensation branches: parameters and multiply-accumulates per inference (:func:`compensation_overhead`,
:func:`count_macs`), as % of the base model's weight layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from xbarlab.hooks import ForwardHook, forward_hooks
from xbarlab.layers import AnalogLayer
from xbarlab.mitigation.compensation.branches import CompensatedLayer, CompensationBranch, compensated_layers

__all__ = [
    "OverheadReport",
    "compensation_overhead",
    "count_macs",
]


def _is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear, AnalogLayer))


def _layer_macs(module: nn.Module, output: Tensor) -> int:
    """MACs of one forward of a conv/linear (analog or digital) producing ``output`` (per sample)."""
    weight = module.weight
    assert isinstance(weight, Tensor)
    batch = output.shape[0] if output.dim() > 1 else 1
    per_output = weight[0].numel()  # inputs per output value: in_features, or C_in/groups · prod(kernel)
    return output.numel() * per_output // max(1, batch)


@torch.no_grad()
def count_macs(model: nn.Module, example: Tensor) -> dict[str, int]:
    """MACs per sample of every weight layer (digital Conv/Linear and analog layers) for input ``example``.

    Keys are module paths; branch layers appear under their own paths (``…​.branch.down`` etc.). The model runs
    once in eval mode on ``example`` (its first dimension is the batch); analog layers must be programmed.
    """
    macs: dict[str, int] = {}

    def hook_for(path: str) -> ForwardHook:
        def hook(mod: nn.Module, _inp: Any, out: Tensor) -> None:
            macs[path] = macs.get(path, 0) + _layer_macs(mod, out)

        return hook

    hooks = [(m, hook_for(path)) for path, m in model.named_modules() if _is_weight_layer(m)]
    was_training = model.training
    model.eval()
    try:
        with forward_hooks(hooks):
            model(example)
    finally:
        model.train(was_training)
    # the affine term of the branches: one MAC per output element
    for path, module in model.named_modules():
        if isinstance(module, CompensatedLayer) and module.branch.scale is not None:
            down = f"{path}.branch.down"
            if down in macs:
                hidden = module.branch.config.hidden(module.branch.channels)
                positions = macs[down] // max(1, module.branch.channels * hidden)
                macs[f"{path}.branch.affine"] = positions * module.branch.channels
    return macs


@dataclass(frozen=True)
class OverheadReport:
    """Compensation overhead: parameters and MACs per inference, absolute and as % of the base model."""

    layers: tuple[str, ...]
    branch_params: int
    base_params: int
    branch_macs: int
    base_macs: int
    per_layer: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def params_pct(self) -> float:
        return 100.0 * self.branch_params / max(1, self.base_params)

    @property
    def macs_pct(self) -> float:
        return 100.0 * self.branch_macs / max(1, self.base_macs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "branch_params": self.branch_params,
            "base_params": self.base_params,
            "params_pct": self.params_pct,
            "branch_macs": self.branch_macs,
            "base_macs": self.base_macs,
            "macs_pct": self.macs_pct,
            "per_layer": self.per_layer,
        }


def _base_params(model: nn.Module) -> int:
    """Parameters of the model excluding branches (analog weights count once, like the digital model)."""
    branch_ids = {id(p) for m in model.modules() if isinstance(m, CompensationBranch) for p in m.parameters()}
    total = 0
    for p in model.parameters():
        if id(p) not in branch_ids:
            total += p.numel()
    return total


def compensation_overhead(model: nn.Module, example: Tensor) -> OverheadReport:
    """Overhead of the branches attached to a programmed, compensated ``model`` for one input ``example``.

    Base parameters: every parameter outside the branches (weights, biases, BN affine). Base MACs: every
    conv/linear layer outside the branches. Branch MACs include the affine term (one MAC per output element).
    """
    macs = count_macs(model, example[:1])
    comps = compensated_layers(model)
    per_layer: dict[str, dict[str, int]] = {}
    branch_macs = 0
    path_of = {id(m): p for p, m in model.named_modules()}
    for name, comp in comps.items():
        prefix = path_of[id(comp)] + ".branch."
        lm = sum(v for k, v in macs.items() if k.startswith(prefix))
        params = sum(p.numel() for p in comp.branch.parameters())
        per_layer[name] = {"params": params, "macs": lm}
        branch_macs += lm
    prefixes = tuple(path_of[id(c)] + ".branch." for c in comps.values())
    base_macs = sum(v for k, v in macs.items() if not (prefixes and k.startswith(prefixes)))
    return OverheadReport(
        layers=tuple(comps),
        branch_params=sum(v["params"] for v in per_layer.values()),
        base_params=_base_params(model),
        branch_macs=branch_macs,
        base_macs=base_macs,
        per_layer=per_layer,
    )
