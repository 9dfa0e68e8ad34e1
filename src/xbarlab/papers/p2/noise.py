"""P2's noise model on crossbars: additive Gaussian weight noise σ_l = η·max|W_l| per layer, one frozen draw per chip.

P2 does not state its noise model; xbarlab uses the default of docs/papers.md §2.5. On xbarlab crossbars
(:func:`p2_noise_hardware`) it is the ``ideal`` preset with unquantised weights on one differential device pair
with ON/OFF ratio 2 (G_on = 20 µS, G_off = 10 µS, ΔG = 10 µS) and frozen read noise relative to G_on with
``sigma = η/(2√2)``: each device carries σ_G = sigma·G_on = η·ΔG/√2 µS, so the pair's difference has σ = η·ΔG µS,
i.e. σ_w = η·max|W| in weight units. The idle device sits at 10 µS, ≥ 7σ_G above 0 µS up to η = 0.2, so the
clamp at 0 µS never biases the noise. This is the encoding of the ``p2-noise-aware-bn``, ``p2-segmentation`` and
``p2-detection`` sweeps; :func:`measured_noise_ratio` checks it numerically.
"""

from __future__ import annotations

import math

from torch import nn

from xbarlab.hardware import HardwareConfig
from xbarlab.papers.p2.trial import weight_noise_rel_std
from xbarlab.presets import load_preset

__all__ = ["ETA_MAX", "check_eta", "measured_noise_ratio", "p2_noise_hardware"]

ETA_MAX = 0.3
"""Largest noise level η accepted: beyond it the idle device (10 µS) is < 5σ_G above 0 µS and the clamp biases."""


def check_eta(eta: float, *, positive: bool = False) -> float:
    """``eta`` as a float, or ``ValueError`` naming the value and the allowed range ([0, 0.3]; (0, 0.3] if positive)."""
    low_ok = eta > 0 if positive else eta >= 0
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not (low_ok and eta <= ETA_MAX):
        allowed = f"a number in {'(' if positive else '['}0, {ETA_MAX}]"
        raise ValueError(f"eta: invalid value {eta!r}; allowed: {allowed}")
    return float(eta)


def p2_noise_hardware(eta: float) -> HardwareConfig:
    """Crossbar config giving additive Gaussian weight noise σ = η·max|W| per layer (see the module docstring)."""
    eta = check_eta(eta)
    kind = "relative_to_G_on" if eta > 0 else "none"
    return load_preset("ideal").override(
        {
            "name": f"p2-gaussian-eta{eta:g}",
            "weights.quantize": False,
            "device.on_off_ratio": 2.0,
            "read_noise.kind": kind,
            "read_noise.sigma": eta / (2.0 * math.sqrt(2.0)),
            "read_noise.mode": "frozen",
        }
    )


def measured_noise_ratio(chip: nn.Module, eta: float) -> float:
    """Pooled std of (W_eff − W)/(max|W_l|) over all analog layers, divided by η (≈ 1 when the encoding holds)."""
    return weight_noise_rel_std(chip) / eta if eta > 0 else 0.0
