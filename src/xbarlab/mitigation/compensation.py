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
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xbarlab.chip import calibrate, needs_calibration, program
from xbarlab.layers import CONVERTER_BUFFERS, DERIVED_BUFFERS, AnalogConv, AnalogLayer, AnalogLinear, analog_layers
from xbarlab.seeding import derive_seed

__all__ = [
    "DEFAULT_REDUCTION",
    "LOSSES",
    "ChipPool",
    "CompensatedLayer",
    "CompensationBranch",
    "CompensationConfig",
    "CompensationTrainResult",
    "FeatureMatchingLoss",
    "NormalizedCrossEntropy",
    "OverheadReport",
    "attach_compensation",
    "branch_for",
    "compensated_layers",
    "compensation_overhead",
    "compensation_state",
    "count_macs",
    "detach_compensation",
    "distillation_loss",
    "layer_names",
    "load_compensation_state",
    "train_compensation",
    "training_chip_seed",
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


# --------------------------------------------------------------------------------------------------- overhead


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
    handles = []
    for path, module in model.named_modules():
        if _is_weight_layer(module):

            def hook(mod: nn.Module, _inp: Any, out: Tensor, path: str = path) -> None:
                macs[path] = macs.get(path, 0) + _layer_macs(mod, out)

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
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


# --------------------------------------------------------------------------------------------------- training


def training_chip_seed(seed: int, step: int) -> int:
    """Seed of the chip programmed for training step ``step`` (31-bit, derived; disjoint in practice from the
    small consecutive seeds used for evaluation chips)."""
    return derive_seed("compensation-train-chip", seed, step) % (2**31 - 1)


_POOL_BUFFERS = (*DERIVED_BUFFERS, "w_max", "chip_seed", "chip_time")


class ChipPool:
    """Pre-sampled chip instances: the effective-weight buffers of every analog layer for ``size`` chips.

    A speed-up for searches that train many branch sets (each ``program`` call re-samples every device): chips
    are programmed once with seeds :func:`training_chip_seed` ``(seed, i)`` and loaded by index. Only the buffers
    the forward pass reads are stored (not the per-device conductances), so after :meth:`load` the layer's
    device state is stale; :func:`train_compensation` re-programs the last pool chip at the end to leave a
    consistent chip.
    """

    def __init__(self, model: nn.Module, size: int, seed: int = 0) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size: invalid value {size!r}; allowed: an integer >= 1")
        self.size = size
        self.seed = seed
        self.seeds = [training_chip_seed(seed, i) for i in range(size)]
        self.states: list[dict[str, dict[str, Tensor | None]]] = []
        for chip_seed in self.seeds:
            program(model, chip_seed)
            self.states.append(
                {la.layer_name: {b: getattr(la, b, None) for b in _POOL_BUFFERS} for la in analog_layers(model)}
            )

    def load(self, model: nn.Module, index: int) -> None:
        """Put chip ``index`` into the analog layers of ``model`` (same layer names as the pooled model)."""
        state = self.states[index % self.size]
        for la in analog_layers(model):
            if la.layer_name not in state:
                raise KeyError(f"model: analog layer {la.layer_name!r} is not in the chip pool")
            for name, value in state[la.layer_name].items():
                setattr(la, name, value)
            la._mvm_generators = {}


@dataclass
class CompensationTrainResult:
    """What :func:`train_compensation` returns."""

    layers: tuple[str, ...]
    steps: int
    losses: list[float]
    wall_time_s: float
    trainable_params: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``loss(logits, labels, inputs) -> scalar``."""
LOSSES = ("ce_normalized", "ce", "feature", "kd")
"""Built-in compensation training losses."""


def _ce_loss(logits: Tensor, labels: Tensor, _inputs: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels)


class NormalizedCrossEntropy:
    """``CE(τ·z/‖z‖, y)``: cross-entropy on logits rescaled per sample to a fixed norm τ (scale-free).

    Under strong log-normal variation the logit scale of a chip grows with the mean device gain e^{σ²/2} of
    every analog layer, so plain cross-entropy is dominated by over-confident errors and rewards branches that
    shrink the features (the cheapest way to lower the loss), which collapses the predictions. Normalising the
    logits removes that incentive; the arg-max, hence the accuracy, is unchanged. τ is the mean logit norm of
    the digital ``teacher`` on the first batch it sees (or the given ``tau``). A τ measured from the teacher stays
    a 0-d tensor on the logits' device (no host read); ``tau`` is then that tensor.
    """

    def __init__(self, teacher: nn.Module | None = None, *, tau: float | None = None) -> None:
        if teacher is None and tau is None:
            raise ValueError("teacher: required when tau is not given (τ is the digital model's mean logit norm)")
        if tau is not None and not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau: invalid value {tau!r}; allowed: a finite number > 0")
        self.teacher = teacher
        self.tau: float | Tensor | None = tau

    def __call__(self, logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
        if self.tau is None:
            assert self.teacher is not None
            was_training = self.teacher.training
            self.teacher.eval()
            with torch.no_grad():
                self.tau = self.teacher(inputs).norm(dim=1).mean().detach()
            self.teacher.train(was_training)
        z = logits.flatten(1)
        z = self.tau * z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return F.cross_entropy(z, labels)


def distillation_loss(teacher: nn.Module) -> LossFn:
    """MSE between the chip's outputs (logits) and a digital ``teacher``'s outputs on the same inputs."""
    teacher.eval()

    def loss(logits: Tensor, _labels: Tensor, inputs: Tensor) -> Tensor:
        with torch.no_grad():
            target = teacher(inputs)
        return F.mse_loss(logits, target)

    return loss


class FeatureMatchingLoss:
    """``Σ_l ‖ỹ_l − y_l‖² / ‖y_l‖² + ce_weight·CE``: compensated outputs ỹ_l against the digital teacher's y_l.

    ``y_l`` is the output of the teacher's module at the same dotted path as compensated layer l, for the same
    input images (the teacher is the digital model the chip was converted from). The normalised squared error is
    scale-free, so every compensated layer counts equally. Hooks are removed by :meth:`close`.
    """

    def __init__(self, model: nn.Module, teacher: nn.Module, *, ce_weight: float = 0.0) -> None:
        if ce_weight < 0 or not math.isfinite(ce_weight):
            raise ValueError(f"ce_weight: invalid value {ce_weight!r}; allowed: a finite number >= 0")
        self.ce_weight = ce_weight
        self.teacher = teacher.eval()
        self._student: dict[str, Tensor] = {}
        self._teacher: dict[str, Tensor] = {}
        self._handles: list[Any] = []
        paths = {id(m): p for p, m in model.named_modules()}
        comps = compensated_layers(model)
        if not comps:
            raise ValueError("model: has no compensation branch; call attach_compensation(model, layers) first")
        for name, comp in comps.items():
            path = paths[id(comp)]
            try:
                target = teacher.get_submodule(path)
            except AttributeError as exc:
                raise KeyError(f"teacher: has no module {path!r} matching compensated layer {name!r}") from exc
            self._handles.append(comp.register_forward_hook(self._store(self._student, name)))
            self._handles.append(target.register_forward_hook(self._store(self._teacher, name)))

    @staticmethod
    def _store(where: dict[str, Tensor], name: str) -> Callable[[nn.Module, Any, Tensor], None]:
        def hook(_m: nn.Module, _inp: Any, out: Tensor) -> None:
            where[name] = out

        return hook

    def __call__(self, logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
        with torch.no_grad():
            self.teacher(inputs)
        terms = []
        for name, student in self._student.items():
            target = self._teacher[name].detach()
            terms.append((student - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-12))
        total = torch.stack(terms).sum()
        if self.ce_weight > 0:
            total = total + self.ce_weight * F.cross_entropy(logits, labels)
        self._student.clear()
        self._teacher.clear()
        return total

    def close(self) -> None:
        """Remove the forward hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []


def _converter_ranges(model: nn.Module) -> dict[str, dict[str, Tensor | None]]:
    return {la.layer_name: {b: getattr(la, b) for b in CONVERTER_BUFFERS} for la in analog_layers(model)}


def _restore_ranges(model: nn.Module, ranges: dict[str, dict[str, Tensor | None]]) -> None:
    for la in analog_layers(model):
        for b, v in ranges.get(la.layer_name, {}).items():
            setattr(la, b, v)


def _cycle(loader: Iterable[Any]) -> Iterator[Any]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("train_loader: yielded no batch")


def _read_losses(pending: list[Tensor], losses: list[float]) -> None:
    """Move the device-side step losses of ``pending`` to ``losses`` in one host read; a non-finite loss raises
    :class:`FloatingPointError` naming its step (1-based)."""
    if not pending:
        return
    values = torch.stack(pending).tolist()
    pending.clear()
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise FloatingPointError(f"non-finite compensation loss {v} at step {len(losses) + i + 1}; lower lr")
    losses.extend(values)


def train_compensation(
    model: nn.Module,
    train_loader: Iterable[Any],
    *,
    steps: int,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    resample: bool = True,
    chip_pool: ChipPool | None = None,
    calib_loader: Iterable[Any] | None = None,
    calib_batches: int = 2,
    loss: str | LossFn = "ce_normalized",
    teacher: nn.Module | None = None,
    ce_weight: float = 0.0,
    device: str | torch.device = "cpu",
    log_every: int = 0,
    log: Callable[[str], None] | None = None,
) -> CompensationTrainResult:
    """Train the compensation branches of a converted, compensated ``model`` in place (Adam).

    Only branch parameters are trained: every other parameter is frozen and the whole model stays in eval mode
    (BN statistics untouched). With ``resample`` (default) a fresh chip is programmed before every batch with
    seed :func:`training_chip_seed` ``(seed, step)``; converter (DAC/ADC) ranges are calibrated once, on the
    first chip, from ``calib_loader`` and reused for the later chips (a converter's range is a design-time
    setting, not re-tuned per chip). Without ``resample`` the chip already programmed is used throughout. A
    :class:`ChipPool` replaces fresh programming by a random pool chip per batch (faster, fewer distinct chips).

    ``loss``: ``"ce_normalized"`` (default, :class:`NormalizedCrossEntropy`; τ from the digital ``teacher``),
    ``"ce"`` (cross-entropy on the labels), ``"feature"``
    (:class:`FeatureMatchingLoss` against the ``teacher``, plus ``ce_weight`` × cross-entropy), ``"kd"`` (MSE to
    the teacher's logits) or any :data:`LossFn`. Same arguments and seed → identical branch weights.

    Device: ``model`` (and ``teacher``) live on ``device``; batches are copied there with ``non_blocking`` (pinned
    loaders overlap the copy on CUDA). The step losses stay on the device and are read once at the end (and at
    each ``log_every`` step), so training never waits for the host per step; a non-finite loss raises
    :class:`FloatingPointError` naming its first step when they are read (the branch weights are then left as the
    optimizer made them: discard the model). The only other host read is the converter calibration on the first
    chip (:func:`xbarlab.calibrate`, once per call).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: invalid value {steps!r}; allowed: an integer >= 1")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: invalid value {lr!r}; allowed: a finite number > 0")
    comps = compensated_layers(model)
    if not comps:
        raise ValueError("model: has no compensation branch; call attach_compensation(model, layers) first")
    loss_fn: LossFn
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss: invalid value {loss!r}; allowed: one of {', '.join(LOSSES)} or a callable")
        if loss != "ce" and teacher is None:
            raise ValueError(f"teacher: required with loss {loss!r} (the digital model the chip came from)")
        if loss == "ce":
            loss_fn = _ce_loss
        elif loss == "ce_normalized":
            loss_fn = NormalizedCrossEntropy(teacher)
        elif loss == "kd":
            assert teacher is not None
            loss_fn = distillation_loss(teacher)
        else:
            assert teacher is not None
            loss_fn = FeatureMatchingLoss(model, teacher, ce_weight=ce_weight)
    else:
        loss_fn = loss
    branch_params = [p for c in comps.values() for p in c.branch.parameters()]
    branch_ids = {id(p) for p in branch_params}
    saved_flags = {id(p): p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in branch_ids)
    torch.manual_seed(derive_seed("compensation-train", seed) % (2**63 - 1))
    optimizer = torch.optim.Adam(branch_params, lr=lr, weight_decay=weight_decay)
    pool_gen = torch.Generator().manual_seed(derive_seed("compensation-pool", seed) % (2**63 - 1))
    was_training = model.training
    model.eval()
    losses: list[float] = []
    pending: list[Tensor] = []
    ranges: dict[str, dict[str, Tensor | None]] | None = None
    start = time.perf_counter()
    dev = torch.device(device)
    try:
        batches = _cycle(train_loader)
        for step in range(steps):
            if chip_pool is not None:
                chip_pool.load(model, int(torch.randint(chip_pool.size, (1,), generator=pool_gen)))
                if ranges is not None:
                    _restore_ranges(model, ranges)
            elif resample:
                program(model, training_chip_seed(seed, step))
                if ranges is not None:
                    _restore_ranges(model, ranges)
            if needs_calibration(model):
                if calib_loader is None:
                    raise ValueError("calib_loader: required, the hardware has DAC/ADC converters to calibrate")
                calibrate(model, calib_loader, num_batches=calib_batches, device=dev)
                ranges = _converter_ranges(model)
            inputs, labels = next(batches)
            inputs, labels = inputs.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
            logits = model(inputs)
            value = loss_fn(logits, labels, inputs)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            pending.append(value.detach())  # stays on the device: no host read per step
            if log is not None and log_every and (step + 1) % log_every == 0:
                _read_losses(pending, losses)
                recent = losses[-log_every:]
                log(f"compensation step {step + 1}/{steps}: loss {sum(recent) / len(recent):.4f}")
        _read_losses(pending, losses)
    finally:
        for p in model.parameters():
            p.requires_grad_(saved_flags.get(id(p), False))
        model.train(was_training)
        if chip_pool is not None:
            program(model, chip_pool.seeds[-1])
        close = getattr(loss_fn, "close", None)
        if callable(close):
            close()
    return CompensationTrainResult(
        layers=tuple(comps),
        steps=steps,
        losses=losses,
        wall_time_s=time.perf_counter() - start,
        trainable_params=sum(p.numel() for p in branch_params),
        settings={
            "lr": lr,
            "weight_decay": weight_decay,
            "seed": seed,
            "resample": resample,
            "chip_pool": None if chip_pool is None else {"size": chip_pool.size, "seed": chip_pool.seed},
            "loss": loss if isinstance(loss, str) else getattr(loss, "__name__", "custom"),
            "ce_weight": ce_weight,
        },
    )


def layer_names(model: nn.Module) -> list[str]:
    """Analog layer names of a converted model, in module order."""
    return [la.layer_name for la in analog_layers(model)]
