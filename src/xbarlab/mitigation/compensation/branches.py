"""Digital error compensation after analog layers (CorrectNet's "error compensation", docs/papers.md §3.6).

A compensated layer computes ``y' = y + g(y)`` where ``y`` is the analog layer's output and ``g`` a small
digital, noise-free branch (it runs after the ADC, in the digital domain, and never sees device variation):

* convolutions: ``g = B ∘ ReLU ∘ A`` with A a 1×1 conv C → max(1, C/r) and B a 1×1 conv back to C (r = 4,
  docs/papers.md §3.6 default);
* linear layers: the same bottleneck with ``nn.Linear`` maps (a low-rank branch of rank max(1, C/r));
* optionally (``affine=True``, default) a per-channel affine term ``a ⊙ y + s`` (2·C parameters), the exact
  correction of a per-channel gain/offset error, which a rank-C/r branch cannot represent.

B, a and s start at zero, so an attached branch is exactly the identity until it is trained. Training
(:func:`train_compensation`) updates only the branch parameters; the analog weights (and BN statistics) stay
frozen and a fresh chip instance is programmed every batch (``xbarlab.program(chip, fresh_seed)``), so the
branch learns a correction that holds across chips, not a calibration of one chip.

Overhead (:func:`compensation_overhead`): branch parameters and multiply-accumulates per inference as % of the
base model's weight-layer parameters and MACs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xbarlab.layer_types import AnalogConv, AnalogLinear
from xbarlab.layers import AnalogLayer, analog_layers
from xbarlab.seeding import derive_seed

__all__ = [
    "DEFAULT_REDUCTION",
    "CompensatedLayer",
    "CompensationBranch",
    "CompensationConfig",
    "attach_compensation",
    "branch_for",
    "compensated_layers",
    "compensation_state",
    "detach_compensation",
    "layer_names",
    "load_compensation_state",
]

DEFAULT_REDUCTION = 4
"""Bottleneck reduction r: the branch is C → C/r → C (docs/papers.md §3.6)."""


@dataclass(frozen=True)
class CompensationConfig:
    """Architecture of a compensation branch.

    Attributes:
        reduction: bottleneck reduction r (hidden width max(min_hidden, C // r)).
        min_hidden: smallest hidden width.
        affine: add the per-channel affine term ``a ⊙ y + s``.
        activation: ``relu`` or ``identity`` between the two maps.
        bias: biases in the bottleneck maps.
    """

    reduction: int = DEFAULT_REDUCTION
    min_hidden: int = 1
    affine: bool = True
    activation: str = "relu"
    bias: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.reduction, bool) or not isinstance(self.reduction, int) or self.reduction < 1:
            raise ValueError(f"reduction: invalid value {self.reduction!r}; allowed: an integer >= 1")
        if isinstance(self.min_hidden, bool) or not isinstance(self.min_hidden, int) or self.min_hidden < 1:
            raise ValueError(f"min_hidden: invalid value {self.min_hidden!r}; allowed: an integer >= 1")
        if self.activation not in ("relu", "identity"):
            raise ValueError(f"activation: invalid value {self.activation!r}; allowed: 'relu' or 'identity'")

    def hidden(self, channels: int) -> int:
        """Hidden width for a layer with ``channels`` outputs."""
        return max(self.min_hidden, channels // self.reduction)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CompensationBranch(nn.Module):
    """``g(y) = B(act(A(y))) [+ a ⊙ y + s]`` over the channel dimension (dim 1 for convs, last for linear)."""

    def __init__(self, channels: int, *, spatial_dims: int | None, config: CompensationConfig, seed: int = 0) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels: invalid value {channels}; allowed: >= 1")
        self.channels = channels
        self.spatial_dims = spatial_dims
        self.config = config
        hidden = config.hidden(channels)
        self.down: nn.Module
        self.up: nn.Module
        if spatial_dims is None:
            self.down = nn.Linear(channels, hidden, bias=config.bias)
            self.up = nn.Linear(hidden, channels, bias=config.bias)
        elif spatial_dims == 1:
            self.down = nn.Conv1d(channels, hidden, 1, bias=config.bias)
            self.up = nn.Conv1d(hidden, channels, 1, bias=config.bias)
        elif spatial_dims == 2:
            self.down = nn.Conv2d(channels, hidden, 1, bias=config.bias)
            self.up = nn.Conv2d(hidden, channels, 1, bias=config.bias)
        else:
            raise ValueError(f"spatial_dims: invalid value {spatial_dims!r}; allowed: None, 1 or 2")
        self.scale: nn.Parameter | None = None
        self.shift: nn.Parameter | None = None
        if config.affine:
            self.scale = nn.Parameter(torch.zeros(channels))
            self.shift = nn.Parameter(torch.zeros(channels))
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """Seeded init: ``down`` ~ U(−1/√C, 1/√C) (PyTorch's default bound), ``up``, ``a`` and ``s`` zero."""
        gen = torch.Generator().manual_seed(derive_seed("compensation-branch-init", seed) % (2**63 - 1))
        bound = 1.0 / math.sqrt(self.channels)
        for t in (self.down.weight, getattr(self.down, "bias", None)):
            if isinstance(t, Tensor):
                t.copy_((torch.rand(t.shape, generator=gen, dtype=torch.float64) * 2 - 1).to(t.dtype) * bound)
        for t in (self.up.weight, getattr(self.up, "bias", None), self.scale, self.shift):
            if isinstance(t, Tensor):
                t.zero_()

    def _channel_view(self, v: Tensor, like: Tensor) -> Tensor:
        if self.spatial_dims is None:
            return v
        return v.view(1, -1, *([1] * (like.dim() - 2)))

    def forward(self, y: Tensor) -> Tensor:
        h = self.down(y)
        if self.config.activation == "relu":
            h = F.relu(h)
        out = self.up(h)
        if self.scale is not None and self.shift is not None:
            out = out + y * self._channel_view(self.scale, y) + self._channel_view(self.shift, y)
        return out

    def macs_per_position(self) -> int:
        """Multiply-accumulates per output position (per spatial location; per sample for linear layers)."""
        hidden = self.config.hidden(self.channels)
        macs = 2 * self.channels * hidden
        if self.config.affine:
            macs += self.channels
        return macs


class CompensatedLayer(nn.Module):
    """An analog layer followed by a digital compensation branch: ``forward(x) = y + g(y)``, ``y = layer(x)``.

    The analog layer keeps its ``layer_name`` (so chip sampling is unchanged by attaching a branch).
    """

    def __init__(self, layer: AnalogLayer, branch: CompensationBranch) -> None:
        super().__init__()
        self.layer = layer
        self.branch = branch

    @property
    def layer_name(self) -> str:
        return self.layer.layer_name

    def __getattr__(self, name: str) -> Any:
        """Attributes not defined here come from the wrapped layer (``padding``, ``weight``, ``layout``...)."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("layer", "branch"):
                raise
            return getattr(self._modules["layer"], name)

    def forward(self, x: Tensor) -> Tensor:
        y = self.layer(x)
        return y + self.branch(y)


def branch_for(layer: nn.Module, config: CompensationConfig | None = None, *, seed: int = 0) -> CompensationBranch:
    """A branch sized for ``layer`` (an analog or digital Conv1d/Conv2d/Linear), identity at init, seeded."""
    config = config or CompensationConfig()
    if isinstance(layer, AnalogConv):
        return CompensationBranch(layer.out_channels, spatial_dims=layer.ndim, config=config, seed=seed)
    if isinstance(layer, AnalogLinear):
        return CompensationBranch(layer.out_features, spatial_dims=None, config=config, seed=seed)
    if isinstance(layer, nn.Conv2d):
        return CompensationBranch(layer.out_channels, spatial_dims=2, config=config, seed=seed)
    if isinstance(layer, nn.Conv1d):
        return CompensationBranch(layer.out_channels, spatial_dims=1, config=config, seed=seed)
    if isinstance(layer, nn.Linear):
        return CompensationBranch(layer.out_features, spatial_dims=None, config=config, seed=seed)
    raise TypeError(f"layer: unsupported type {type(layer).__name__}; allowed: analog or Conv1d/Conv2d/Linear")


def compensated_layers(model: nn.Module) -> dict[str, CompensatedLayer]:
    """Compensated layers of ``model`` by their (analog) layer name."""
    return {m.layer_name: m for m in model.modules() if isinstance(m, CompensatedLayer)}


def _module_path(model: nn.Module, layer_name: str) -> str:
    """Dotted module path of the analog layer named ``layer_name`` (its own name, or inside a wrapper)."""
    for path, module in model.named_modules():
        if isinstance(module, AnalogLayer) and module.layer_name == layer_name:
            return path
    names = [la.layer_name for la in analog_layers(model)]
    raise KeyError(f"layer: invalid value {layer_name!r}; allowed: one of the analog layers {names}")


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def attach_compensation(
    model: nn.Module,
    layers: Iterable[str],
    config: CompensationConfig | None = None,
    *,
    state: dict[str, Tensor] | None = None,
    seed: int = 0,
) -> dict[str, CompensatedLayer]:
    """Wrap the named analog layers of a converted ``model`` (in place) with identity-initialised branches.

    Branch initialisation is seeded from (``seed``, layer name). Layers already compensated are left as they
    are. ``state`` (from :func:`compensation_state`) loads trained branch weights for the attached layers.
    Returns the compensated layers by name.
    """
    config = config or CompensationConfig()
    existing = compensated_layers(model)
    for name in layers:
        if name in existing:
            continue
        path = _module_path(model, name)
        layer = model.get_submodule(path)
        assert isinstance(layer, AnalogLayer)
        branch = branch_for(layer, config, seed=derive_seed(seed, name) % (2**31)).to(layer.weight.device)
        _set_module(model, path, CompensatedLayer(layer, branch))
    if state is not None:
        load_compensation_state(model, state, strict=False)
    return compensated_layers(model)


def detach_compensation(model: nn.Module, layers: Iterable[str] | None = None) -> list[str]:
    """Remove branches (all, or the named layers'), restoring the bare analog layers; returns the names."""
    removed = []
    wanted = None if layers is None else set(layers)
    for path, module in list(model.named_modules()):
        if isinstance(module, CompensatedLayer) and (wanted is None or module.layer_name in wanted):
            _set_module(model, path, module.layer)
            removed.append(module.layer_name)
    if wanted is not None and wanted - set(removed):
        missing = sorted(wanted - set(removed))
        raise KeyError(f"layers: {missing} are not compensated; allowed: {sorted(removed)}")
    return removed


def compensation_state(model: nn.Module) -> dict[str, Tensor]:
    """Branch parameters as a flat dict ``{"<layer>/<param>": tensor}`` (safetensors-ready)."""
    out: dict[str, Tensor] = {}
    for name, comp in compensated_layers(model).items():
        for key, value in comp.branch.state_dict().items():
            out[f"{name}/{key}"] = value.detach().clone().contiguous()
    return out


def load_compensation_state(model: nn.Module, state: dict[str, Tensor], *, strict: bool = True) -> None:
    """Load branch weights saved by :func:`compensation_state` into the compensated layers of ``model``."""
    comps = compensated_layers(model)
    per_layer: dict[str, dict[str, Tensor]] = {}
    for key, value in state.items():
        layer, _, param = key.partition("/")
        per_layer.setdefault(layer, {})[param] = value
    unknown = sorted(set(per_layer) - set(comps))
    if strict and unknown:
        raise KeyError(f"state: layers {unknown} are not compensated in the model; allowed: {sorted(comps)}")
    for layer, params in per_layer.items():
        if layer in comps:
            comps[layer].branch.load_state_dict(params)


def layer_names(model: nn.Module) -> list[str]:
    """Analog layer names of a converted model, in module order."""
    return [la.layer_name for la in analog_layers(model)]
