"""Distortion metrics: PC2 (P1 §1.6), PC2-proj under drift, MAC signal-to-noise ratio, per-layer distortion.

* :func:`pc2` -- the proportion of variance on the 2nd principal component of the 2-D scatter
  ``{(W_ideal,k, W_NI,k)}`` of one layer (docs/papers.md §1.6 implementation note). 0 for an ideal chip.
* :func:`pc2_proj` -- ``PC2 · (T/T0)^ν`` (P1's drift-projected PC2).
* :func:`snr_db`, :func:`mac_error_stats` -- dot-product (MAC) error of a layer's outputs against the ideal
  digital outputs.
* :func:`layer_distortion` -- PC2 (and, given calibration inputs, MAC SNR) of every analog layer of a model.

Analog layers are duck-typed: any module with a ``weight`` (ideal weights), an ``effective_weight()`` method
(the weights the chip computes with, same shape) and a ``layer_name`` attribute.

Pure computation: the W_NI vs W_ideal scatter plot of these records is
:func:`xbarlab.reports.plots.plot_weight_scatter`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "LayerDistortion",
    "MacErrorStats",
    "analog_layers",
    "layer_distortion",
    "mac_error_stats",
    "pc2",
    "pc2_proj",
    "snr_db",
]

ArrayLike = Any  # torch.Tensor | np.ndarray | sequence of numbers

#: Default maximum number of points stored / drawn for a weight scatter.
MAX_SCATTER_POINTS = 20_000


def _as_f64(a: ArrayLike, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        arr = a.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(a, dtype=np.float64)
    return arr.reshape(-1)


def _pair(a: ArrayLike, b: ArrayLike, fn: str, na: str, nb: str) -> tuple[np.ndarray, np.ndarray]:
    sa = tuple(a.shape) if hasattr(a, "shape") else np.shape(a)
    sb = tuple(b.shape) if hasattr(b, "shape") else np.shape(b)
    if tuple(sa) != tuple(sb):
        raise ValueError(f"{fn}: {na} has shape {tuple(sa)} but {nb} has shape {tuple(sb)}; they must match")
    x = _as_f64(a, na)
    y = _as_f64(b, nb)
    for arr, nm in ((x, na), (y, nb)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{fn}: {nm} contains NaN or inf values")
    return x, y


# ----------------------------------------------------------------------------------------------------
# PC2
# ----------------------------------------------------------------------------------------------------


def pc2(w_ideal: ArrayLike, w_nonideal: ArrayLike) -> float:
    """Fraction of the variance on the 2nd principal component of the scatter (w_ideal, w_nonideal).

    Implementation (docs/papers.md §1.6 note, float64): centre both coordinates, form the 2×2 sample covariance
    ``C = [[a, b], [b, d]]`` (no standardisation: both axes in weight units), and return ``λ2 / (λ1 + λ2)``
    with the eigenvalues λ1 ≥ λ2 of C. To avoid cancellation for nearly collinear points, the determinant is
    computed as ``a · Var(y − (b/a)·x)`` (= ``a·d − b²``, regressing the lower-variance axis on the other),
    ``λ1 = (tr C + sqrt((a − d)² + 4b²)) / 2`` and ``λ2 = det C / λ1``. Identical inputs give exactly 0.0.

    Args:
        w_ideal: ideal weights (any shape; tensor or array).
        w_nonideal: non-ideal weights W_NI, same shape.

    Returns:
        PC2 in [0, 0.5].

    Raises:
        ValueError: shapes differ, fewer than 2 weights, NaN/inf values, or a coordinate with zero variance
            (constant weights: PCA of the scatter is degenerate).
    """
    x, y = _pair(w_ideal, w_nonideal, "pc2", "w_ideal", "w_nonideal")
    n = x.size
    if n < 2:
        raise ValueError(f"pc2: need at least 2 weights, got {n}")
    xc = x - x.mean()
    yc = y - y.mean()
    a = float(np.dot(xc, xc)) / (n - 1)
    d = float(np.dot(yc, yc)) / (n - 1)
    if a == 0.0 or d == 0.0:
        which = "w_ideal and w_nonideal are" if a == d == 0.0 else ("w_ideal is" if a == 0.0 else "w_nonideal is")
        raise ValueError(f"pc2: {which} constant (zero variance over {n} weights); PC2 is undefined")
    b = float(np.dot(xc, yc)) / (n - 1)
    # det C = a·d − b² computed without cancellation: regress the smaller-variance axis on the larger one.
    if a >= d:
        r = yc - (b / a) * xc
        det = a * float(np.dot(r, r)) / (n - 1)
    else:
        r = xc - (b / d) * yc
        det = d * float(np.dot(r, r)) / (n - 1)
    tr = a + d
    lam1 = 0.5 * (tr + math.sqrt((a - d) ** 2 + 4.0 * b * b))
    lam2 = max(det, 0.0) / lam1
    return float(min(max(lam2 / tr, 0.0), 0.5))


def pc2_proj(pc2_value: float, t_seconds: float, t0_seconds: float = 1.0, nu: float = 0.1) -> float:
    """Drift-projected PC2 (P1 §1.6): ``PC2 · (T/T0)^ν``.

    Drift shrinks the W_NI range by ``(T/T0)^(−ν)``; P1 scales the measured PC2 back up by ``(T/T0)^ν``.

    Args:
        pc2_value: the measured PC2 (in [0, 0.5]).
        t_seconds: time since programming T, in s (> 0).
        t0_seconds: reference time T0, in s (> 0; P1 uses 1 s).
        nu: drift coefficient ν (≥ 0; default 0.1 = FeFET, P1 Table 1; 0.04 for PCM/RRAM).
    """
    for name, v, lo in (("t_seconds", t_seconds, 0.0), ("t0_seconds", t0_seconds, 0.0)):
        if not math.isfinite(v) or v <= lo:
            raise ValueError(f"pc2_proj: {name} must be a finite time > 0 s, got {v!r}")
    if not math.isfinite(nu) or nu < 0:
        raise ValueError(f"pc2_proj: nu (drift coefficient) must be finite and >= 0, got {nu!r}")
    if not math.isfinite(pc2_value) or not 0.0 <= pc2_value <= 0.5:
        raise ValueError(f"pc2_proj: pc2_value must be in [0, 0.5], got {pc2_value!r}")
    return float(pc2_value * (t_seconds / t0_seconds) ** nu)


# ----------------------------------------------------------------------------------------------------
# MAC error
# ----------------------------------------------------------------------------------------------------


def _snr_from_sums(sig: float, err: float) -> float:
    if err == 0.0:
        return math.inf
    if sig == 0.0:
        return -math.inf
    return 10.0 * math.log10(sig / err)


def snr_db(reference: ArrayLike, measured: ArrayLike) -> float:
    """Signal-to-noise ratio in dB: ``10·log10(Σ ref² / Σ (measured − ref)²)``.

    Returns ``inf`` when the two are identical and ``-inf`` when the reference is all zero but the measurement
    is not. Shapes must match.
    """
    ref, meas = _pair(reference, measured, "snr_db", "reference", "measured")
    return _snr_from_sums(float(np.dot(ref, ref)), float(np.dot(meas - ref, meas - ref)))


@dataclass(frozen=True)
class MacErrorStats:
    """Error statistics of dot-product (MAC) outputs against their ideal values (output units).

    Attributes:
        n: number of output values compared.
        snr_db: ``10·log10(Σref² / Σerr²)`` in dB (inf when exact).
        rmse: root-mean-square error.
        rel_rmse: ``rmse / rms(ref)`` (inf when the reference is all zero and the error is not).
        mean_error: mean signed error (bias).
        max_abs_error: largest absolute error.
        gain: least-squares slope of measured vs reference through the origin, ``Σ ref·meas / Σ ref²``
            (a global attenuation, e.g. from parasitics, shows up as gain < 1).
    """

    n: int
    snr_db: float
    rmse: float
    rel_rmse: float
    mean_error: float
    max_abs_error: float
    gain: float


class _MacAccumulator:
    """Streams sums over batches so that no layer output needs to be kept.

    The sums (float64) stay on the device of the outputs as 0-dim tensors; :meth:`stats` reads them to the host
    once (no host read per batch, which on a GPU would stall the stream).
    """

    def __init__(self) -> None:
        self.n = 0
        self.sums: torch.Tensor | None = None  # signal, error energy, error sum, cross term, max |error|

    def add(self, ref: torch.Tensor, meas: torch.Tensor) -> None:
        r = ref.detach().to(torch.float64).reshape(-1)
        m = meas.detach().to(torch.float64).reshape(-1)
        e = m - r
        self.n += int(r.numel())
        zero = torch.zeros((), dtype=torch.float64, device=r.device)
        peak = e.abs().max() if e.numel() else zero
        step = torch.stack([torch.dot(r, r), torch.dot(e, e), e.sum(), torch.dot(r, m), peak])
        if self.sums is None:
            self.sums = step
        else:
            self.sums = torch.cat([self.sums[:4] + step[:4], torch.maximum(self.sums[4:], step[4:])])

    def stats(self) -> MacErrorStats:
        if self.n == 0 or self.sums is None:
            raise ValueError("mac_error_stats: no values to compare")
        sig, err, err_sum, cross, max_abs = self.sums.tolist()  # the one host read
        rmse = math.sqrt(err / self.n)
        rms_ref = math.sqrt(sig / self.n)
        rel = rmse / rms_ref if rms_ref > 0 else (0.0 if rmse == 0 else math.inf)
        gain = cross / sig if sig > 0 else math.nan
        return MacErrorStats(
            n=self.n,
            snr_db=_snr_from_sums(sig, err),
            rmse=rmse,
            rel_rmse=rel,
            mean_error=err_sum / self.n,
            max_abs_error=max_abs,
            gain=gain,
        )


def mac_error_stats(reference: ArrayLike, measured: ArrayLike) -> MacErrorStats:
    """Error statistics (:class:`MacErrorStats`) of ``measured`` MAC outputs against ``reference``."""
    ref, meas = _pair(reference, measured, "mac_error_stats", "reference", "measured")
    acc = _MacAccumulator()
    acc.add(torch.from_numpy(ref), torch.from_numpy(meas))
    return acc.stats()


# ----------------------------------------------------------------------------------------------------
# Per-layer distortion
# ----------------------------------------------------------------------------------------------------


def analog_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules with a tensor ``weight``, a callable ``effective_weight()`` and a ``layer_name``."""
    found: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if (
            isinstance(getattr(m, "weight", None), torch.Tensor)
            and callable(getattr(m, "effective_weight", None))
            and hasattr(m, "layer_name")
        ):
            found.append((str(getattr(m, "layer_name", None) or name), m))
    return found


