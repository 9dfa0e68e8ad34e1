"""Training of compensation branches (:func:`train_compensation`): only the branch parameters learn, the analog
weights and BN statistics stay frozen, a fresh chip (or one of a :class:`ChipPool`) is programmed every step."""

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
from xbarlab.layers import CONVERTER_BUFFERS, DERIVED_BUFFERS, analog_layers
from xbarlab.mitigation.compensation.branches import compensated_layers
from xbarlab.seeding import derive_seed

__all__ = [
    "LOSSES",
    "ChipPool",
    "CompensationTrainResult",
    "FeatureMatchingLoss",
    "NormalizedCrossEntropy",
    "distillation_loss",
    "train_compensation",
    "training_chip_seed",
]


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
