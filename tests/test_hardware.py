"""Hardware configuration: presets, YAML round trip, overrides and validation errors."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
import yaml

from xbarlab.hardware import ConfigError, HardwareConfig, LayerOverride
from xbarlab.presets import list_presets, load_preset
from xbarlab.yamlio import load_yaml, parse_value


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
        # one device pair per weight holds all 8 bits (noise once per weight, P1's PC2 reading): bits_per_cell = 8
        assert (hw.weights.bits, hw.weights.bits_per_cell, hw.dac.bits) == (8, 8, 8)
        assert hw.weights.noise_granularity == "weight" and hw.num_slices == 1
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


# ---------------------------------------------------------------------------------------------------- QA fixes


def test_yaml_reads_scientific_notation_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "hw.yaml"
    path.write_text("device: {r_on_ohm: 50e3, on_off_ratio: 1.5E+1}\nread_noise: {kind: absolute_uS, sigma: 1e-1}\n")
    hw = HardwareConfig.from_yaml(path)
    assert hw.device.r_on_ohm == 50000.0 and isinstance(hw.device.r_on_ohm, float)
    assert hw.device.on_off_ratio == 15.0
    assert hw.read_noise.sigma == 0.1


def test_yaml_scientific_notation_is_still_range_checked() -> None:
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_yaml("read_noise: {kind: absolute_uS, sigma: -2e-1}\n")
    assert info.value.path == "read_noise.sigma" and info.value.value == -0.2


def test_parse_value_reads_set_values_like_the_cli_needs() -> None:
    assert parse_value("1e-1") == 0.1 and isinstance(parse_value("1e-1"), float)
    assert parse_value("50e3") == 50000.0
    assert parse_value("8") == 8 and isinstance(parse_value("8"), int)
    assert parse_value("null") is None
    assert parse_value("relative_to_G") == "relative_to_G"
    assert parse_value("[1, 2e1]") == [1, 20.0]
    assert parse_value("{a: [") == "{a: ["  # not YAML: kept as text
    assert load_yaml("x: 1e3") == {"x": 1000.0}
    hw = load_preset("rram").override({"read_noise.sigma": parse_value("1e-1")})
    assert hw.read_noise.sigma == 0.1
    # the shared loader does not change PyYAML's own safe loader
    assert yaml.safe_load("1e-1") == "1e-1"


@pytest.mark.parametrize(
    "settings",
    [
        {"adc": {"bits": 1}},
        {"adc": {"bits": "many"}},
    ],
)
def test_layer_override_errors_name_the_override_from_dict(settings: dict[str, object]) -> None:
    data = {"layers": [{"pattern": "b*", "settings": {"adc": {"bits": 6}}}, {"pattern": "a*", "settings": settings}]}
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict(data)
    assert info.value.path == "layers[1].settings.adc.bits"
    assert str(info.value).startswith("layers[1].settings.adc.bits: invalid value ")


def test_layer_override_errors_name_the_override_from_yaml_and_override() -> None:
    text = "layers:\n  - pattern: 'a*'\n    settings: {adc: {bits: 1}}\n"
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_yaml(text)
    assert str(info.value) == "layers[0].settings.adc.bits: invalid value 1; allowed: an integer in [2, 16]"
    with pytest.raises(ConfigError) as info:
        load_preset("rram").override({"layers": [{"pattern": "a*", "settings": {"weights": {"bits_per_cell": 9}}}]})
    assert info.value.path == "layers[0].settings.weights.bits_per_cell"
    with pytest.raises(ConfigError) as info:
        HardwareConfig(layers=(LayerOverride("a*", {"faults": {"sa0_rate": 2.0}}),))
    assert info.value.path == "layers[0].settings.faults.sa0_rate"
    # unknown fields and type errors were already prefixed; they stay so (no double prefix)
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict({"layers": [{"pattern": "a*", "settings": {"adc": {"bitz": 4}}}]})
    assert info.value.path == "layers[0].settings.adc.bitz"


def test_nested_from_dict_path_prefixes_validation_errors() -> None:
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict({"crossbar": {"rows": 0}}, path="hardware")
    assert info.value.path == "hardware.crossbar.rows"
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict({"preset": "nope"}, path="hardware")
    assert info.value.path == "hardware.preset"


def test_config_error_pickles() -> None:
    err = ConfigError("read_noise.sigma", 0.1, "something", "0.1 has no effect")
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.value, back.allowed, str(back)) == (err.path, err.value, err.allowed, str(err))


READ_NOISE_ON = "one of 'absolute_uS', 'relative_to_G', 'relative_to_G_on', 'pcm_1f'"


@pytest.mark.parametrize(
    ("data", "field", "value", "message"),
    [
        (
            {"read_noise": {"sigma": 0.1}},
            "read_noise.sigma",
            0.1,
            "read_noise.sigma: 0.1 has no effect while read_noise.kind is 'none'; allowed: set read_noise.kind to "
            f"{READ_NOISE_ON}, or remove read_noise.sigma",
        ),
        (
            {"programming": {"sigma": 0.5}},
            "programming.sigma",
            0.5,
            "programming.sigma: 0.5 has no effect while programming.kind is 'none'; allowed: set programming.kind "
            "to one of 'gaussian_abs', 'gaussian_rel', 'lognormal', 'pcm_nandakumar', or remove programming.sigma",
        ),
        (
            {"drift": {"nu_mean": 0.1}},
            "drift.nu_mean",
            0.1,
            "drift.nu_mean: 0.1 has no effect while drift.kind is 'none'; allowed: set drift.kind to one of "
            "'power_law', 'pcm_nandakumar', or remove drift.nu_mean",
        ),
        (
            {"drift": {"kind": "none", "t0_s": 20}},
            "drift.t0_s",
            20,
            "drift.t0_s: 20 has no effect while drift.kind is 'none'; allowed: set drift.kind to one of "
            "'power_law', 'pcm_nandakumar', or remove drift.t0_s",
        ),
        (
            {"read_noise": {"mode": "per_mvm"}},
            "read_noise.mode",
            "per_mvm",
            "read_noise.mode: 'per_mvm' has no effect while read_noise.kind is 'none'; allowed: set read_noise.kind "
            f"to {READ_NOISE_ON}, or remove read_noise.mode",
        ),
        (
            {"parasitics": {"r_wire_row_ohm": 2.5}},
            "parasitics.r_wire_row_ohm",
            2.5,
            "parasitics.r_wire_row_ohm: 2.5 has no effect while parasitics.enabled is false; allowed: set "
            "parasitics.enabled to true, or remove parasitics.r_wire_row_ohm",
        ),
        (
            {"dac": {"range_mode": "percentile", "percentile": 99.0}},
            "dac.range_mode",
            "percentile",
            "dac.range_mode: 'percentile' has no effect while dac.bits is null; allowed: set dac.bits to an integer "
            "in [2, 16], or remove dac.range_mode",
        ),
        (
            {"preset": "rram", "adc": {"percentile": 99.0}},
            "adc.percentile",
            99.0,
            "adc.percentile: 99.0 has no effect while adc.bits is null; allowed: set adc.bits to an integer in "
            "[2, 16], or remove adc.percentile",
        ),
        (
            {"preset": "rram", "read_noise": {"kind": "none", "sigma": 0.2}},
            "read_noise.sigma",
            0.2,
            "read_noise.sigma: 0.2 has no effect while read_noise.kind is 'none'; allowed: set read_noise.kind to "
            f"{READ_NOISE_ON}, or remove read_noise.sigma",
        ),
    ],
)
def test_parameters_of_a_switched_off_section_are_rejected(
    data: dict[str, object], field: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict(data)
    assert (info.value.path, info.value.value, str(info.value)) == (field, value, message)


def test_switched_off_parameters_are_rejected_in_yaml_override_and_layer_overrides() -> None:
    with pytest.raises(ConfigError, match=r"^read_noise\.sigma: 0\.1 has no effect while read_noise\.kind is 'none'"):
        HardwareConfig.from_yaml("read_noise: {sigma: 1e-1}\n")
    ideal = load_preset("ideal")
    with pytest.raises(ConfigError) as info:
        ideal.override({"read_noise.sigma": 0.1})
    assert info.value.path == "read_noise.sigma"
    with pytest.raises(ConfigError) as info:
        load_preset("rram").override({"read_noise.kind": "none", "read_noise.offset_us": 0.2})
    assert info.value.path == "read_noise.offset_us"
    with pytest.raises(ConfigError) as info:
        load_preset("rram-ir").override({"parasitics.enabled": False, "parasitics.r_sense_ohm": 10.0})
    assert info.value.path == "parasitics.r_sense_ohm"
    with pytest.raises(ConfigError) as info:
        load_preset("rram").override({"drift.kind": "none", "drift.nu_std": 0.01})
    assert info.value.path == "drift.nu_std"
    layers = [{"pattern": "a*", "settings": {"programming": {"sigma": 0.3}}}]
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict({"preset": "rram", "layers": layers})
    assert str(info.value).startswith(
        "layers[0].settings.programming.sigma: 0.3 has no effect while programming.kind is 'none'; allowed: "
    )
    assert str(info.value).endswith("or remove layers[0].settings.programming.sigma")
    with pytest.raises(ConfigError) as info:
        ideal.override({"layers": layers})
    assert info.value.path == "layers[0].settings.programming.sigma"


def test_layer_override_chain_that_switches_a_section_off_is_checked_per_layer() -> None:
    hw = HardwareConfig.from_dict(
        {
            "preset": "rram",
            "layers": [
                {"pattern": "fc", "settings": {"read_noise": {"kind": "none"}}},
                {"pattern": "*", "settings": {"read_noise": {"sigma": 0.2}}},
            ],
        }
    )
    assert hw.for_layer("conv1").read_noise.sigma == 0.2
    with pytest.raises(ConfigError) as info:
        hw.for_layer("fc")
    assert info.value.path == "layers[1].settings.read_noise.sigma"


def test_switching_a_section_off_keeps_working_and_round_trips() -> None:
    hw = load_preset("rram").override({"read_noise.kind": "none"})
    assert (hw.read_noise.kind, hw.read_noise.sigma) == ("none", 0.1)  # inherited value kept, inert
    assert HardwareConfig.from_yaml(hw.to_yaml()) == hw
    assert HardwareConfig.from_dict(hw.to_dict()) == hw
    assert HardwareConfig.from_dict(json.loads(json.dumps(hw.to_dict(), allow_nan=False))) == hw
    # switch and parameters back on
    assert hw.override({"read_noise.kind": "relative_to_G"}) == load_preset("rram")
    # restating a default is not "a parameter with no effect"
    assert load_preset("rram").override({"read_noise.kind": "none", "read_noise.sigma": 0.0}).read_noise.sigma == 0.0
    assert HardwareConfig.from_dict({"drift": {"kind": "none", "t0_s": 1}}).drift.t0_s == 1.0
    assert HardwareConfig.from_dict({"adc": {"bits": None, "noise_lsb": 0}}).adc.bits is None
    # presets whose sections are off round-trip through their complete (dumped) mapping
    for name in ("rram", "rram-ir", "pcm-nandakumar", "ideal"):
        off = load_preset(name).override(
            {
                "programming.kind": "none",
                "read_noise.kind": "none",
                "drift.kind": "none",
                "parasitics.enabled": False,
                "dac.bits": None,
                "adc.bits": None,
            }
        )
        assert HardwareConfig.from_yaml(off.to_yaml()) == off
        assert HardwareConfig.from_dict(json.loads(json.dumps(off.to_dict(), allow_nan=False))) == off


def test_json_form_is_valid_json_and_round_trips_infinity() -> None:
    hw = load_preset("pcm-nandakumar")
    data = hw.to_dict()
    assert data["device"]["on_off_ratio"] == "inf"
    text = json.dumps(data, allow_nan=False)  # raises on Infinity / NaN
    assert "Infinity" not in text
    assert HardwareConfig.from_dict(json.loads(text)) == hw
    assert "on_off_ratio: .inf" in hw.to_yaml()
    assert HardwareConfig.from_yaml(hw.to_yaml()) == hw
    # layer overrides with infinities round-trip too
    layered = load_preset("rram").override(
        {"layers": [{"pattern": "fc", "settings": {"device": {"on_off_ratio": float("inf")}}}]}
    )
    text = json.dumps(layered.to_dict(), allow_nan=False)
    back = HardwareConfig.from_dict(json.loads(text))
    assert back == layered
    assert math.isinf(back.for_layer("fc").device.on_off_ratio)


def test_infinity_strings_are_accepted_only_as_infinity() -> None:
    assert math.isinf(HardwareConfig.from_dict({"device": {"on_off_ratio": "inf"}}).device.on_off_ratio)
    assert math.isinf(HardwareConfig.from_dict({"device": {"on_off_ratio": "+inf"}}).device.on_off_ratio)
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict({"device": {"on_off_ratio": "-inf"}})
    assert info.value.path == "device.on_off_ratio"
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict({"device": {"r_on_ohm": "inf"}})
    assert str(info.value) == "device.r_on_ohm: invalid value inf; allowed: a finite number"
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict({"device": {"r_on_ohm": "1e3"}})
    assert str(info.value) == "device.r_on_ohm: invalid value '1e3'; allowed: a number"
    assert HardwareConfig.from_dict({"device": {"name": "inf"}}).device.name == "inf"  # strings stay strings


@pytest.mark.parametrize("quantize", [True, False])
def test_offset_mapping_needs_two_columns(quantize: bool) -> None:
    with pytest.raises(ConfigError) as info:
        load_preset("ideal").override({"weights.mapping": "offset", "weights.quantize": quantize, "crossbar.cols": 1})
    assert info.value.path == "crossbar.cols" and info.value.value == 1
    assert str(info.value) == (
        "crossbar.cols: invalid value 1; allowed: an integer in [2, 4096] with weights.mapping 'offset' "
        "(each tile's last column is the reference)"
    )
    ok = load_preset("ideal").override({"weights.mapping": "offset", "weights.quantize": quantize, "crossbar.cols": 2})
    assert ok.crossbar.cols == 2
    assert load_preset("ideal").override({"crossbar.cols": 1}).crossbar.cols == 1  # differential: fine
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict(
            {"crossbar": {"cols": 1}, "layers": [{"pattern": "fc", "settings": {"weights": {"mapping": "offset"}}}]}
        )
    assert info.value.path == "layers[0].settings.crossbar.cols"


@pytest.mark.parametrize(
    ("section", "kind", "field", "value"),
    [
        ("drift", "power_law", "scale", 2.0),
        ("drift", "pcm_nandakumar", "nu_mean", 0.1),
        ("drift", "pcm_nandakumar", "nu_std", 0.01),
        ("read_noise", "pcm_1f", "offset_us", 0.1),
    ],
)
def test_fields_the_kind_does_not_use_are_errors(section: str, kind: str, field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"{section}\.{field}: {value} has no effect with {section}\.kind '{kind}'"):
        HardwareConfig.from_dict({section: {"kind": kind, field: value}})
    # inherited values, complete sections (to_dict) and restated defaults stay valid
    hw = HardwareConfig.from_dict({section: {"kind": kind}})
    assert HardwareConfig.from_dict(hw.to_dict()) == hw


@pytest.mark.parametrize("name", ["fefet", "pcm-i", "pcm-ii", "rram"])
@pytest.mark.parametrize("per_cell", [1, 2, 4])
def test_bits_per_cell_without_slicing_is_refused_not_ignored(name: str, per_cell: int) -> None:
    # P1 presets store a weight on one device pair (noise once per weight): a bits_per_cell other than bits would do
    # nothing (before, `--set weights.bits_per_cell=1` silently returned the same accuracy)
    with pytest.raises(ConfigError) as info:
        load_preset(name).override({"weights.bits_per_cell": per_cell})
    assert info.value.path == "weights.bits_per_cell"
    assert "no effect with noise_granularity 'weight'" in str(info.value)
    assert "noise_granularity 'slice'" in str(info.value)


def test_real_slicing_is_an_explicit_choice_and_changes_the_chip() -> None:
    import torch
    from torch import nn

    import xbarlab

    sliced = load_preset("fefet").override({"weights.noise_granularity": "slice", "weights.bits_per_cell": 4})
    assert sliced.num_slices == 2 and load_preset("fefet").num_slices == 1
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 2))  # the last Linear stays digital
    per_weight = xbarlab.program(xbarlab.convert(model, load_preset("fefet")), 0)[0]
    per_slice = xbarlab.program(xbarlab.convert(model, sliced), 0)[0]
    assert per_slice.layout.num_slices == 2 and per_weight.layout.num_slices == 1
    assert per_slice.g_prog.shape[1] == 2 and per_weight.g_prog.shape[1] == 1
    assert not torch.equal(per_weight.effective_weight(), per_slice.effective_weight())
