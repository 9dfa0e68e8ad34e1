"""Hardware configuration: presets, YAML round trip, overrides and validation errors."""

from __future__ import annotations

import math

import pytest

from xbarlab.hardware import ConfigError, HardwareConfig
from xbarlab.presets import list_presets, load_preset


@pytest.mark.parametrize("name", sorted(list_presets()))
def test_presets_round_trip_through_yaml(name: str) -> None:
    hw = load_preset(name)
    assert HardwareConfig.from_yaml(hw.to_yaml()) == hw
    assert HardwareConfig.from_dict(hw.to_dict()) == hw


def test_p1_table1_values() -> None:
    fefet, pcm1, pcm2, rram = (load_preset(n) for n in ("fefet", "pcm-i", "pcm-ii", "rram"))
    assert fefet.device.g_on_us == pytest.approx(4.5, rel=1e-4)
    assert fefet.device.g_off_us == pytest.approx(0.045, rel=1e-4)
    assert pcm1.device.g_on_us == pytest.approx(4.0) and pcm1.device.g_off_us == pytest.approx(0.1)
    assert pcm2.device.g_on_us == pytest.approx(8.0) and pcm2.device.g_off_us == pytest.approx(0.1)
    assert rram.device.g_on_us == pytest.approx(20.0) and rram.device.g_off_us == pytest.approx(2.0)
    assert (fefet.drift.nu_mean, pcm1.drift.nu_mean, rram.drift.nu_mean) == (0.1, 0.04, 0.04)
    assert (fefet.read_noise.sigma, rram.read_noise.sigma) == (0.05, 0.1)
    assert (pcm1.read_noise.sigma, pcm1.read_noise.offset_us) == (0.03, 0.13)
    for hw in (fefet, pcm1, pcm2, rram):
        assert (hw.weights.bits, hw.weights.bits_per_cell, hw.dac.bits) == (8, 4, 8)
        assert (hw.crossbar.rows, hw.crossbar.cols) == (64, 64)
        assert "@classifier" in hw.keep_digital
    nanda = load_preset("pcm-nandakumar")
    assert nanda.device.g_on_us == pytest.approx(25.0) and nanda.device.g_off_us == 0.0
    assert math.isinf(nanda.device.on_off_ratio)


def test_override_dotted_paths_and_layer_overrides() -> None:
    hw = load_preset("fefet").override({"read_noise.sigma": 0.2, "crossbar.rows": 128})
    assert hw.read_noise.sigma == 0.2 and hw.crossbar.rows == 128
    hw = HardwareConfig.from_dict(
        {"preset": "rram", "layers": [{"pattern": "layer3.*", "settings": {"adc": {"bits": 5}}}]}
    )
    assert hw.for_layer("layer3.0.conv1").adc.bits == 5
    assert hw.for_layer("layer1.0.conv1").adc.bits is None
    assert HardwareConfig.from_yaml(hw.to_yaml()) == hw


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"parasitics.r_driver_ohm": -1.0}, "parasitics.r_driver_ohm"),
        ({"weights.bits": 0}, "weights.bits"),
        ({"device.on_off_ratio": 1.0}, "device.on_off_ratio"),
        ({"device.on_off_ratio": 0.5}, "device.on_off_ratio"),
        ({"device.r_on_ohm": float("nan")}, "device.r_on_ohm"),
        ({"read_noise.kind": "loud"}, "read_noise.kind"),
        ({"adc.bits": "eight"}, "adc.bits"),
        ({"faults.sa0_rate": 1.5}, "faults.sa0_rate"),
        ({"crossbar.cols": 0}, "crossbar.cols"),
        ({"read_noise.bogus": 1}, "read_noise.bogus"),
        ({"nonsense.x": 1}, "nonsense"),
    ],
)
def test_invalid_values_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_preset("rram").override(change)
    assert info.value.path == field
    assert "allowed" in str(info.value)


def test_unknown_keys_in_yaml_are_rejected() -> None:
    with pytest.raises(ConfigError, match=r"crossbar\.rowz"):
        HardwareConfig.from_yaml("crossbar:\n  rowz: 32\n")
    with pytest.raises(ConfigError, match="preset"):
        HardwareConfig.from_dict({"preset": "no-such-device"})


def test_config_is_frozen() -> None:
    hw = load_preset("rram")
    with pytest.raises(AttributeError):
        hw.crossbar.rows = 3  # type: ignore[misc]
