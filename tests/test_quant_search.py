"""Quantisation-setting search (CorrectNet+): greedy bit lowering, Pareto front, hardware overrides."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xbarlab
from xbarlab.layers import analog_layers
from xbarlab.papers.p3.quant_search import QuantConfig, QuantPoint, pareto_front, quant_search

pytestmark = pytest.mark.usefixtures("single_thread")


LAYERS = ("a", "b", "c")
CONVERSIONS = {"a": 1000, "b": 100, "c": 10}
# the lowest ADC bits each layer tolerates without an accuracy loss, per bits-per-cell
TOLERATED = {1: {"a": 5, "b": 6, "c": 4}, 2: {"a": 6, "b": 7, "c": 4}, 4: {"a": 8, "b": 8, "c": 8}}


def _slices(bpc: int) -> int:
    return 8 // bpc


def _energy(cfg: QuantConfig) -> float:
    return sum(CONVERSIONS[n] * _slices(cfg.bits_per_cell) * 2.0**b for n, b in cfg.adc_bits)


def _accuracy(cfg: QuantConfig) -> float:
    acc = 90.0 - (1.0 if cfg.bits_per_cell == 4 else 0.0)
    for name, bits in cfg.adc_bits:
        acc -= 10.0 * max(0, TOLERATED[cfg.bits_per_cell][name] - bits)
    return acc


def test_greedy_finds_the_lowest_bits_within_tolerance() -> None:
    calls: list[QuantConfig] = []

    def evaluate(cfg: QuantConfig) -> float:
        calls.append(cfg)
        return _accuracy(cfg)

    res = quant_search(LAYERS, evaluate, _energy, tolerance=0.5)
    assert len(calls) == len(set(calls)) == res.evaluations  # every configuration evaluated once
    assert res.reference.config == QuantConfig.uniform(LAYERS, 8, 2)
    assert res.reference.relative_energy == 1.0
    # 2-bit cells: a, b, c lowered to 6, 7, 4; 1-bit cells: 5, 6, 4 but twice the slices
    e_c2 = _energy(QuantConfig(2, (("a", 6), ("b", 7), ("c", 4))))
    e_c1 = _energy(QuantConfig(1, (("a", 5), ("b", 6), ("c", 4))))
    assert e_c2 < e_c1
    assert res.best.config == QuantConfig(2, (("a", 6), ("b", 7), ("c", 4)))
    assert res.best.accuracy == 90.0
    assert res.saving_pct == pytest.approx(100 * (1 - e_c2 / _energy(res.reference.config)))
    # 4-bit cells lose 1 point: outside the 0.5-point tolerance, never chosen
    assert all(p.config.bits_per_cell != 4 or p.accuracy < 89.5 for p in res.points)
    # the front is non-dominated and sorted by energy
    front = res.front
    assert [p.energy_pj for p in front] == sorted(p.energy_pj for p in front)
    for p in front:
        assert not any(q.accuracy >= p.accuracy and q.energy_pj < p.energy_pj for q in res.points)
    assert res.best in front


def test_tolerance_and_budget() -> None:
    strict = quant_search(LAYERS, _accuracy, _energy, tolerance=0.5)
    loose = quant_search(LAYERS, _accuracy, _energy, tolerance=1.5)
    # 4-bit cells (1 point lower) now qualify, but the 2-bit-cell point with lowered ADCs is still cheaper
    assert any(p.config.bits_per_cell == 4 and p.accuracy >= 88.5 for p in loose.points)
    assert loose.best.energy_pj <= strict.best.energy_pj
    looser = quant_search(LAYERS, _accuracy, _energy, tolerance=10.5)
    assert looser.best.accuracy >= 79.5 and looser.best.energy_pj < strict.best.energy_pj
    capped = quant_search(LAYERS, _accuracy, _energy, max_evaluations=4)
    assert capped.evaluations == 4 and capped.info["budget_exhausted"]
    with pytest.raises(ValueError, match="tolerance"):
        quant_search(LAYERS, _accuracy, _energy, tolerance=-1.0)
    with pytest.raises(ValueError, match="layers"):
        quant_search((), _accuracy, _energy)


def test_pareto_front_small() -> None:
    def pt(acc: float, e: float, b: int) -> QuantPoint:
        return QuantPoint(QuantConfig.uniform(("x",), b, 2), acc, e, e / 100)

    pts = [pt(90, 100, 8), pt(89, 50, 7), pt(88, 60, 6), pt(80, 10, 4), pt(89, 50, 5)]
    front = pareto_front(pts)
    assert [(p.accuracy, p.energy_pj) for p in front] == [(80, 10), (89, 50), (90, 100)]


def test_config_to_hardware_per_layer_bits() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
    base = xbarlab.load_preset("ideal").override({"weights.quantize": True, "adc.bits": 8})
    cfg = QuantConfig(4, (("0", 5), ("3", 7)))
    hw = cfg.hardware(base)
    assert hw.weights.bits_per_cell == 4 and hw.weights.bits == 8
    chip = xbarlab.convert(model, hw)
    assert {la.layer_name: la.hw.adc.bits for la in analog_layers(chip)} == {"0": 5, "3": 7}
    assert all(la.layout.num_slices == 2 for la in analog_layers(chip))
    assert cfg.label() == "w8 c4 adc[5,7]"
    assert cfg.with_bits("3", 4).bits == {"0": 5, "3": 4}
    with pytest.raises(ValueError, match="bits_per_cell"):
        QuantConfig(16, (("0", 5),))
    with pytest.raises(ValueError, match="adc_bits"):
        QuantConfig(2, (("0", 1),))
