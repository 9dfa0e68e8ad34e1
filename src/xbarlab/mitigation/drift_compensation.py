"""Drift compensation: global (GDC) and per-column output scaling, as in Joshi et al. 2020 and IBM aihwkit.

Conductance drift ``G(t) = G(t0)·(t/t0)^(−ν)`` shrinks every crossbar output. Drift compensation measures a
*read-out* of each analog layer right after programming (the reference, at t0) and again at inference time t
(the current read-out), and multiplies the layer's outputs digitally by ``ref / cur`` (docs/papers.md §4.2-§4.3):

* ``kind="global"`` (aihwkit ``GlobalDriftCompensation``, Joshi's GDC): one factor per layer;
* ``kind="per_column"`` (aihwkit ``PerColumnDriftCompensation``): one factor per output column (output channel).

Read-outs (``readout=``):

* ``"forward"`` (default, aihwkit): the one-hot read-out batch ``eye(K)`` (every crossbar row driven alone) is
  sent through the layer as it computes at inference time: DAC, effective weights (programming error, drift,
  frozen read noise), per-MVM read noise and ADC when enabled; the read-out is ``max(mean|y|, 1e-4)`` over the
  batch (and over columns for ``global``). For a convolution the one-hot inputs are kernel-sized patches
  (zero padding disabled for the read-out), so each one drives exactly one crossbar row. The per-MVM noise
  generators are restored afterwards, so the test-set evaluation sees the same noise draws with or without
  compensation.
* ``"weights"``: the same read-out computed exactly from the effective weights (no converters, no per-MVM
  noise): ``mean|W_eff|``.
* ``"conductance"``: Joshi's hardware formulation: the summed current of all columns at a constant read
  voltage, i.e. ``Σ G(t)`` over every device of the layer (both devices of a pair, idle ones included), so
  ``cur/ref = α̂`` of docs/papers.md §4.2. Parasitics are ignored by this read-out.

The factors are applied by a forward hook on each analog layer (``xbarlab.layers`` is not modified): the hook
rescales the analog part of the output, ``y' = s·(y − b) + b`` (b: the digital bias), i.e. **after the ADC, in
the digital periphery**. Being a per-column linear factor it can equally be folded into the following BN
(γ and running mean/std) or into the output scaling of the ADC; the simulation keeps it as a separate
multiplication for clarity.

The reference belongs to the moment after programming. :func:`record_reference` stores it on the layers
(call it after :func:`xbarlab.program` and before :func:`xbarlab.drift`). When no reference is stored,
:func:`compensate` measures it by moving the chip back to t0 for the read-out and then forward again: the
simulated device state at t0 (programming draws, frozen read noise) is reproduced exactly, so this equals a
read-out taken right after programming. This is what the mitigation callables (:func:`drift_compensation` for
:func:`xbarlab.evaluation.evaluate_chips`, and the sweep mitigations ``drift_comp_global`` /
``drift_comp_column``) do, since they are applied after drift.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from xbarlab import devices
from xbarlab.layer_types import AnalogConv, AnalogLinear
from xbarlab.layers import AnalogLayer, analog_layers
from xbarlab.mapping import weight_to_matrix
from xbarlab.mitigation.registry import (
    MitigationDef,
    MitigationOutcome,
    NoDataContext,
    OptionLimit,
    RegisteredMitigation,
    check_options,
    get_mitigation,
    register_mitigation,
)

__all__ = [
    "KINDS",
    "READOUTS",
    "READOUT_FLOOR",
    "DriftCompensationResult",
    "OutputScale",
    "compensate",
    "compensation_scales",
    "drift_compensation",
    "layer_readout",
    "record_reference",
    "remove_compensation",
]

KINDS = ("global", "per_column")
"""Compensation granularity: one factor per layer or one per output column."""
READOUTS = ("forward", "weights", "conductance")
"""How the read-out is measured (see the module docstring)."""
READOUT_FLOOR = 1e-4
"""aihwkit's floor on a read-out (output units): ``max(mean|y|, 1e-4)``."""

