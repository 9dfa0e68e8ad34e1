"""Sweep files: validation errors name key and line; grid expansion, seeds and trial identity; shipped files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from experiments_util import dedent, toy_checkpoint, write_toy_sweep
from xbarlab.experiments import (
    SweepSpecError,
    list_builtin_sweeps,
    load_spec,
    parse_spec,
    resolve_trials,
    trial_hash,
)

__all__ = ["toy_checkpoint"]

VALID = dedent(
    """
    name: t
    base:
      model: {checkpoint: /nonexistent/ckpt}
      data: {dataset: digits}
      hardware: {preset: fefet}
    grid:
      hardware.read_noise.sigma: [0.05, 0.1]
      mitigation: [none, bn_adapt]
    chips: 3
    seed: 10
    """
)


def _error(text: str) -> SweepSpecError:
    with pytest.raises(SweepSpecError) as info:
        parse_spec(text, source="s.yaml")
    return info.value


def test_valid_file_expands_grid_and_seeds() -> None:
    spec = parse_spec(VALID, source="s.yaml")
    assert spec.num_points == 4 and spec.num_trials == 12
    trials = resolve_trials(spec, fingerprint=False)
    assert len(trials) == 12
    assert [t.seed for t in trials[:3]] == [10, 11, 12]
    assert [t.chip for t in trials[:3]] == [0, 1, 2]
    assert trials[0].params == {"hardware.read_noise.sigma": 0.05, "mitigation": "none"}
    assert trials[-1].params == {"hardware.read_noise.sigma": 0.1, "mitigation": "bn_adapt"}
    assert trials[0].config["hardware"]["read_noise"]["sigma"] == 0.05
    assert trials[0].config["hardware"]["name"] == "fefet"
    assert trials[3].config["mitigation"]["options"]["num_batches"] == 20  # defaults are resolved
    assert len({t.hash for t in trials}) == 12
    again = resolve_trials(parse_spec(VALID), fingerprint=False)
    assert [t.hash for t in again] == [t.hash for t in trials]


def test_unknown_key_names_key_and_line() -> None:
    err = _error(VALID.replace("chips: 3", "chipz: 3"))
    assert err.key == "chipz" and err.line == 9
    assert "s.yaml:9: chipz: unknown key" in str(err) and "chips" in str(err)
    err = _error(VALID.replace("data: {dataset: digits}", "data: {datset: digits}"))
    assert err.key == "base.data.datset" and err.line == 4
    err = _error(VALID.replace("hardware: {preset: fefet}", "hardware: {preset: fefet, read_nose: {sigma: 1}}"))
    assert err.key == "base.hardware.read_nose" and err.line == 5
    err = _error(VALID.replace("hardware.read_noise.sigma:", "hardware.read_noise.sigmaa:"))
    assert err.key == "grid.hardware.read_noise.sigmaa" and err.line == 7
    assert "sigmaa" in str(err) and "sigma" in str(err)
    err = _error(VALID.replace("mitigation: [none", "mitgation: [none"))
    assert err.key == "grid.mitgation" and err.line == 8


def test_empty_grid_names_key_and_line() -> None:
    text = VALID.replace(
        "grid:\n  hardware.read_noise.sigma: [0.05, 0.1]\n  mitigation: [none, bn_adapt]\n", "grid: {}\n"
    )
    err = _error(text)
    assert err.key == "grid" and err.line == 6 and "empty grid" in str(err)
    err = _error(VALID.replace("[0.05, 0.1]", "[]"))
    assert err.key == "grid.hardware.read_noise.sigma" and err.line == 7 and "empty" in str(err)
    err = _error(VALID.replace("grid:\n", "gridd:\n"))
    assert err.key == "gridd" and err.line == 6


def test_bad_type_names_key_line_value_and_allowed() -> None:
    err = _error(VALID.replace("chips: 3", "chips: three"))
    assert err.key == "chips" and err.line == 9
    assert "'three'" in str(err) and "an integer >= 1" in str(err)
    err = _error(VALID.replace("[0.05, 0.1]", "[0.05, high]"))
    assert err.key == "grid.hardware.read_noise.sigma" and err.line == 7
    assert "'high'" in str(err) and "a number" in str(err)
    err = _error(VALID.replace("[0.05, 0.1]", "0.05"))
    assert err.key == "grid.hardware.read_noise.sigma" and "a non-empty list" in str(err)
    err = _error(VALID.replace("data: {dataset: digits}", "data: {dataset: digits, test_samples: -5}"))
    assert err.key == "base.data.test_samples" and err.line == 4 and "-5" in str(err)
    err = _error(VALID.replace("[0.05, 0.1]", "[0.05, -0.1]"))  # HardwareConfig rejects it
    assert err.key == "grid.hardware.read_noise.sigma" and err.line == 7
    assert "-0.1" in str(err) and ">= 0" in str(err)
    err = _error(VALID.replace("[none, bn_adapt]", "[none, bn_magic]"))
    assert err.key == "grid.mitigation" and err.line == 8 and "bn_finetune" in str(err)
    err = _error(VALID.replace("preset: fefet", "preset: fefett"))
    assert err.key == "base.hardware.preset" and err.line == 5 and "fefet" in str(err)


def test_other_errors() -> None:
    err = _error(VALID.replace("seed: 10", "seed: 10\nchips: 4"))
    assert err.key == "chips" and err.line == 11 and "duplicate" in str(err)
    err = _error(VALID.replace("chips: 3", "chips: [3"))
    assert err.key == "<yaml>" and err.line is not None
    err = _error(VALID.replace("  model: {checkpoint: /nonexistent/ckpt}\n", ""))
    assert err.key == "base.model" and err.line == 2
    text = VALID + "base2: 1\n"
    assert _error(text).key == "base2"
    opts = VALID.replace(
        "  hardware: {preset: fefet}\n",
        "  hardware: {preset: fefet}\n  mitigation_options:\n    bn_adapt: {num_batchez: 3}\n",
    )
    err = _error(opts)
    assert err.key == "base.mitigation_options.bn_adapt" and err.line == 7 and "num_batchez" in str(err)


def test_option_ranges_and_names_are_checked_before_any_trial() -> None:
    def with_options(text: str) -> str:
        return VALID.replace(
            "  hardware: {preset: fefet}\n", f"  hardware: {{preset: fefet}}\n  mitigation_options:\n{text}"
        )

    err = _error(with_options("    bn_finetune: {lr: -1}\n"))
    assert err.key == "base.mitigation_options.bn_finetune" and "'lr'" in str(err) and "allowed: > 0" in str(err)
    err = _error(with_options("    bn_adapt: {num_batches: 0}\n"))
    assert "allowed: >= 1" in str(err)
    err = _error(with_options("    bn_adapt: {momentum: 5.0}\n"))
    assert "allowed: > 0 and <= 1" in str(err)
    err = _error(with_options("    drift_comp_global: {readout: bogus}\n"))
    assert "allowed: one of forward, weights, conductance" in str(err)
    err = _error(VALID.replace("{dataset: digits}", "{dataset: nosuch}"))
    assert err.key == "base.data.dataset" and "fashion-mnist" in str(err)
    err = _error(VALID.replace("{checkpoint: /nonexistent/ckpt}", "{pretrained: nosuch}"))
    assert err.key == "base.model.pretrained" and "resnet20-fmnist" in str(err)
    err = _error(VALID.replace("chips: 3", "chips: 30000"))  # 4 points × 30,000 chips
    assert err.key == "chips" and "= 120,000 trials; allowed: at most 100,000" in str(err)


def test_yaml_12_floats_and_mapping_values() -> None:
    spec = parse_spec(VALID.replace("hardware.read_noise.sigma: [0.05, 0.1]", "drift_s: [1, 1e10, 1.5e-1]"))
    assert spec.grid[0].values == (1, 1e10, 0.15)
    text = VALID.replace(
        "hardware.read_noise.sigma: [0.05, 0.1]", "hardware.crossbar: [{rows: 64, cols: 64}, {rows: 128, cols: 128}]"
    )
    trials = resolve_trials(parse_spec(text), fingerprint=False)
    assert trials[-1].config["hardware"]["crossbar"] == {"rows": 128, "cols": 128}
    assert trials[-1].params["hardware.crossbar"] == {"rows": 128, "cols": 128}


def test_set_overrides() -> None:
    spec = parse_spec(VALID, overrides={"chips": 1, "base.data.test_samples": 50, "grid.mitigation": ["none"]})
    assert spec.chips == 1 and spec.num_trials == 2
    assert spec.base["data"]["test_samples"] == 50
    with pytest.raises(SweepSpecError) as info:
        parse_spec(VALID, overrides={"chips": 0})
    assert info.value.key == "chips" and info.value.line is None and "--set" in str(info.value)
    with pytest.raises(SweepSpecError) as info:  # a hardware value from --set is not blamed on the file's line
        parse_spec(VALID, overrides={"base.hardware.read_noise.sigma": -1.0})
    assert info.value.key == "base.hardware.read_noise.sigma" and info.value.line is None
    assert str(info.value).endswith("(set with --set)")


def test_identity_uses_fingerprint_not_location(toy_checkpoint: Path, tmp_path: Path) -> None:
    a = write_toy_sweep(tmp_path / "a.yaml", toy_checkpoint)
    copy = tmp_path / "elsewhere" / "model"
    copy.parent.mkdir()
    for suffix in (".json", ".safetensors"):
        shutil.copy(str(toy_checkpoint) + suffix, str(copy) + suffix)
    b = write_toy_sweep(tmp_path / "b.yaml", copy)
    ta = resolve_trials(load_spec(a))
    tb = resolve_trials(load_spec(b))
    assert ta[0].config["model"]["sha256"] and len(ta[0].config["model"]["sha256"]) == 64
    assert [t.hash for t in ta] == [t.hash for t in tb]
    assert ta[0].config["model"]["checkpoint"] != tb[0].config["model"]["checkpoint"]
    # the hash covers the seed and every resolved setting
    changed = dict(ta[0].config, seed=99)
    assert trial_hash(changed) != ta[0].hash
    hw = dict(ta[0].config["hardware"], crossbar={"rows": 32, "cols": 64})
    assert trial_hash(dict(ta[0].config, hardware=hw)) != ta[0].hash
    assert trial_hash(dict(ta[0].config)) == ta[0].hash


def _architecture(model: dict[str, str]):  # type: ignore[no-untyped-def]
    from xbarlab.models import build_model

    if model.get("pretrained") == "resnet20-fmnist":
        return build_model("resnet20", in_channels=1)
    if model.get("pretrained") == "vit-tiny-fmnist":
        return build_model("vit-tiny")
    assert "vgg16" in str(model.get("checkpoint"))
    return build_model("vgg16-bn")


@pytest.mark.parametrize("name", list_builtin_sweeps())
def test_builtin_sweeps_parse_and_resolve(name: str) -> None:
    from xbarlab.checkpoint import list_pretrained
    from xbarlab.experiments.spec import build_hardware
    from xbarlab.hardware import HardwareConfig

    spec = load_spec(name)
    assert spec.name == name and spec.num_trials >= 6
    trials = resolve_trials(spec, fingerprint=False)
    assert len(trials) == spec.num_points * spec.chips
    for t in trials[:: spec.chips]:
        hw = HardwareConfig.from_dict(t.config["hardware"])
        assert hw.to_dict() == t.config["hardware"]
    assert build_hardware(spec.base["hardware"]).name
    probe = spec.base["metrics"]["pc2_layer"]
    if probe:
        names = {n for n, _ in _architecture(spec.base["model"]).named_modules()}
        assert probe in names
    if spec.base["model"].get("pretrained") in list_pretrained():
        fingerprinted = resolve_trials(spec)
        assert all(t.config["model"]["sha256"] for t in fingerprinted)


def test_paper_settings() -> None:
    r1 = load_spec("p1-r1-read-noise")
    assert r1.grid[0].values == (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35)
    assert set(r1.grid[1].values) == {"none", "bn_adapt", "bn_finetune"}
    r3 = load_spec("p1-r3-drift")
    assert r3.grid[0].values[0] == 1 and r3.grid[0].values[-1] == 1e10 and len(r3.grid[0].values) == 11
    r4 = resolve_trials(load_spec("p1-r4-parasitics"), fingerprint=False)
    sizes = {(t.config["hardware"]["crossbar"]["rows"], t.config["hardware"]["parasitics"]["enabled"]) for t in r4}
    assert sizes == {(64, True), (128, True)}
    noise = {t.config["hardware"]["read_noise"]["kind"] for t in r4}
    assert noise == {"none", "relative_to_G"}
    r2 = resolve_trials(load_spec("p1-r2-devices"), fingerprint=False)
    assert {t.config["hardware"]["name"] for t in r2} == {"pcm-i", "pcm-ii", "rram"}


def test_builtin_sweeps_found_in_core_and_paper_folders() -> None:
    """P1/P2/P3 sweep files ship in ``xbarlab/papers/<paper>/sweeps``, the core's examples in experiments/configs."""
    from xbarlab.experiments.spec import builtin_sweep

    names = list_builtin_sweeps()
    assert builtin_sweep("p1-r1-read-noise").parent.as_posix().endswith("xbarlab/papers/p1/sweeps")
    assert builtin_sweep("p2-noise-aware-bn").parent.as_posix().endswith("xbarlab/papers/p2/sweeps")
    assert builtin_sweep("p3-correctnet").parent.as_posix().endswith("xbarlab/papers/p3/sweeps")
    assert builtin_sweep("vit-ln").parent.as_posix().endswith("xbarlab/experiments/configs")
    assert {"p1-r2-devices", "p1-r3-drift", "p1-r4-parasitics", "example-presets"} <= set(names)
    with pytest.raises(KeyError, match=r"unknown built-in sweep 'nope'; allowed: .*p1-r1-read-noise"):
        builtin_sweep("nope")


def test_builtin_sweep_shipped_twice_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xbarlab.experiments import spec as spec_module

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.yaml").write_text("name: same\n")
    monkeypatch.setattr(spec_module, "_sweep_dirs", lambda: [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(RuntimeError, match="built-in sweep 'same' is shipped twice"):
        list_builtin_sweeps()
