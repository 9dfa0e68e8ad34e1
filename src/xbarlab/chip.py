"""Chip lifecycle: program a chip instance, move it in time, calibrate its converters (files: :mod:`xbarlab.chipfile`).

``program(model, seed)`` samples every static non-ideality once; each layer draws from its own streams derived
from (seed, layer name, non-ideality), so the same seed gives bit-identical chips and changing one non-ideality's
parameters keeps the others' draws (common random numbers across a sweep).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from xbarlab.coverage import finish_verification, forward_counts
from xbarlab.layers import analog_layers, require_analog_layers

__all__ = ["MAX_SEED", "calibrate", "check_seed", "drift", "needs_calibration", "program"]


MAX_SEED = 2**63 - 1
"""Chip seeds are stored as int64."""


def check_seed(seed: object) -> int:
    """The seed as an int (Python or NumPy integer) in [0, 2**63 - 1], or a ValueError naming the allowed range."""
    try:
        value = operator.index(seed)  # type: ignore[arg-type]
    except TypeError:
        value = -1
    if isinstance(seed, bool) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"seed: invalid value {seed!r}; allowed: an integer in [0, 2**63 - 1]")
    return value


def program(model: nn.Module, seed: int) -> nn.Module:
    """Sample one chip instance into the analog layers of ``model`` (in place); returns ``model``."""
    value = check_seed(seed)
    for layer in require_analog_layers(model):
        layer.program(value)
    return model


def drift(model: nn.Module, t_seconds: float) -> nn.Module:
    """Read the chip at time ``t_seconds`` (s) since programming (power law: t ≥ t0; PCM: inference time ≥ 0)."""
    for layer in require_analog_layers(model):
        layer.set_time(t_seconds)
    return model


def needs_calibration(model: nn.Module) -> bool:
    """True when a DAC or ADC is enabled in some analog layer and not calibrated."""
    return any(layer.needs_calibration for layer in analog_layers(model))


def _batches(loader: Iterable[Any], num_batches: int) -> Iterable[torch.Tensor]:
    for i, batch in enumerate(loader):
        if i >= num_batches:
            break
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"loader: batch {i} is a {type(x).__name__}; allowed: a tensor or an (input, target) tuple whose "
                "first element is the model's input tensor"
            )
        yield x


def calibrate(
    model: nn.Module, loader: Iterable[Any], *, num_batches: int = 4, device: str | torch.device | None = None
) -> nn.Module:
    """Calibrate DAC input ranges, then ADC partial-sum ranges, on the programmed chip from unlabeled batches, and
    verify that every analog layer runs on the chip.

    Two passes over the first ``num_batches`` batches: the DAC pass observes ideal inputs, the ADC pass observes
    the partial sums produced with the calibrated DACs (no converter: one plain pass). Every pass counts the analog
    layers' forward calls; a layer that ran in no batch raises :class:`xbarlab.coverage.CoverageError` (fused fast
    paths, unused layers). One more forward of the first batch runs under
    :class:`xbarlab.coverage.IdealWeightGuard` (a forward using a converted layer's ideal ``weight`` functionally
    raises :class:`~xbarlab.coverage.CoverageError` naming the layer and the op). The loader is read once per
    pass. Module training flags are restored afterwards.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches: invalid value {num_batches}; allowed: >= 1")
    layers = require_analog_layers(model)
    for layer in layers:
        layer._require_programmed()
    modes = {m: m.training for m in model.modules()}
    model.eval()
    before = forward_counts(layers)
    first: torch.Tensor | None = None
    seen = 0
    try:
        stages = [(s, [la for la in layers if getattr(la.hw, s).bits is not None]) for s in ("dac", "adc")]
        stages = [(s, active) for s, active in stages if active] or [("verify", [])]
        for stage, active in stages:
            for layer in active:
                layer.start_calibration(stage)
            seen = 0
            for x in _batches(loader, num_batches):
                x = x.to(device) if device is not None else x
                first = x if first is None else first
                model(x)
                seen += 1
            if seen == 0:
                raise ValueError("loader: yielded no batch; calibration needs data")
            for layer in active:
                layer.finish_calibration()
        assert first is not None
        finish_verification(model, layers, before, first, seen)
    finally:
        for layer in layers:
            layer._observers = None
            layer._calibration_stage = None
        for module, mode in modes.items():
            module.train(mode)
    return model
