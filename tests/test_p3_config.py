"""P3Config: validated with xbarlab.schema (field, value, allowed range; file:line from YAML), YAML in and out."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from xbarlab.papers.p3 import STAGES, P3Config, config_path, list_configs
from xbarlab.papers.p3.cache import _stage_settings
from xbarlab.papers.p3.config import P3_FIELDS
from xbarlab.schema import ConfigError
from xbarlab.yamlio import YamlInputError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p3.yaml"
    path.write_text(text)
    return path


def test_every_field_has_a_schema_entry() -> None:
    assert list(P3_FIELDS) == [f.name for f in dataclasses.fields(P3Config)]
    assert all(spec.doc for spec in P3_FIELDS.values())


def test_yaml_round_trip(tmp_path: Path) -> None:
    for cfg in (
        P3Config(),
        P3Config(
            model="resnet20-fmnist",
            hardware_overrides={
                "device.on_off_ratio": math.inf,
                "weights.noise_granularity": "weight",
                "weights.bits_per_cell": 8,
            },
            sigmas=(0.0, 0.5, 1.25),
            target_sigma=0.5,
            quant_bits_per_cell=(8,),
            stages=("models", "table"),
            data_dir="/data",
        ),
    ):
        path = tmp_path / "c.yaml"
        text = cfg.to_yaml(path)
        assert path.read_text() == text
        back = P3Config.from_yaml(path)
        assert back == cfg
        assert back.to_yaml() == text


def test_values_are_normalised_and_keys_unchanged() -> None:
    # an integer for a real field becomes a float, a list a tuple: the same config and the same stage keys
    a = P3Config(lipschitz_beta=0, budget_pct=30, sigmas=[0, 1], quant_adc_bits=[6, 8])  # type: ignore[arg-type]
    b = P3Config(lipschitz_beta=0.0, budget_pct=30.0, sigmas=(0.0, 1.0), quant_adc_bits=(6, 8))
    assert a == b
    assert type(a.lipschitz_beta) is float and a.sigmas == (0.0, 1.0) and isinstance(a.sigmas, tuple)
    prints = {"model": "abc", "lipschitz": None}
    for stage in ("models", "sweep", "placement", "quant", "perchip"):
        assert _stage_settings(a, stage, prints) == _stage_settings(b, stage, prints)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"chips": 0}, "chips: invalid value 0; allowed: an integer >= 1"),
        ({"chips": "5"}, "chips: invalid value '5'; allowed: an integer >= 1"),
        ({"chips": True}, "chips: invalid value True; allowed: an integer >= 1"),
        ({"test_images": 150.0}, "test_images: invalid value 150.0; allowed: an integer >= 1"),
        ({"comp_lr": 0.0}, "comp_lr: invalid value 0.0; allowed: a finite number > 0"),
        ({"budget_pct": -1.0}, "budget_pct: invalid value -1.0; allowed: a finite number >= 0"),
        ({"target_sigma": -1.0}, "target_sigma: invalid value -1.0; allowed: a finite number >= 0 or null"),
        ({"sigmas": "0,0.5"}, "sigmas: invalid value '0,0.5'; allowed: a non-empty list of σ values >= 0"),
        ({"sigmas": (0.0, -0.5)}, "sigmas[1]: invalid value -0.5; allowed: a finite number >= 0"),
        ({"quant_adc_bits": (8, 0)}, "quant_adc_bits[1]: invalid value 0; allowed: an integer >= 1"),
        ({"comp_affine": 1}, "comp_affine: invalid value 1; allowed: true or false"),
        ({"lipschitz_kind": "l2"}, "lipschitz_kind: invalid value 'l2'; allowed: one of parseval_neft"),
        ({"adc_scaling": "linear"}, "adc_scaling: invalid value 'linear'; allowed: one of walden, schreier"),
        ({"comp_loss": "mse"}, "comp_loss: invalid value 'mse'; allowed: one of 'ce_normalized'"),
        ({"device": "tpu"}, "device: invalid value 'tpu'; allowed: 'cpu', or 'cuda'"),
        ({"hardware_overrides": {"adc.bits": 1}}, "hardware_overrides.adc.bits: invalid value 1; allowed: an integer"),
        ({"hardware_overrides": {"programming.sigma": 0.3}}, "hardware_overrides.programming.sigma: invalid value"),
    ],
)
def test_bad_values_name_field_value_and_range(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        P3Config(**values)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "chips: 8\nbogus: 1\n")
    with pytest.raises(ConfigError) as err:
        P3Config.from_yaml(path)
    text = str(err.value)
    assert text.startswith(f"{path}:2: bogus: unknown key; allowed: model, dataset, data_dir, out_dir, ")
    assert text.endswith(", stages, force, resume, device")
    path = _write(tmp_path, "chips: 8\nsigmas:\n  - 0\n  - -0.5\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: sigmas\[1\]: invalid value -0.5; allowed: a finite number"):
        P3Config.from_yaml(path)
    path = _write(tmp_path, "chips: 8\nhardware_overrides:\n  dac.bits: 8\n  adc.bits: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: hardware_overrides.adc.bits: invalid value 0; allowed: "):
        P3Config.from_yaml(path)
    path = _write(tmp_path, "chips: 8\ntest_images: many\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: test_images: invalid value 'many'; allowed: an integer >= 1$"):
        P3Config.from_yaml(path)


def test_bad_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: cannot read .*nope\.yaml"):
        P3Config.from_yaml(tmp_path / "nope.yaml")
    with pytest.raises(YamlInputError, match=r"p3.yaml:3: invalid YAML: expected"):
        P3Config.from_yaml(_write(tmp_path, "chips: 8\nsigmas: [0, 1\n"))
    with pytest.raises(YamlInputError, match=r"p3.yaml:2: duplicate key"):
        P3Config.from_yaml(_write(tmp_path, "chips: 8\nchips: 9\n"))
    with pytest.raises(ConfigError, match=r"p3.yaml: config: the file holds no settings"):
        P3Config.from_yaml(_write(tmp_path, "# nothing\n"))
    with pytest.raises(ConfigError, match=r"p3.yaml: <root>: invalid value \[1, 2\]; allowed: a mapping of P3Config"):
        P3Config.from_yaml(_write(tmp_path, "[1, 2]\n"))
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not a text file"):
        P3Config.from_yaml(tmp_path / "bin.yaml")


def test_overrides_replace_file_values_and_name_set(tmp_path: Path) -> None:
    path = _write(tmp_path, "chips: 8\nhardware_overrides:\n  dac.bits: 6\n")
    cfg = P3Config.from_yaml(path, {"chips": 3, "hardware_overrides.adc.bits": 6, "sigmas": [0, 0.5]})
    assert cfg.chips == 3 and cfg.sigmas == (0.0, 0.5)
    assert cfg.hardware_overrides == {"dac.bits": 6, "adc.bits": 6}
    with pytest.raises(ConfigError, match=r"^--set: chips: invalid value 0; allowed: an integer >= 1$"):
        P3Config.from_yaml(path, {"chips": 0})
    with pytest.raises(ConfigError, match=r"^--set: adc.bits: unknown key; allowed: model, .*hardware_overrides\."):
        P3Config.from_yaml(path, {"adc.bits": 6})
    with pytest.raises(ConfigError, match=r"^--set: hardware_overrides.adc.bits: invalid value 1; allowed"):
        P3Config.from_yaml(path, {"hardware_overrides.adc.bits": 1})
    # a bad value in the file is still located in the file when --set changes something else
    path = _write(tmp_path, "chips: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}:1: chips: invalid value 0"):
        P3Config.from_yaml(path, {"seed": 1})


# ------------------------------------------------------------------------------------------------ shipped configs


def test_shipped_configs_are_the_recorded_settings_of_the_shipped_results() -> None:
    """Each shipped config equals the config recorded in docs/results/p3/<name>.json (the per-run fields stages,
    force and out_dir aside)."""
    docs = Path(__file__).resolve().parents[1] / "docs" / "results" / "p3"
    assert list_configs() == [
        "lenet5-fmnist-sigma0.5",
        "lenet5-fmnist-sigma1",
        "lenet5-fmnist-weight-sigma1",
        "resnet20-fmnist-sigma0.5",
    ]
    for name in list_configs():
        cfg = P3Config.from_yaml(config_path(name)).as_dict()
        recorded = json.loads((docs / f"{name}.json").read_text())["config"]
        differ = {
            k: (cfg[k], recorded[k])
            for k in recorded
            if k not in ("stages", "force", "out_dir")
            and (list(cfg[k]) if isinstance(cfg[k], tuple) else cfg[k]) != recorded[k]
        }
        assert differ == {}, name
        assert cfg["stages"] == STAGES and cfg["device"] == "cpu"


def test_a_shipped_name_or_a_path_selects_the_config(tmp_path: Path) -> None:
    assert config_path("lenet5-fmnist-sigma0.5").name == "lenet5-fmnist-sigma0.5.yaml"
    own = _write(tmp_path, "chips: 2\n")
    assert config_path(str(own)) == own
    with pytest.raises(ConfigError, match=r"^config: no such file or shipped config 'nope'; allowed: .*resnet20"):
        config_path("nope")


# ------------------------------------------------------------------------------------------------ command line


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The single ``error:`` line of ``xbarlab correctnet run ARGS`` (exit status 2)."""
    from xbarlab.cli import main

    with pytest.raises(SystemExit) as info:
        main(["correctnet", "run", *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert info.value.code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "text", "start"),
    [
        (["--set", "chips=0"], None, "error: --set: chips: invalid value 0; allowed: an integer >= 1"),
        (["--set", "budget_pct=-1"], None, "error: --set: budget_pct: invalid value -1; allowed: a finite number >= 0"),
        (["--set", "sigmas=0,0.5"], None, "error: --set: sigmas: invalid value '0,0.5'; allowed: a non-empty list"),
        (["--set", "beta=0.1"], None, "error: --set: beta: unknown key; allowed: model, dataset, "),
        (["--set", "chips"], None, "error: --set 'chips': expected KEY=VALUE, e.g. chips=8"),
        (["--config", "{file}"], "chips: 8\nbogus: 1\n", "error: {file}:2: bogus: unknown key; allowed: model, "),
        (["--config", "{file}"], "test_images: many\n", "error: {file}:1: test_images: invalid value 'many'; allowed"),
        (["--config", "{file}"], "chips: 8\nsigmas: [0, 1\n", "error: {file}:3: invalid YAML"),
        (["--config", "{file}", "--set", "chips=2"], "chips: -3\n", "error: {file}:1: chips: invalid value -3"),
        (["--config", "nope.yaml"], None, "error: config: no such file or shipped config 'nope.yaml'; allowed: "),
        (["--config", "lenet5-fmnist-sigma1", "--resume", "never"], None, "error: resume: invalid value 'never'"),
        (["--device", "tpu"], None, "error: --device: invalid value 'tpu'"),
    ],
)
def test_cli_bad_input_is_one_line_before_any_work(
    args: list[str], text: str | None, start: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = _write(tmp_path, text) if text is not None else tmp_path / "p3.yaml"
    out = tmp_path / "out"
    line = _refused([*(a.replace("{file}", str(file)) for a in args), "--out", str(out)], capsys)
    assert line.startswith(start.replace("{file}", str(file))), line
    assert not out.exists()


def test_cli_lists_the_shipped_configs(capsys: pytest.CaptureFixture[str]) -> None:
    from xbarlab.cli import main

    try:
        main(["correctnet", "configs"])
    except SystemExit as exc:  # typer may exit with status 0 after a command
        assert exc.code in (0, None)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_configs()
    assert "docs/results/p3/lenet5-fmnist-sigma1.md" in lines[1]
