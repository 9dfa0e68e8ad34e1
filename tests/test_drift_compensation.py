"""Drift compensation (global / per column): restores the output scale of a chip whose only error is drift."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xbarlab
from xbarlab.layers import analog_layers
from xbarlab.mitigation.drift_compensation import (
    OutputScale,
    compensate,
    compensation_scales,
    drift_compensation,
    layer_readout,
    record_reference,
    remove_compensation,
)

NU = 0.1
T = 1e4  # s; drift factor (T/t0)^-ν = 10^-0.4 = 0.398


def _net() -> nn.Module:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(2, 5, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(5, 4, 3, padding=2, dilation=2, bias=False),
            nn.Flatten(),
            nn.Linear(4 * 6 * 6, 3),
        )
        .eval()
        .requires_grad_(False)
    )


def _drift_only_hw(mapping: str = "differential") -> xbarlab.HardwareConfig:
    return xbarlab.load_preset("ideal").override(
        {
            "drift.kind": "power_law",
            "drift.nu_mean": NU,
            "drift.nu_std": 0.0,
            "drift.t0_s": 1.0,
            "weights.mapping": mapping,
        }
    )


@pytest.mark.parametrize("readout", ["forward", "weights", "conductance"])
@pytest.mark.parametrize("kind", ["global", "per_column"])
def test_global_drift_is_undone_exactly(kind: str, readout: str) -> None:
    net = _net()
    x = torch.randn(4, 2, 6, 6)
    ideal = net(x)
    chip = xbarlab.program(xbarlab.convert(net, _drift_only_hw()), 0)
    assert torch.allclose(chip(x), ideal, atol=1e-5)
    xbarlab.drift(chip, T)
    drifted = chip(x)
    # first layer's pre-activation shrinks by 10^-0.4; the error is large before compensation
    assert float((drifted - ideal).abs().max()) > 0.1
    res = compensate(chip, kind=kind, readout=readout)
    assert res.reference_measured_at_t0
    for scale in res.scales.values():
        assert torch.allclose(scale, torch.full_like(scale, T**NU), rtol=1e-4)  # 2.5119
    assert torch.allclose(chip(x), ideal, atol=1e-4)
    info = res.info()
    assert info["drift_comp_scale_mean"] == pytest.approx(2.511886, rel=1e-4) and info["drift_comp_layers"] == 3


def test_recorded_reference_and_chip_time_untouched() -> None:
    net = _net()
    x = torch.randn(3, 2, 6, 6)
    chip = xbarlab.program(xbarlab.convert(net, _drift_only_hw("offset")), 1)
    refs = record_reference(chip, kind="global", readout="forward")
    assert set(refs) == {"0", "2", "4"}
    xbarlab.drift(chip, T)
    res = compensate(chip, kind="global", readout="forward")
    assert not res.reference_measured_at_t0
    assert all(float(la.chip_time) == T for la in analog_layers(chip))  # type: ignore[arg-type]
    assert torch.allclose(chip(x), net(x), atol=1e-4)
    # re-applying replaces the hooks instead of stacking them
    compensate(chip, kind="global", readout="forward")
    assert sum(isinstance(h, OutputScale) for la in analog_layers(chip) for h in la._forward_hooks.values()) == 3
    assert remove_compensation(chip) == 3 and compensation_scales(chip) == {}


def test_per_column_drift_needs_per_column_compensation() -> None:
    net = _net()
    x = torch.randn(4, 2, 6, 6)
    chip = xbarlab.program(xbarlab.convert(net, _drift_only_hw()), 2)
    for layer in analog_layers(chip):
        assert layer.nu is not None
        cols = layer.nu.shape[-1]
        layer.nu = torch.linspace(0.02, 0.2, cols, dtype=layer.nu.dtype).expand_as(layer.nu).clone()
    xbarlab.drift(chip, T)
    compensate(chip, kind="global", readout="forward")
    err_global = float((chip(x) - net(x)).abs().max())
    compensate(chip, kind="per_column", readout="forward")
    err_column = float((chip(x) - net(x)).abs().max())
    assert err_column < 1e-4 and err_global > 0.01
    scales = compensation_scales(chip)["4"]  # linear layer: columns 0-2 of a 64-column tile → factor T^ν
    nus = torch.linspace(0.02, 0.2, 64)[:3].tolist()
    assert scales.tolist() == pytest.approx([T**nu for nu in nus], rel=1e-4)


def test_readout_values_and_errors() -> None:
    lin = nn.Linear(4, 2, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.0, 1.0], [0.5, 0.5, -0.5, 0.0]]))
        lin.bias.fill_(3.0)
    chip = xbarlab.program(xbarlab.convert(lin, xbarlab.load_preset("ideal")), 0)
    layer = analog_layers(chip)[0]
    assert float(layer_readout(layer, kind="global", readout="forward")) == pytest.approx(5.5 / 8, rel=1e-6)
    col = layer_readout(layer, kind="per_column", readout="weights")
    assert col.tolist() == pytest.approx([1.0, 0.375], rel=1e-6)
    with pytest.raises(ValueError, match="kind"):
        compensate(chip, kind="row")
    with pytest.raises(ValueError, match="readout"):
        drift_compensation("global", readout="magic")


def test_mitigation_callable_with_evaluate_chips() -> None:
    from xbarlab.evaluation import evaluate_chips

    torch.manual_seed(0)
    x = torch.randn(64, 2, 6, 6)
    net = _net()
    y = net(x).argmax(1)
    loader = [(x, y)]
    hw = _drift_only_hw()
    plain = evaluate_chips(net, hw, loader, chips=2, t_seconds=1e8, progress=False)
    comp = evaluate_chips(
        net, hw, loader, chips=2, t_seconds=1e8, progress=False, mitigation=drift_compensation("global")
    )
    assert comp.accuracies == [100.0, 100.0]
    assert plain.summary.mean < 100.0
    assert comp.chips[0].info["drift_comp_scale_mean"] == pytest.approx(1e8**NU, rel=1e-4)


def test_sweep_registry_entries() -> None:
    from xbarlab.experiments.registry import check_options, get_mitigation

    assert get_mitigation("drift_comp_global").options == {"readout": "forward"}
    assert check_options("drift_comp_column", {"readout": "conductance"}) == {"readout": "conductance"}