_REF_ATTR = "_xbarlab_drift_reference"


def _check(kind: str, readout: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind: invalid value {kind!r}; allowed: {', '.join(KINDS)}")
    if readout not in READOUTS:
        raise ValueError(f"readout: invalid value {readout!r}; allowed: {', '.join(READOUTS)}")


def _layers(model: nn.Module) -> list[AnalogLayer]:
    layers = analog_layers(model)
    if not layers:
        raise ValueError("model: has no analog layers; convert it with xbarlab.convert(model, hw) first")
    for layer in layers:
        layer._require_programmed()
    return layers


# ------------------------------------------------------------------------------------------------ read-outs


def _eye_input(layer: AnalogLayer) -> Tensor:
    """The one-hot read-out batch: one input per crossbar row (per group)."""
    dtype, device = layer.weight.dtype, layer.weight.device
    if isinstance(layer, AnalogLinear):
        return torch.eye(layer.in_features, dtype=dtype, device=device)
    if not isinstance(layer, AnalogConv):
        raise TypeError(f"layer '{layer.layer_name}': unsupported analog layer type {type(layer).__name__}")
    kernel = layer.kernel_size
    kk = math.prod(kernel)
    k_total = layer.in_channels * kk
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, layer.dilation, strict=True)]
    x = torch.zeros(k_total, layer.in_channels, *eff, dtype=dtype, device=device)
    idx = torch.arange(k_total)
    chan = idx // kk
    pos = idx % kk
    if layer.ndim == 1:
        x[idx, chan, pos * layer.dilation[0]] = 1.0
    else:
        kw = kernel[1]
        x[idx, chan, (pos // kw) * layer.dilation[0], (pos % kw) * layer.dilation[1]] = 1.0
    return x


@torch.no_grad()
def _forward_readout(layer: AnalogLayer) -> Tensor:
    """|outputs| of the one-hot batch through the layer (hooks bypassed), shape (rows, C_out), bias removed."""
    x = _eye_input(layer)
    rng_state = layer.mvm_rng_state()
    saved: tuple[Any, str] | None = None
    if isinstance(layer, AnalogConv):
        saved = (layer.padding, layer.padding_mode)
        layer.padding = (0,) * layer.ndim
        layer.padding_mode = "zeros"  # type: ignore[assignment]
    try:
        y = layer.forward(x)  # .forward: our own (and any other) hooks are not applied to the read-out
    finally:
        if isinstance(layer, AnalogConv) and saved is not None:
            layer.padding, layer.padding_mode = saved  # type: ignore[assignment]
        layer.set_mvm_rng_state(rng_state)
    y = y.reshape(x.shape[0], -1)
    if layer.bias is not None:
        y = y - layer.bias.detach().view(1, -1)
    return y.abs().to(torch.float64)


def _conductance_readout(layer: AnalogLayer, per_column: bool) -> Tensor:
    g, _ = layer.read_conductances_us()  # (G, S, P, Tr, Tc, R, C) µS
    if not per_column:
        return g.sum().reshape(())
    lay = layer.layout
    cols = g.sum(dim=(1, 2, 3, 5))  # (G, Tc, C)
    cols = cols[..., : lay.data_cols].reshape(lay.groups, -1)[:, : lay.n]
    return cols.reshape(-1)


@torch.no_grad()
def layer_readout(layer: AnalogLayer, *, kind: str = "global", readout: str = "forward") -> Tensor:
    """The read-out of one programmed analog layer at its current chip time.

    Returns, on the layer's device (no host copy), a float64 scalar tensor (``kind="global"``) or a vector of
    length C_out (``"per_column"``), in output units (``forward``, ``weights``: mean |y| for the one-hot batch,
    floored at :data:`READOUT_FLOOR`) or in µS (``conductance``: summed device conductances).
    """
    _check(kind, readout)
    layer._require_programmed()
    per_column = kind == "per_column"
    if readout == "conductance":
        return _conductance_readout(layer, per_column)
    if readout == "weights":
        a = weight_to_matrix(layer.effective_weight().detach().to(torch.float64), layer.groups).abs()  # (G, K, N)
        values = a.mean(1).reshape(-1) if per_column else a.mean().reshape(())
    else:
        y = _forward_readout(layer)
        values = y.mean(0) if per_column else y.mean().reshape(())
    return values.clamp_min(READOUT_FLOOR)  # stays on the layer's device (no host copy)


def _at_time(layer: AnalogLayer, t_seconds: float, fn: Callable[[], Tensor]) -> Tensor:
    """Evaluate ``fn`` with the layer moved to ``t_seconds`` (s), then move it back to its current time."""
    assert layer.chip_time is not None
    now = float(layer.chip_time)
    if now == t_seconds:
        return fn()
    layer.set_time(t_seconds)
    try:
        return fn()
    finally:
        layer.set_time(now)


@torch.no_grad()
def record_reference(model: nn.Module, *, kind: str = "global", readout: str = "forward") -> dict[str, Tensor]:
    """Measure and store each analog layer's reference read-out at the current time (call right after program).

    Returns ``{layer_name: reference}``. The reference lives on the layer object (not in its state dict) and is
    used by :func:`compensate` for the same ``kind`` and ``readout``.
    """
    _check(kind, readout)
    refs: dict[str, Tensor] = {}
    for layer in _layers(model):
        ref = layer_readout(layer, kind=kind, readout=readout)
        store = layer.__dict__.setdefault(_REF_ATTR, {})
        store[(kind, readout)] = ref
        refs[layer.layer_name] = ref
    return refs


def _reference(layer: AnalogLayer, kind: str, readout: str) -> tuple[Tensor, bool]:
    """(reference, measured now): the stored one, or a read-out at t0 (the time right after programming)."""
    stored = layer.__dict__.get(_REF_ATTR, {}).get((kind, readout))
    if stored is not None:
        return stored, False
    t0 = devices.initial_time_s(layer.hw.drift)
    return _at_time(layer, t0, lambda: layer_readout(layer, kind=kind, readout=readout)), True


# ------------------------------------------------------------------------------------------------ the output scale


class OutputScale:
    """Forward hook multiplying an analog layer's output (bias excluded) by a digital factor per column.

    ``scale``: a scalar or a (C_out,) tensor; output channels are dimension 1 of a convolution's output and the
    last dimension of a linear layer's output.
    """

    def __init__(self, scale: Tensor) -> None:
        self.scale = scale

    def __call__(self, module: nn.Module, args: Any, output: Tensor) -> Tensor:
        s = self.scale.to(device=output.device, dtype=output.dtype)
        bias = getattr(module, "bias", None)
        if s.dim() == 1:
            shape = [1] * output.dim()
            shape[1 if isinstance(module, AnalogConv) else -1] = -1
            s = s.view(shape)
        in_place = not output.requires_grad  # the layer's fresh output: the same operations without copies
        if bias is None:
            return output.mul_(s) if in_place else output * s
        b = bias.detach().to(output.dtype)
        if isinstance(module, AnalogConv):
            b = b.view(1, -1, *([1] * (output.dim() - 2)))
        return output.sub_(b).mul_(s).add_(b) if in_place else (output - b) * s + b


def remove_compensation(model: nn.Module) -> int:
    """Remove every drift-compensation hook from the analog layers of ``model``; returns how many were removed."""
    removed = 0
    for layer in analog_layers(model):
        for key in [k for k, h in layer._forward_hooks.items() if isinstance(h, OutputScale)]:
            del layer._forward_hooks[key]
            removed += 1
    return removed


def compensation_scales(model: nn.Module) -> dict[str, Tensor]:
    """The digital factors currently installed, ``{layer_name: scale}`` (empty when none)."""
    out: dict[str, Tensor] = {}
    for layer in analog_layers(model):
        for h in layer._forward_hooks.values():
            if isinstance(h, OutputScale):
                out[layer.layer_name] = h.scale
    return out


@dataclass(frozen=True)
class DriftCompensationResult:
    """What :func:`compensate` did: the factors per layer and a summary for the records."""

    kind: str
    readout: str
    scales: dict[str, Tensor]
    reference_measured_at_t0: bool

    def info(self) -> dict[str, Any]:
        """JSON-ready summary: mean, min and max factor over all layers (and columns)."""
        flat = torch.cat([s.reshape(-1) for s in self.scales.values()]) if self.scales else torch.ones(1)
        return {
            "drift_comp": self.kind,
            "drift_comp_readout": self.readout,
            "drift_comp_layers": len(self.scales),
            "drift_comp_scale_mean": float(flat.mean()),
            "drift_comp_scale_min": float(flat.min()),
            "drift_comp_scale_max": float(flat.max()),
        }


@torch.no_grad()
def compensate(model: nn.Module, *, kind: str = "global", readout: str = "forward") -> DriftCompensationResult:
    """Install ``ref/cur`` output factors on every analog layer of a programmed (drifted) chip, in place.

    ``ref`` is the stored reference (:func:`record_reference`) or, when none is stored, a read-out at t0; ``cur``
    the read-out at the chip's current time. Replaces factors installed earlier. Returns the factors.
    """
    _check(kind, readout)
    layers = _layers(model)
    remove_compensation(model)
    scales: dict[str, Tensor] = {}
    measured = False
    for layer in layers:
        ref, now = _reference(layer, kind, readout)
        measured = measured or now
        cur = layer_readout(layer, kind=kind, readout=readout)
        scale = (ref.to(cur.device) / cur).to(torch.float32)
        layer.register_forward_hook(OutputScale(scale.to(layer.weight.device)))
        scales[layer.layer_name] = scale
    return DriftCompensationResult(kind, readout, scales, measured)


def drift_compensation(kind: str = "global", readout: str = "forward") -> RegisteredMitigation:
    """The registered drift compensation (``drift_comp_global`` / ``drift_comp_column``) with ``readout``, for
    :func:`xbarlab.evaluation.evaluate_chips`: ``mitigation=drift_compensation("per_column")`` applies it as a
    sweep trial or ``xbarlab mitigate`` does (it reads no training data)."""
    _check(kind, readout)
    name = "drift_comp_global" if kind == "global" else "drift_comp_column"
    return RegisteredMitigation(
        get_mitigation(name), check_options(name, {"readout": readout}), lambda seed: NoDataContext(seed)
    )


# ------------------------------------------------------------------------------------------------ sweep registry


def _sweep_mitigation(kind: str) -> Callable[[nn.Module, Any, Mapping[str, Any]], Any]:
    def apply(chip: nn.Module, ctx: Any, options: Mapping[str, Any]) -> Any:
        readout = str(options.get("readout", "forward"))
        return MitigationOutcome(compensate(chip, kind=kind, readout=readout).info())

    return apply


def register_sweep_mitigations() -> None:
    """Register ``drift_comp_global`` and ``drift_comp_column`` in the sweep mitigation registry (idempotent)."""
    for name, kind, text in (
        ("drift_comp_global", "global", "one factor per layer (GDC; aihwkit GlobalDriftCompensation)"),
        ("drift_comp_column", "per_column", "one factor per output column (aihwkit PerColumnDriftCompensation)"),
    ):
        register_mitigation(
            MitigationDef(
                name,
                f"Drift compensation, {text}: output scaled digitally by ref/cur read-outs "
                "(xbarlab.mitigation.drift_compensation; readout: forward, weights or conductance).",
                _sweep_mitigation(kind),
                {"readout": "forward"},
                {"readout": OptionLimit(choices=READOUTS)},
            ),
            replace=True,
        )


# Importing this module registers its sweep mitigations, so the registry can declare them lazily:
# register_lazy_mitigation("drift_comp_global", "xbarlab.mitigation.drift_compensation") (and drift_comp_column).
register_sweep_mitigations()
