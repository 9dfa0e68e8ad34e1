"""xbarlab: analog in-memory-computing crossbar simulation for PyTorch models.

Typical use::

    import xbarlab
    hw = xbarlab.load_preset("rram")
    chip = xbarlab.convert(model, hw)            # analog layers keep the original weights
    xbarlab.program(chip, seed=0)                # sample one chip instance (static non-idealities)
    xbarlab.calibrate(chip, calibration_loader)  # DAC/ADC ranges, when converters are enabled
    logits = chip(x)

The public names are imported lazily so that ``import xbarlab`` stays fast for the CLI.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    "ConfigError": "xbarlab.hardware",
    "HardwareConfig": "xbarlab.hardware",
    "load_preset": "xbarlab.presets",
    "list_presets": "xbarlab.presets",
    "convert": "xbarlab.conversion",
    "ConversionReport": "xbarlab.conversion",
    "program": "xbarlab.chip",
    "drift": "xbarlab.chip",
    "calibrate": "xbarlab.chip",
    "verify_coverage": "xbarlab.coverage",
    "CoverageError": "xbarlab.coverage",
    "ChipFileError": "xbarlab.chipfile",
    "ConversionError": "xbarlab.conversion",
    "ConverterRangeError": "xbarlab.converters",
    "save_chip": "xbarlab.chipfile",
    "load_chip": "xbarlab.chipfile",
    "evaluate_chips": "xbarlab.evaluation",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'xbarlab' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
