"""Accuracy and Monte-Carlo evaluation over chip instances.

Chip k of an evaluation with seed s is programmed with seed s + k, so a single chip is easy to reproduce.
Each chip runs through the per-chip runner :func:`xbarlab.runner.run_chip` (a fresh copy of the converted
model, seeded per chip as in a sweep trial): mitigations on one chip never leak into the next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xbarlab.chip import MAX_SEED, check_seed
from xbarlab.conversion import convert
from xbarlab.coverage import is_verified, verify_coverage
from xbarlab.data import make_loader
from xbarlab.hardware import HardwareConfig
from xbarlab.layers import AnalogLayer
from xbarlab.progress import progress_bar
from xbarlab.runner import Calibration, RegisteredMitigation, run_chip
from xbarlab.seeding import derive_seed
from xbarlab.stats import Summary, summarize


@torch.no_grad()
def accuracy(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
) -> float:
    """Top-1 accuracy in % of ``model`` (in eval mode, restored afterwards) over ``loader``.

    An analog model not verified by :func:`xbarlab.calibrate` is verified on the first batch
    (:func:`xbarlab.coverage.verify_coverage`: one extra forward; a layer called analog that does not run on the chip
    raises :class:`xbarlab.coverage.CoverageError`)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)  # counted on the device, read once at the end
    total = 0
    verify = any(isinstance(m, AnalogLayer) for m in model.modules()) and not is_verified(model)
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x = x.to(device, non_blocking=True)  # overlaps the copy with pinned CUDA batches
            logits = verify_coverage(model, x) if verify and i == 0 else model(x)
            correct += (logits.argmax(1) == y.to(device, non_blocking=True)).sum()
            total += int(y.numel())  # a shape, not a device read
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("loader: yielded no samples")
    return 100.0 * int(correct) / total


@dataclass(frozen=True)
class ChipResult:
    """One chip instance: its seed, accuracy (%) and whatever the mitigation reported."""

    chip: int
    seed: int
    accuracy: float
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MonteCarloResult:
    """Accuracies over chip instances with their summary."""

    hardware: str
    chips: tuple[ChipResult, ...]
    summary: Summary
    wall_time_s: float

    @property
    def accuracies(self) -> list[float]:
        return [c.accuracy for c in self.chips]

    def to_dict(self) -> dict[str, Any]:
        s = self.summary
        return {
            "hardware": self.hardware,
            "accuracies": self.accuracies,
            "seeds": [c.seed for c in self.chips],
            "mean": s.mean,
            "std": s.std,
            "ci95_low": s.ci95_low,
            "ci95_high": s.ci95_high,
            "ci95_bounded": s.bounded,
            "n": s.n,
            "wall_time_s": self.wall_time_s,
            "info": [c.info for c in self.chips],
        }


def evaluate_chips(
    model: nn.Module,
    hw: HardwareConfig | None,
    test_loader: Iterable[Any],
    *,
    chips: int = 5,
    seed: int = 0,
    calib_loader: Calibration | None = None,
    calib_batches: int = 4,
    t_seconds: float | None = None,
    mitigation: RegisteredMitigation | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    max_batches: int | None = None,
) -> MonteCarloResult:
    """Program ``chips`` instances, optionally drift / calibrate / mitigate each, and test it.

    ``model`` is a digital model (converted with ``hw``) or an already converted one (``hw`` None).
    ``calib_loader`` is either one iterable re-read for every chip, or a function of the chip seed returning the
    chip's calibration batches (e.g. :func:`seeded_calibration`): then chip seed s is calibrated on the same
    data whatever ``seed`` and ``chips`` the evaluation was started with. Each chip runs through
    :func:`xbarlab.runner.run_chip` (``mitigation``: a registered method with its options and context).
    """
    if chips < 1:
        raise ValueError(f"chips: invalid value {chips}; allowed: >= 1")
    if check_seed(seed) > MAX_SEED - (chips - 1):
        raise ValueError(f"seed: invalid value {seed!r}; allowed: an integer in [0, 2**63 - {chips}] for {chips} chips")
    if hw is not None:
        base = convert(model, hw)
    else:
        if not any(isinstance(m, AnalogLayer) for m in model.modules()):
            raise ValueError("hw: required when model is not converted yet")
        base = model
    base = base.to(device)
    base_hw = getattr(base, "xbarlab_hw", None)
    hw_name: str = base_hw.name if isinstance(base_hw, HardwareConfig) else "converted"
    results: list[ChipResult] = []
    start = time.perf_counter()

    def metric(chip: nn.Module) -> float:
        return accuracy(chip, test_loader, device=device, max_batches=max_batches)

    with progress_bar(progress, chips, f"chips ({hw_name})") as bar:
        for k in range(chips):
            # chip k: a fresh copy of the base, seeded per chip as in a sweep trial (xbarlab.runner), so chip
            # seed s gives the same result here, in `xbarlab mitigate` and in a sweep
            run = run_chip(
                base,
                None,
                metric,
                seed=seed + k,
                t_seconds=t_seconds,
                calibration=calib_loader,
                calib_batches=calib_batches,
                mitigation=mitigation,
                device=device,
            )
            results.append(ChipResult(k, seed + k, run.value, dict(run.info)))
            bar.advance(f"last acc {run.value:.2f}%")
    return MonteCarloResult(
        hw_name,
        tuple(results),
        summarize([r.accuracy for r in results], bounds=(0.0, 100.0)),  # accuracy in %: CI within [0, 100]
        time.perf_counter() - start,
    )


def seeded_calibration(dataset: Any, batch_size: int) -> Callable[[int], Iterable[Any]]:
    """Calibration batches of a chip as a function of its seed: ``dataset`` shuffled with a seed derived from
    (chip seed, "calibration") — the same choice as a sweep trial (:mod:`xbarlab.experiments.trial`)."""

    def batches(chip_seed: int) -> Iterable[Any]:
        return make_loader(dataset, batch_size, shuffle=True, seed=derive_seed(chip_seed, "calibration"))

    return batches
