"""The per-chip runner: program → drift → calibrate → probe → mitigate → metric on one chip instance.

:func:`run_chip` is the one loop body behind :func:`xbarlab.evaluation.evaluate_chips` (``xbarlab evaluate``,
``xbarlab mitigate``, P3), the sweep's accuracy trial (:func:`xbarlab.experiments.trial.accuracy_trial`, hence
the demo) and P2's noise and drift experiments. Chip seed s is programmed with seed s, and the global torch RNG
(data augmentation and dropout of mitigations) is seeded with ``derive_seed(s, "trial")`` inside a forked RNG
state (restored afterwards): chip seed s gives the same numbers in every caller.

Each chip starts from its own model: the digital model converted with ``hw``, or a deep copy of an already
converted base, so that a mitigation on one chip never leaks into the next.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xbarlab.chip import calibrate, drift, needs_calibration, program
from xbarlab.conversion import convert
from xbarlab.hardware import HardwareConfig
from xbarlab.layers import AnalogLayer
from xbarlab.mitigation.registry import RegisteredMitigation as RegisteredMitigation  # re-exported
from xbarlab.seeding import derive_seed
from xbarlab.timing import StageClock

__all__ = ["Calibration", "ChipRun", "Metric", "RegisteredMitigation", "run_chip", "unpack_outcome"]

Metric = Callable[[nn.Module], Any]
"""The measurement of a prepared chip: e.g. top-1 accuracy (%) on a test loader, or a dict of P2 task metrics."""

Calibration = Iterable[Any] | Callable[[int], Iterable[Any]]
"""Calibration batches: one iterable re-read for every chip, or a function of the chip seed returning them
(:func:`xbarlab.evaluation.seeded_calibration`: the sweep's ``derive_seed(seed, "calibration")`` shuffle)."""


@dataclass(frozen=True)
class ChipRun:
    """One chip instance: its seed, the metric's value, the probe's and the mitigation's numbers, timings.

    ``timings`` (s): ``convert_s`` (conversion or copy of the base), ``program_s`` (programming and drift),
    ``calibrate_s``, ``probe_s`` (only with a probe), ``mitigate_s``, ``evaluate_s`` (the metric).
    """

    seed: int
    value: Any
    probe: Mapping[str, Any] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)


def unpack_outcome(outcome: Any) -> tuple[dict[str, Any], contextlib.AbstractContextManager[Any]]:
    """A mitigation's return value as (info dict, evaluation context)."""
    if outcome is None:
        return {}, contextlib.nullcontext()
    if isinstance(outcome, dict):
        return dict(outcome), contextlib.nullcontext()
    evaluation = getattr(outcome, "evaluation", None)
    return dict(getattr(outcome, "info", {}) or {}), evaluation or contextlib.nullcontext()


def _fresh_chip(model: nn.Module, hw: HardwareConfig | None, device: str | torch.device) -> nn.Module:
    if hw is not None:
        return convert(model, hw).to(device)
    if not any(isinstance(m, AnalogLayer) for m in model.modules()):
        raise ValueError("hw: required when model is not converted yet")
    return copy.deepcopy(model).to(device)


def _calibrate(
    chip: nn.Module, calibration: Calibration | None, seed: int, batches: int, verify: bool, device: Any
) -> None:
    if needs_calibration(chip):
        if calibration is None:
            raise ValueError("calib_loader: required, the hardware has DAC/ADC converters to calibrate")
        n = batches
    elif verify and calibration is not None:
        n = 1  # no converters: one batch verifies that every analog layer runs on the chip
    else:
        return
    data = calibration(seed) if callable(calibration) else calibration
    calibrate(chip, data, num_batches=n, device=device)


def run_chip(
    model: nn.Module,
    hw: HardwareConfig | None,
    metric: Metric,
    *,
    seed: int,
    t_seconds: float | None = None,
    calibration: Calibration | None = None,
    calib_batches: int = 4,
    verify: bool = False,
    probe: Callable[[nn.Module], Mapping[str, Any]] | None = None,
    mitigation: RegisteredMitigation | None = None,
    device: str | torch.device = "cpu",
) -> ChipRun:
    """Program one chip with ``seed``, optionally drift, calibrate, probe and mitigate it, then measure it.

    Args:
        model: a digital model (converted with ``hw``) or an already converted base (``hw`` None; deep-copied).
        metric: called on the prepared chip (inside the mitigation's evaluation context); its value is returned.
        seed: the chip seed (programming; the global torch RNG gets ``derive_seed(seed, "trial")``).
        t_seconds: read time since programming (s); ``None``: no drift.
        calibration: calibration batches (or a function of the chip seed); required when the chip has
            DAC/ADC converters, which are calibrated on ``calib_batches`` batches.
        verify: calibrate a chip without converters on one batch of ``calibration`` anyway (it verifies that
            every analog layer runs on the chip: :class:`xbarlab.coverage.CoverageError` otherwise).
        probe: called after calibration, before the mitigation; returns numbers for the record (e.g. PC2).
        mitigation: a registered method with its options and context (:class:`RegisteredMitigation`).
        device: torch device of the chip.
    """
    clock = StageClock(device)
    lap, timings = clock.lap, clock.timings

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "trial"))
        chip = _fresh_chip(model, hw, device)
        lap("convert_s")
        program(chip, seed)
        if t_seconds is not None:
            drift(chip, t_seconds)
        lap("program_s")
        _calibrate(chip, calibration, seed, calib_batches, verify, device)
        lap("calibrate_s")
        probed: dict[str, Any] = {}
        if probe is not None:
            probed = dict(probe(chip))
            lap("probe_s")
        outcome = mitigation.apply(chip, seed) if mitigation is not None else None
        info, context = unpack_outcome(outcome)
        lap("mitigate_s")
        with context:
            value = metric(chip)
        lap("evaluate_s")
    return ChipRun(seed, value, probed, info, timings)
