"""Named hardware presets.

P1 (Bhattacharjee et al., GLSVLSI 2023), Table 1: FeFET, PCM-i, PCM-ii and RRAM, 8-bit weights, 8-bit inputs,
64×64 crossbars, the classifier kept digital. Read noise follows papers.md §1.10: σ relative to the programmed
conductance for FeFET and RRAM, σ(G) = 0.03·G + 0.13 µS for PCM, applied once per weight: one differential device
pair holds the whole 8-bit weight (``noise_granularity: weight``, ``bits_per_cell: 8``), the choice that reproduces
P1's PC2 values (papers.md §1.11). P1 describes 4-bit cells (two slices per weight); that is simulated with
``weights.noise_granularity: slice, weights.bits_per_cell: 4`` (as ``rram-ir`` does), which perturbs each slice.
Drift uses Table 1's ν with t0 = 1 s; a chip is read at t0 until :func:`xbarlab.drift` moves it.

``pcm-nandakumar`` is aihwkit's PCM statistical model (Nandakumar et al.; peers.md §3.1): g_max 25 µS,
g_min 0, conductance-dependent programming noise, drift ν(g) with t0 = 20 s and accumulated 1/f read noise.
"""

from __future__ import annotations

from typing import Any

from xbarlab.hardware import CLASSIFIER_TOKEN, ConfigError, HardwareConfig

P1_PARASITICS: dict[str, Any] = {
    "enabled": True,
    "r_driver_ohm": 1000.0,
    "r_wire_row_ohm": 5.0,
    "r_wire_col_ohm": 10.0,
    "r_sense_ohm": 1000.0,
}
"""P1's parasitic resistances (§1.3 of papers.md): driver 1 kΩ, row wire 5 Ω, column wire 10 Ω, sense 1 kΩ."""


def _p1_device(name: str, r_on_ohm: float, on_off: float, nu: float, read_noise: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "crossbar": {"rows": 64, "cols": 64},
        "weights": {
            "bits": 8,
            "bits_per_cell": 8,
            "mapping": "differential",
            "quantize": True,
            "noise_granularity": "weight",
        },
        "device": {"name": name, "r_on_ohm": r_on_ohm, "on_off_ratio": on_off},
        "read_noise": {"mode": "frozen", **read_noise},
        "drift": {"kind": "power_law", "nu_mean": nu, "nu_std": 0.0, "t0_s": 1.0},
        "dac": {"bits": 8, "range_mode": "max"},
        "keep_digital": [CLASSIFIER_TOKEN],
    }


_PCM_P1_NOISE = {"kind": "relative_to_G", "sigma": 0.03, "offset_us": 0.13}

_PRESETS: dict[str, dict[str, Any]] = {
    "ideal": {
        "name": "ideal",
        "weights": {"quantize": False},
        "device": {"name": "ideal", "r_on_ohm": 50e3, "on_off_ratio": 10.0},
    },
    "fefet": _p1_device("fefet", 222.22e3, 100.0, 0.1, {"kind": "relative_to_G", "sigma": 0.05}),
    "pcm-i": _p1_device("pcm-i", 250e3, 40.0, 0.04, _PCM_P1_NOISE),
    "pcm-ii": _p1_device("pcm-ii", 125e3, 80.0, 0.04, _PCM_P1_NOISE),
    "rram": _p1_device("rram", 50e3, 10.0, 0.04, {"kind": "relative_to_G", "sigma": 0.1}),
    "rram-ir": {
        **_p1_device("rram-ir", 50e3, 10.0, 0.04, {"kind": "none"}),
        "weights": {"bits": 8, "bits_per_cell": 4, "mapping": "differential", "noise_granularity": "slice"},
        "parasitics": P1_PARASITICS,
    },
    "pcm-nandakumar": {
        "name": "pcm-nandakumar",
        "crossbar": {"rows": 64, "cols": 64},
        "weights": {"bits": 8, "bits_per_cell": 8, "mapping": "differential", "noise_granularity": "weight"},
        "device": {"name": "pcm-nandakumar", "r_on_ohm": 40e3, "on_off_ratio": float("inf")},
        "programming": {"kind": "pcm_nandakumar", "sigma": 1.0},
        "read_noise": {"kind": "pcm_1f", "sigma": 1.0, "mode": "frozen"},
        "drift": {"kind": "pcm_nandakumar", "t0_s": 20.0, "scale": 1.0},
    },
}

_DESCRIPTIONS: dict[str, str] = {
    "ideal": "No non-idealities, no quantisation: outputs equal the digital model.",
    "fefet": "P1 Table 1 FeFET: R_on 222.22 kΩ, ON/OFF 100, ν 0.1, read noise σ 0.05·G.",
    "pcm-i": "P1 Table 1 PCM-i: R_on 250 kΩ, ON/OFF 40, ν 0.04, σ(G) = 0.03·G + 0.13 µS.",
    "pcm-ii": "P1 Table 1 PCM-ii: R_on 125 kΩ, ON/OFF 80, ν 0.04, σ(G) = 0.03·G + 0.13 µS.",
    "rram": "P1 Table 1 RRAM: R_on 50 kΩ, ON/OFF 10, ν 0.04, read noise σ 0.1·G.",
    "rram-ir": "P1 RRAM with P1's parasitics (1 kΩ driver/sense, 5/10 Ω wires), no read noise (R4).",
    "pcm-nandakumar": "aihwkit PCM statistical model: g_max 25 µS, prog. noise σ(g), drift ν(g), 1/f read noise.",
}


def list_presets() -> dict[str, str]:
    """Preset names with a one-line description."""
    return dict(_DESCRIPTIONS)


def preset_dict(name: str) -> dict[str, Any]:
    """The raw preset settings (a partial hardware dict)."""
    if name not in _PRESETS:
        raise ConfigError("preset", name, "one of " + ", ".join(sorted(_PRESETS)))
    return _deepcopy(_PRESETS[name])


def load_preset(name: str) -> HardwareConfig:
    """A validated :class:`HardwareConfig` for a named preset."""
    return HardwareConfig.from_dict(preset_dict(name))


def _deepcopy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value
