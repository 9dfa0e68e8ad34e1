"""xbarlab.schema: the one validation engine (field checks, mappings, the one error type)."""

from __future__ import annotations

import math
import pickle

import pytest

from xbarlab import schema
from xbarlab.schema import ConfigError, Field, check_mapping


def test_number_bounds_and_messages() -> None:
    assert schema.number("a", 3) == 3.0 and isinstance(schema.number("a", 3), float)
    with pytest.raises(ConfigError) as info:
        schema.number("drift.t0_s", 0.0, lo=0.0, lo_open=True)
    assert str(info.value) == "drift.t0_s: invalid value 0.0; allowed: > 0"
    assert (info.value.path, info.value.value, info.value.allowed) == ("drift.t0_s", 0.0, "> 0")
    with pytest.raises(ConfigError, match=r"^f: invalid value 1.5; allowed: >= 0 and <= 1$"):
        schema.number("f", 1.5, lo=0.0, hi=1.0)
    with pytest.raises(ConfigError, match=r"^f: invalid value 1.0; allowed: >= 0 and < 1$"):
        schema.number("f", 1.0, lo=0.0, hi=1.0, hi_open=True)
    assert schema.number("f", 0.999, lo=0.0, hi=1.0, hi_open=True) == 0.999
    with pytest.raises(ConfigError, match="allowed: a finite number"):
        schema.number("f", math.inf)
    assert schema.number("f", math.inf, lo=1.0, lo_open=True, allow_inf=True) == math.inf
    with pytest.raises(ConfigError, match="allowed: a finite number"):
        schema.number("f", math.nan, allow_inf=True)
    for bad in (True, "1", None):
        with pytest.raises(ConfigError, match="allowed: a number"):
            schema.number("f", bad)


def test_integer_choice_boolean() -> None:
    assert schema.integer("n", 4, lo=1, hi=16) == 4
    with pytest.raises(ConfigError, match=r"^n: invalid value 17; allowed: an integer in \[1, 16\]$"):
        schema.integer("n", 17, lo=1, hi=16)
    with pytest.raises(ConfigError, match=r"allowed: an integer >= 1$"):
        schema.integer("n", 0, lo=1)
    for bad in (True, 2.0):
        with pytest.raises(ConfigError, match="an integer in"):
            schema.integer("n", bad, lo=1, hi=16)
    assert schema.choice("m", "x", ("x", "y")) == "x"
    with pytest.raises(ConfigError, match=r"^m: invalid value 'z'; allowed: one of 'x', 'y'$"):
        schema.choice("m", "z", ("x", "y"))
    assert schema.boolean("b", False) is False
    with pytest.raises(ConfigError, match="allowed: true or false"):
        schema.boolean("b", 1)


def test_field_describe_and_check() -> None:
    assert Field("int", lo=1, optional=True).describe() == "an integer >= 1 or null"
    assert Field("float", lo=0.0, lo_open=True).describe() == "a number > 0"
    assert Field("float", lo=0.0, lo_open=True).check("d", 2) == 2.0
    assert Field("int", optional=True).check("d", None) is None
    with pytest.raises(ConfigError, match=r"^d: invalid value 0; allowed: a number > 0$"):
        Field("float", lo=0.0, lo_open=True).check("d", 0)
    with pytest.raises(ConfigError, match="allowed: a string"):
        Field("str").check("s", "")
    with pytest.raises(ValueError, match=r"Field\.kind"):
        Field("complex")


def test_check_mapping_unknown_missing_defaults() -> None:
    fields = {"a": Field("int", 3, lo=0), "b": Field("str", required=True)}
    assert check_mapping(("top",), {"b": "x"}, fields) == {"a": 3, "b": "x"}
    assert check_mapping(("top",), {"b": "x"}, fields, fill_defaults=False) == {"b": "x"}
    with pytest.raises(ConfigError) as info:
        check_mapping(("top",), {"b": "x", "c.d": 1}, fields)
    assert str(info.value) == "top.c.d: unknown key; allowed: a, b" and info.value.keys == ("top", "c.d")
    with pytest.raises(ConfigError) as info:
        check_mapping(("top",), {"a": 1}, fields)
    assert str(info.value) == "top.b: missing; allowed: a string" and info.value.keys == ("top", "b")
    with pytest.raises(ConfigError, match=r"^top.a: invalid value -1; allowed: an integer >= 0$"):
        check_mapping(("top",), {"a": -1, "b": "x"}, fields)
    with pytest.raises(ConfigError, match=r"^top: invalid value \[1\]; allowed: a mapping with keys a, b$"):
        check_mapping(("top",), [1], fields)


