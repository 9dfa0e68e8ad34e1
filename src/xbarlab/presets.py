"""Named hardware presets: the catalogue of the YAML files in ``xbarlab/assets/presets/``.

Each preset is one data file, ``NAME.yaml`` with a one-line ``description`` and a ``hardware`` mapping (a partial
hardware description, validated by :class:`xbarlab.hardware.HardwareConfig` like any hardware file); ``index.yaml``
lists the names in the order ``xbarlab presets`` shows them. The files are read by :mod:`xbarlab.hardware`
(which also resolves ``preset: NAME`` in a hardware mapping); this module is the public API.

P1 (Bhattacharjee et al., GLSVLSI 2023), Table 1: FeFET, PCM-i, PCM-ii and RRAM, 8-bit weights, 8-bit inputs,
64×64 crossbars, the classifier kept digital. Read noise follows docs/papers.md §1.10: σ relative to the programmed
conductance for FeFET and RRAM, σ(G) = 0.03·G + 0.13 µS for PCM, applied once per weight: one differential device
pair holds the whole 8-bit weight (``noise_granularity: weight``, ``bits_per_cell: 8``), the choice that reproduces
P1's PC2 values (docs/papers.md §1.11). P1 describes 4-bit cells (two slices per weight); that is simulated with
``weights.noise_granularity: slice, weights.bits_per_cell: 4`` (as ``rram-ir`` does), which perturbs each slice.
Drift uses Table 1's ν with t0 = 1 s; a chip is read at t0 until :func:`xbarlab.drift` moves it. ``rram-ir`` adds
P1's parasitic resistances (docs/papers.md §1.3: driver 1 kΩ, row wire 5 Ω, column wire 10 Ω, sense 1 kΩ).

``pcm-nandakumar`` is aihwkit's PCM statistical model (Nandakumar et al.; peers.md §3.1): g_max 25 µS,
g_min 0, conductance-dependent programming noise, drift ν(g) with t0 = 20 s and accumulated 1/f read noise.
"""

from __future__ import annotations

from typing import Any

from xbarlab.hardware import PRESET_DIR, HardwareConfig, preset_config, preset_entry, preset_names

__all__ = ["PRESET_DIR", "list_presets", "load_preset", "preset_dict"]


def list_presets() -> dict[str, str]:
    """Preset names (in ``index.yaml`` order) with their one-line description."""
    return {name: preset_entry(name)[0] for name in preset_names()}


def preset_dict(name: str) -> dict[str, Any]:
    """The raw preset settings (a partial hardware dict, a fresh copy); unknown names raise ``ConfigError``."""
    return preset_entry(name)[1]


def load_preset(name: str) -> HardwareConfig:
    """A validated :class:`HardwareConfig` for a named preset."""
    return preset_config(name)
