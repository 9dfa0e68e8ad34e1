"""ADC power model (CorrectNet+ ADC power, Walden scaling): hand-computed energies and conversion counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import xbarlab
from xbarlab.adc_power import (
    DEFAULT_FOM_FJ_PER_STEP,
    ADCPowerModel,
    adc_energy_report,
    layer_conversions,
    output_positions,
)
from xbarlab.mapping import make_layout

pytestmark = pytest.mark.usefixtures("single_thread")


def test_energy_per_conversion_hand_computed() -> None:
    walden = ADCPowerModel()
    assert DEFAULT_FOM_FJ_PER_STEP == 5.0
    assert walden.energy_per_conversion_fj(8) == pytest.approx(1280.0)  # 5 fJ · 256
    assert walden.energy_per_conversion_fj(4) == pytest.approx(80.0)  # 5 fJ · 16
    assert walden.energy_per_conversion_pj(8) == pytest.approx(1.28)
    assert walden.relative(6) == pytest.approx(0.25)
    # 1.28 pJ per conversion at 100 MS/s = 0.128 mW
    assert walden.power_mw(8, 100e6) == pytest.approx(0.128)
    schreier = ADCPowerModel(scaling="schreier")
    assert schreier.energy_per_conversion_fj(8) == pytest.approx(1280.0)  # anchored at 8 bits
    assert schreier.energy_per_conversion_fj(6) == pytest.approx(80.0)  # 1280 / 4²
    assert schreier.energy_per_conversion_fj(9) == pytest.approx(5120.0)
    assert ADCPowerModel(fom_fj_per_step=2.0).energy_per_conversion_fj(5) == pytest.approx(64.0)


def test_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="scaling"):
        ADCPowerModel(scaling="linear")
    with pytest.raises(ValueError, match="fom_fj_per_step"):
        ADCPowerModel(fom_fj_per_step=0.0)
    with pytest.raises(ValueError, match="bits"):
        ADCPowerModel().energy_per_conversion_fj(0)


def _hw(**weights: object) -> xbarlab.HardwareConfig:
    return xbarlab.HardwareConfig.from_dict(
        {
            "crossbar": {"rows": 16, "cols": 8},
            "weights": {"bits": 8, "bits_per_cell": 2, **weights},
            "adc": {"bits": 8},
        }
    )


def test_layer_conversions_hand_computed() -> None:
    # Conv2d(3, 10, 3) on 8×8: K = 27 → 2 row tiles of 16; N = 10 outputs → 2 column tiles of 8; 4 slices;
    # 6×6 = 36 output positions → 36 · 2 · 4 · 10 = 2880 conversions.
    lay = make_layout(_hw(), groups=1, k=27, n=10)
    assert (lay.tiles_r, lay.tiles_c, lay.num_slices) == (2, 2, 4)
    assert layer_conversions(lay, 36) == 2880
    assert layer_conversions(lay, 36, separate_polarities=True) == 5760
    assert layer_conversions(lay, 36, count_unused_columns=True) == 36 * 2 * 4 * 16
    assert layer_conversions(lay, 36, input_cycles=8) == 8 * 2880
    assert layer_conversions(make_layout(_hw(bits_per_cell=4), groups=1, k=27, n=10), 36) == 1440
    with pytest.raises(ValueError, match="positions"):
        layer_conversions(lay, -1)


def test_energy_report_matches_hand_computation() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 10, 3), nn.ReLU(), nn.Flatten(), nn.Linear(360, 5)).eval()
    x = torch.zeros(1, 3, 8, 8)
    assert output_positions(model, x) == {"0": 36, "3": 1}
    hw = xbarlab.HardwareConfig.from_dict(
        {
            **_hw().to_dict(),
            "layers": [{"pattern": "3", "settings": {"adc": {"bits": 6}}}],
        }
    )
    report = adc_energy_report(model, hw, x)
    conv, fc = report.layers
    assert conv.conversions == 2880 and conv.bits == 8
    # Linear(360, 5): K = 360 → 23 row tiles of 16; 4 slices; 5 columns; 1 position → 460 conversions
    assert fc.conversions == 23 * 4 * 5 and fc.bits == 6
    assert conv.energy_pj == pytest.approx(2880 * 1.28)
    assert fc.energy_pj == pytest.approx(460 * 0.32)
    assert report.total_pj == pytest.approx(2880 * 1.28 + 460 * 0.32)
    low = adc_energy_report(model, hw, x, adc_bits={"0": 4})
    assert low.layers[0].energy_pj == pytest.approx(2880 * 0.08)
    assert low.relative_to(report) == pytest.approx((2880 * 0.08 + 460 * 0.32) / (2880 * 1.28 + 460 * 0.32))
    assert "| **total** |" in report.table()
    # ADC off in a layer: no conversions counted towards energy
    off = adc_energy_report(model, _hw().override({"adc.bits": None}), x)
    assert off.total_pj == 0.0