def test_config_error_location_prefix_and_pickle() -> None:
    err = ConfigError("x.y", 2, ">= 3", source="f.yaml", line=7)
    assert (
        str(err) == "f.yaml:7: x.y: invalid value 2; allowed: >= 3" and err.detail == "invalid value 2; allowed: >= 3"
    )
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ConfigError and str(back) == str(err) and back.line == 7
    assert (
        str(ConfigError("s", 1, "0", problem="no effect").prefixed("layers[0]")) == "layers[0].s: no effect; allowed: 0"
    )


def test_hardware_reexports_the_one_error_type() -> None:
    from xbarlab import hardware

    assert hardware.ConfigError is ConfigError


def test_mitigation_options_are_refused_with_the_one_error_type() -> None:
    from xbarlab.mitigation.registry import OptionLimit, check_options

    with pytest.raises(ConfigError) as info:
        check_options("bn_adapt", {"momentum": 0.0})
    assert str(info.value) == "option 'momentum' of mitigation 'bn_adapt': invalid value 0.0; allowed: > 0 and <= 1"
    with pytest.raises(ConfigError, match=r"^option 'nb' of mitigation 'bn_adapt': unknown option; allowed: num_b"):
        check_options("bn_adapt", {"nb": 1})
    with pytest.raises(ConfigError, match=r"invalid value 2.5; allowed: an integer$"):
        check_options("bn_adapt", {"num_batches": 2.5})
    assert check_options("bn_adapt", {"momentum": 1})["momentum"] == 1.0
    assert OptionLimit(lo=0.0, hi=1.0, hi_open=True).check(1.0) == ">= 0 and < 1"
    assert OptionLimit(lo=0.0, hi=1.0, hi_open=True).check(0.5) is None


def test_sweep_errors_are_config_errors_with_file_and_line() -> None:
    from xbarlab.experiments.spec import SweepSpecError, parse_spec

    text = "name: s\nbase:\n  model: {pretrained: resnet20-fmnist}\n  data: {dataset: digits, batch_size: 0}\n"
    text += "  hardware: {preset: fefet}\ngrid:\n  chips_x: [1]\n"
    with pytest.raises(ConfigError) as info:
        parse_spec(text, source="s.yaml")
    err = info.value
    assert isinstance(err, SweepSpecError) and (err.source, err.line, err.key) == ("s.yaml", 4, "base.data.batch_size")
    assert str(err) == "s.yaml:4: base.data.batch_size: invalid value 0; allowed: an integer >= 1"
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is SweepSpecError and str(back) == str(err) and back.line == 4


def test_yaml_line_map_and_duplicate_keys() -> None:
    from xbarlab.yamlio import YamlInputError, load_with_lines

    data, lines = load_with_lines("a:\n  b: 1\n  c: [x, y]\n", "f.yaml")
    assert data == {"a": {"b": 1, "c": ["x", "y"]}}
    assert lines == {("a",): 1, ("a", "b"): 2, ("a", "c"): 3, ("a", "c", "0"): 3, ("a", "c", "1"): 3}
    with pytest.raises(YamlInputError) as info:
        load_with_lines("a:\n  b: 1\n  b: 2\n", "f.yaml")
    assert (info.value.key, info.value.line) == ("a.b", 3)
    assert str(info.value) == "f.yaml:3: duplicate key; allowed: each key once per mapping"


def test_one_set_parser() -> None:
    from xbarlab.yamlio import parse_assignments

    assert parse_assignments(["read_noise.sigma=1e-1", " chips =3", "x=[1,"], example="a=1") == {
        "read_noise.sigma": 0.1,
        "chips": 3,
        "x": "[1,",
    }
    for bad in ("chips", "=3"):
        with pytest.raises(ValueError, match=r"^--set '.*': expected KEY=VALUE, e.g. a=1$"):
            parse_assignments([bad], example="a=1")
