"""Quantisation-setting search for accuracy under variation and total ADC power (CorrectNet+, docs/papers.md §3.7).

Search space: one global ``bits_per_cell`` (cells of 1, 2 or 4 bits: fewer slices per weight means fewer ADC
conversions but more levels per device) and per-layer ADC resolution ``B_l ∈ {4, …, 8}``; the weight precision
is fixed (``weight_bits``, default 8) unless several values are given.

Algorithm (greedy bit-lowering, the default of docs/papers.md §3.7), for every (weight bits, bits per cell):

1. **uniform descent**: evaluate uniform ADC resolutions from the highest down and keep the lowest whose
   accuracy is within ``tolerance`` points of the reference accuracy (a cheap coarse step: L-fold fewer
   evaluations than per-layer moves);
2. **per-layer lowering**: from there, try lowering each layer by one bit; among the moves that keep the
   accuracy within ``tolerance`` of the reference, take the one that saves the most ADC energy; repeat until no
   move qualifies (or ``max_evaluations`` is reached).

The reference is uniform 8-bit ADCs at the reference ``bits_per_cell`` (default 2, CorrectNet+/NeFT; the P3
pipeline passes its hardware's own, which is 2 unless ``hardware_overrides`` change it). Every evaluated
point is kept; the Pareto front is over (accuracy ↑, ADC energy ↓). The reported saving is at **equal accuracy**:
the lowest-energy evaluated point whose accuracy is ≥ reference − ``tolerance``.

``evaluate(config) -> accuracy`` and ``energy(config) -> pJ`` are pluggable (the P3 pipeline measures accuracy
over chips on held-out images and energy with :mod:`xbarlab.adc_power`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xbarlab.hardware import HardwareConfig

__all__ = [
    "QuantConfig",
    "QuantPoint",
    "QuantSearchResult",
    "pareto_front",
    "quant_search",
]


@dataclass(frozen=True)
class QuantConfig:
    """A quantisation setting: weight bits, bits per cell and per-layer ADC bits (sorted (layer, bits) pairs)."""

    bits_per_cell: int
    adc_bits: tuple[tuple[str, int], ...]
    weight_bits: int = 8

    def __post_init__(self) -> None:
        if isinstance(self.weight_bits, bool) or not isinstance(self.weight_bits, int) or self.weight_bits < 1:
            raise ValueError(f"weight_bits: invalid value {self.weight_bits!r}; allowed: an integer >= 1")
        if (
            isinstance(self.bits_per_cell, bool)
            or not isinstance(self.bits_per_cell, int)
            or not 1 <= self.bits_per_cell <= self.weight_bits
        ):
            raise ValueError(
                f"bits_per_cell: invalid value {self.bits_per_cell!r}; allowed: an integer in [1, {self.weight_bits}]"
            )
        for name, bits in self.adc_bits:
            if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
                raise ValueError(f"adc_bits[{name}]: invalid value {bits!r}; allowed: an integer in [2, 16]")

    @classmethod
    def uniform(cls, layers: Sequence[str], adc_bits: int, bits_per_cell: int, weight_bits: int = 8) -> QuantConfig:
        """Every layer at ``adc_bits``."""
        return cls(bits_per_cell, tuple((n, adc_bits) for n in layers), weight_bits)

    @property
    def bits(self) -> dict[str, int]:
        return dict(self.adc_bits)

    def with_bits(self, layer: str, bits: int) -> QuantConfig:
        """A copy with ``layer`` at ``bits``."""
        return QuantConfig(
            self.bits_per_cell, tuple((n, bits if n == layer else b) for n, b in self.adc_bits), self.weight_bits
        )

    def hardware(self, base: HardwareConfig) -> HardwareConfig:
        """``base`` with these weight bits / bits per cell and one ADC override per layer (appended last)."""
        data = base.to_dict()
        data["weights"] = {**data["weights"], "bits": self.weight_bits, "bits_per_cell": self.bits_per_cell}
        layers = list(data.get("layers", []))
        for name, bits in self.adc_bits:
            layers.append({"pattern": name, "settings": {"adc": {"bits": bits}}})
        data["layers"] = layers
        return HardwareConfig.from_dict(data)

    def label(self) -> str:
        """Compact text, e.g. ``w8 c2 adc[8,6,6,5]``."""
        return f"w{self.weight_bits} c{self.bits_per_cell} adc[{','.join(str(b) for _, b in self.adc_bits)}]"

    def as_dict(self) -> dict[str, Any]:
        return {"weight_bits": self.weight_bits, "bits_per_cell": self.bits_per_cell, "adc_bits": self.bits}


@dataclass(frozen=True)
class QuantPoint:
    """One evaluated configuration: accuracy (%), ADC energy per inference (pJ) and energy relative to the
    reference."""

    config: QuantConfig
    accuracy: float
    energy_pj: float
    relative_energy: float
    stage: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.config.as_dict(),
            "label": self.config.label(),
            "accuracy": self.accuracy,
            "energy_pj": self.energy_pj,
            "relative_energy": self.relative_energy,
            "stage": self.stage,
        }


def pareto_front(points: Sequence[QuantPoint]) -> list[QuantPoint]:
    """Points not dominated in (accuracy ↑, energy ↓), sorted by energy."""
    front: list[QuantPoint] = []
    for p in points:
        dominated = any(
            (q.accuracy >= p.accuracy and q.energy_pj <= p.energy_pj)
            and (q.accuracy > p.accuracy or q.energy_pj < p.energy_pj)
            for q in points
        )
        if not dominated and not any(
            q.config == p.config or (q.accuracy == p.accuracy and q.energy_pj == p.energy_pj) for q in front
        ):
            front.append(p)
    return sorted(front, key=lambda q: (q.energy_pj, -q.accuracy))


@dataclass
class QuantSearchResult:
    """All evaluated points, the Pareto front, the reference and the best point at equal accuracy."""

    reference: QuantPoint
    points: list[QuantPoint]
    front: list[QuantPoint]
    best: QuantPoint
    tolerance: float
    evaluations: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def saving_pct(self) -> float:
        """ADC energy saved by :attr:`best` against the reference, in %."""
        return 100.0 * (1.0 - self.best.relative_energy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference.as_dict(),
            "best": self.best.as_dict(),
            "saving_pct": self.saving_pct,
            "tolerance": self.tolerance,
            "evaluations": self.evaluations,
            "front": [p.as_dict() for p in self.front],
            "points": [p.as_dict() for p in self.points],
            "info": self.info,
        }


def quant_search(
    layers: Sequence[str],
    evaluate: Callable[[QuantConfig], float],
    energy: Callable[[QuantConfig], float],
    *,
    bits_per_cell_options: Sequence[int] = (1, 2, 4),
    adc_bits_options: Sequence[int] = (4, 5, 6, 7, 8),
    weight_bits_options: Sequence[int] = (8,),
    reference_bits_per_cell: int = 2,
    reference_adc_bits: int = 8,
    tolerance: float = 1.0,
    max_evaluations: int | None = None,
    log: Callable[[str], None] | None = None,
) -> QuantSearchResult:
    """Greedy bit-lowering search (module docstring). ``evaluate`` gives accuracy in %, ``energy`` pJ/inference.

    Deterministic given deterministic callbacks; every configuration is evaluated at most once.
    """
    if not layers:
        raise ValueError("layers: empty; allowed: at least one analog layer name")
    if not adc_bits_options:
        raise ValueError("adc_bits_options: empty; allowed: ADC resolutions such as (4, 5, 6, 7, 8)")
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance: invalid value {tolerance!r}; allowed: a finite number >= 0 (points)")
    options = sorted(set(adc_bits_options))
    cache: dict[QuantConfig, QuantPoint] = {}
    order: list[QuantConfig] = []
    ref_energy: list[float] = []

    def point(cfg: QuantConfig, stage: str) -> QuantPoint:
        if cfg not in cache:
            if max_evaluations is not None and len(cache) >= max_evaluations:
                raise _BudgetExhausted
            acc = float(evaluate(cfg))
            e = float(energy(cfg))
            rel = e / ref_energy[0] if ref_energy and ref_energy[0] > 0 else 1.0
            cache[cfg] = QuantPoint(cfg, acc, e, rel, stage)
            order.append(cfg)
            if log is not None:
                log(f"quant {cfg.label()}: accuracy {acc:.2f} %, ADC energy {e:.1f} pJ ({100 * rel:.1f} %)")
        return cache[cfg]

    ref_cfg = QuantConfig.uniform(layers, reference_adc_bits, reference_bits_per_cell, max(weight_bits_options))
    ref_energy.append(float(energy(ref_cfg)))
    reference = point(ref_cfg, "reference")
    target = reference.accuracy - tolerance
    exhausted = False
    try:
        for wbits in sorted(set(weight_bits_options), reverse=True):
            for bpc in bits_per_cell_options:
                if bpc > wbits:
                    continue
                current = None
                for b in reversed(options):
                    p = point(QuantConfig.uniform(layers, b, bpc, wbits), "uniform")
                    if p.accuracy >= target:
                        current = p
                    else:
                        break
                while current is not None:
                    candidates = []
                    for name, b in current.config.adc_bits:
                        lower = [o for o in options if o < b]
                        if not lower:
                            continue
                        p = point(current.config.with_bits(name, lower[-1]), "per-layer")
                        if p.accuracy >= target:
                            candidates.append(p)
                    if not candidates:
                        break
                    current = min(candidates, key=lambda q: (q.energy_pj, -q.accuracy))
    except _BudgetExhausted:
        exhausted = True
    points = [cache[c] for c in order]
    eligible = [p for p in points if p.accuracy >= target]
    best = min(eligible, key=lambda q: (q.energy_pj, -q.accuracy))
    return QuantSearchResult(
        reference=reference,
        points=points,
        front=pareto_front(points),
        best=best,
        tolerance=tolerance,
        evaluations=len(points),
        info={
            "bits_per_cell_options": list(bits_per_cell_options),
            "adc_bits_options": options,
            "weight_bits_options": list(weight_bits_options),
            "budget_exhausted": exhausted,
            "max_evaluations": max_evaluations,
        },
    )


class _BudgetExhausted(Exception):
    pass


def energy_function(
    report_fn: Callable[[HardwareConfig, Mapping[str, int] | None], float], base: HardwareConfig
) -> Callable[[QuantConfig], float]:
    """Adapter: ``config ↦ report_fn(config.hardware(base), None)`` (e.g. total pJ of an ADC energy report)."""

    def energy(cfg: QuantConfig) -> float:
        return report_fn(cfg.hardware(base), None)

    return energy