def _ideal_output(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The ideal digital output of an analog layer for input ``x`` (ideal weights, exact arithmetic)."""
    ideal_forward = getattr(module, "ideal_forward", None)
    if callable(ideal_forward):
        out = ideal_forward(x)
        assert isinstance(out, torch.Tensor)
        return out
    weight = module.weight
    bias = getattr(module, "bias", None)
    assert isinstance(weight, torch.Tensor)
    if isinstance(module, nn.modules.conv._ConvNd):
        return module._conv_forward(x, weight, bias)  # type: ignore[operator]
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    convs = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}
    if weight.dim() not in convs:
        raise ValueError(
            f"layer_distortion: cannot compute the ideal output of {type(module).__name__} with a "
            f"{weight.dim()}-D weight; give it an ideal_forward(x) method"
        )
    return convs[weight.dim()](
        x,
        weight,
        bias,
        stride=getattr(module, "stride", 1),
        padding=getattr(module, "padding", 0),
        dilation=getattr(module, "dilation", 1),
        groups=getattr(module, "groups", 1),
    )


@dataclass
class LayerDistortion:
    """Distortion of one analog layer.

    Attributes:
        layer_name: the analog layer's ``layer_name``.
        module_type: the module's class name.
        weight_shape: shape of the weight tensor.
        num_weights: number of weights.
        pc2: PC2 of (weight, effective_weight()).
        mac: MAC error statistics of the layer outputs over the calibration inputs (``None`` without them).
        scatter: a random subsample (≤ 20k points) of (w_ideal, w_ni) for
            :func:`xbarlab.reports.plots.plot_weight_scatter`.
    """

    layer_name: str
    module_type: str
    weight_shape: tuple[int, ...]
    num_weights: int
    pc2: float
    mac: MacErrorStats | None = None
    scatter: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    @property
    def snr_db(self) -> float | None:
        """MAC SNR in dB, or ``None`` without calibration inputs."""
        return None if self.mac is None else self.mac.snr_db

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (without the scatter sample)."""
        d = asdict(self)
        d.pop("scatter", None)
        d["weight_shape"] = list(self.weight_shape)
        d["snr_db"] = self.snr_db
        return d


def _subsample(x: np.ndarray, y: np.ndarray, max_points: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if x.size <= max_points:
        return x, y
    idx = np.random.default_rng(seed).choice(x.size, size=max_points, replace=False)
    return x[idx], y[idx]


def _iter_inputs(calib: Any) -> Iterable[torch.Tensor]:
    if isinstance(calib, torch.Tensor):
        yield calib
        return
    for batch in calib:
        if isinstance(batch, torch.Tensor):
            yield batch
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
            yield batch[0]
        else:
            raise TypeError(
                "layer_distortion: calib_batches must be a tensor or an iterable of tensors or (x, y) "
                "batches; "
                f"got an item of type {type(batch).__name__}"
            )


def layer_distortion(
    model: nn.Module,
    calib_batches: Any = None,
    *,
    device: torch.device | str | None = None,
    keep_scatter: bool = True,
    max_scatter_points: int = MAX_SCATTER_POINTS,
    seed: int = 0,
) -> list[LayerDistortion]:
    """PC2 and (optionally) MAC SNR of every analog layer of ``model``.

    For each analog layer (duck-typed, see :func:`analog_layers`) PC2 is computed from ``weight`` and
    ``effective_weight()``. When ``calib_batches`` is given (a tensor, or an iterable of tensors or ``(x, y)``
    batches), the model is run in eval mode under ``torch.no_grad()`` with forward hooks capturing each analog
    layer's input and output; the output is compared with the ideal digital output for the *same* input
    (``module.ideal_forward(x)`` when the layer provides it, else ``conv/linear`` with the ideal ``weight``
    and ``bias``), so the SNR isolates that layer's MAC error. Sums are streamed over batches.

    Returns one :class:`LayerDistortion` per analog layer, in module order. ``training`` flags are restored.
    """
    layers = analog_layers(model)
    if not layers:
        raise ValueError(
            "layer_distortion: the model has no analog layer (modules with weight, effective_weight() and "
            "layer_name); convert it first"
        )
    records: list[LayerDistortion] = []
    for i, (name, m) in enumerate(layers):
        w = m.weight
        assert isinstance(w, torch.Tensor)
        with torch.no_grad():
            w_ni = m.effective_weight()  # type: ignore[operator]
        if not isinstance(w_ni, torch.Tensor) or tuple(w_ni.shape) != tuple(w.shape):
            shape = tuple(w_ni.shape) if isinstance(w_ni, torch.Tensor) else type(w_ni).__name__
            raise ValueError(
                f"layer_distortion: layer {name!r}: effective_weight() returned {shape}, "
                f"expected a tensor of the weight's shape {tuple(w.shape)}"
            )
        scatter = None
        if keep_scatter:
            scatter = _subsample(_as_f64(w, "weight"), _as_f64(w_ni, "effective_weight"), max_scatter_points, seed + i)
        records.append(
            LayerDistortion(
                layer_name=name,
                module_type=type(m).__name__,
                weight_shape=tuple(w.shape),
                num_weights=int(w.numel()),
                pc2=pc2(w, w_ni),
                scatter=scatter,
            )
        )
    if calib_batches is None:
        return records
    accs = [_MacAccumulator() for _ in layers]

    def make_hook(k: int) -> Any:
        def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            x = inputs[0]
            accs[k].add(_ideal_output(mod, x), output)

        return hook

    handles = [m.register_forward_hook(make_hook(k)) for k, (_, m) in enumerate(layers)]
    training = [(mod, mod.training) for mod in model.modules()]
    dev = device
    if dev is None:
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        model.eval()
        with torch.no_grad():
            for x in _iter_inputs(calib_batches):
                model(x.to(dev))
    finally:
        for h in handles:
            h.remove()
        for mod, flag in training:
            mod.training = flag
    for rec, acc in zip(records, accs, strict=True):
        rec.mac = acc.stats() if acc.n else None
    return records
