"""The core and mitigation commands end to end on a toy checkpoint (sklearn digits)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiments_util import toy_checkpoint  # noqa: F401  (pytest fixture)
from xbarlab.cli import app

runner = CliRunner()


def test_presets_lists_every_preset_with_units() -> None:
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0, result.output
    for name in ("ideal", "fefet", "pcm-i", "pcm-ii", "rram", "pcm-nandakumar"):
        assert name in result.output
    result = runner.invoke(app, ["presets", "fefet"])
    assert "r_on_ohm: 222220.0" in result.output


def test_evaluate_writes_json_with_ci(toy_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "eval.json"
    args = [
        "evaluate",
        "--checkpoint",
        str(toy_checkpoint),
        "--hw",
        "fefet",
        "--chips",
        "3",
        "--set",
        "read_noise.sigma=0.2",
        "--max-test",
        "120",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["n"] == 3 and len(data["accuracies"]) == 3 and data["seeds"] == [0, 1, 2]
    assert data["ci95_low"] <= data["mean"] <= data["ci95_high"]
    assert data["hardware_config"]["read_noise"]["sigma"] == 0.2
    assert 0 <= data["mean"] <= 100 and data["clean_accuracy"] > 80


def test_evaluate_rejects_bad_override(toy_checkpoint: Path) -> None:  # noqa: F811
    args = ["evaluate", "--checkpoint", str(toy_checkpoint), "--hw", "rram", "--set", "device.on_off_ratio=0.5"]
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert "device.on_off_ratio" in str(result.exception)


def test_mitigate_compares_methods_on_the_same_chips(toy_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "mitigate.json"
    args = [
        "mitigate",
        "--checkpoint",
        str(toy_checkpoint),
        "--hw",
        "fefet",
        "--chips",
        "2",
        "--set",
        "read_noise.sigma=0.3",
        "--method",
        "none",
        "--method",
        "bn_adapt",
        "--option",
        "bn_adapt.num_batches=2",
        "--test-samples",
        "150",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert [r["method"] for r in rows] == ["none", "bn_adapt"]
    assert rows[1]["options"]["num_batches"] == 2
    assert all(len(r["accuracies"]) == 2 for r in rows)
    assert rows[1]["info"][0]["bn_adapt_images"] > 0


def test_distortion_writes_table_and_scatter(toy_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    args = [
        "distortion",
        "--checkpoint",
        str(toy_checkpoint),
        "--hw",
        "fefet",
        "--calib-images",
        "128",
        "--out",
        str(tmp_path),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    table = (tmp_path / "distortion.md").read_text()
    assert table.count("\n") >= 3 and "e-0" in table and "chip seed 0" in table
    assert (tmp_path / "weight_scatter.png").stat().st_size > 1000


def test_cost_reports_savings() -> None:
    result = runner.invoke(app, ["cost", "--model", "resnet20", "--input-shape", "1,32,32"])
    assert result.exit_code == 0, result.output
    assert "saving" in result.output.lower()
    result = runner.invoke(app, ["cost", "--model", "lenet5", "--input-shape", "1,28,28"])  # no BN to fine-tune
    assert isinstance(result.exception, ValueError) and "no affine BatchNorm" in str(result.exception)
    assert runner.invoke(app, ["cost", "--model", "resnet20", "--input-shape", "1,32"]).exit_code == 2


def test_evaluate_chip_seed_gives_the_same_accuracy_whatever_the_run(
    toy_checkpoint: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Chip seed s is calibrated on the same images whether it is chip 1 of --seed 0 or chip 0 of --seed 1."""
    base = ["evaluate", "--checkpoint", str(toy_checkpoint), "--hw", "rram", "--set", "read_noise.sigma=0.3"]
    base += ["--max-test", "150", "--batch-size", "32", "--calib-batches", "1"]
    both, second = tmp_path / "both.json", tmp_path / "second.json"
    assert runner.invoke(app, [*base, "--chips", "2", "--seed", "0", "--out", str(both)]).exit_code == 0
    assert runner.invoke(app, [*base, "--chips", "1", "--seed", "1", "--out", str(second)]).exit_code == 0
    a, b = json.loads(both.read_text()), json.loads(second.read_text())
    assert a["seeds"][1] == b["seeds"][0] == 1
    assert a["accuracies"][1] == b["accuracies"][0]


def test_device_and_out_are_checked_before_any_work(toy_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    import torch

    base = ["evaluate", "--checkpoint", str(toy_checkpoint), "--hw", "rram"]
    result = runner.invoke(app, [*base, "--device", "tpu0"])
    assert result.exit_code == 2 and "--device" in result.output
    if not torch.cuda.is_available():
        result = runner.invoke(app, [*base, "--device", "cuda"])
        assert result.exit_code == 2 and "CUDA is not available" in result.output
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, [*base, "--out", str(blocker / "sub" / "x.json")])
    assert result.exit_code == 2 and "cannot create its folder" in result.output
    assert runner.invoke(app, [*base, "--max-test", "0"]).exit_code == 2


def test_console_script_prints_one_line_errors(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from xbarlab.cli import main

    monkeypatch.delenv("XBARLAB_DEBUG", raising=False)
    monkeypatch.setattr("sys.argv", ["xbarlab", "presets", "nope"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: preset: unknown hardware preset 'nope'; allowed: one of fefet, ideal,")
    assert "Traceback" not in err
    monkeypatch.setenv("XBARLAB_DEBUG", "1")
    with pytest.raises(ValueError, match="preset: unknown hardware preset 'nope'"):
        main()


def test_result_json_is_strict_json(tmp_path: Path) -> None:
    from xbarlab.jsonio import write_json

    path = tmp_path / "r.json"
    write_json(path, {"snr_db": float("inf"), "x": [1.0, float("-inf"), float("nan")], "t": (2,)})
    strict = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))
    assert strict == {"snr_db": "inf", "x": [1.0, "-inf", "nan"], "t": [2]}


def test_mitigate_is_reproducible_per_chip_seed(toy_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    """bn_adapt draws augmented batches: chip seed s gives the same numbers in every run and every chip range."""
    base = ["mitigate", "--checkpoint", str(toy_checkpoint), "--hw", "fefet", "--set", "read_noise.sigma=0.3"]
    base += ["--method", "bn_adapt", "--option", "bn_adapt.num_batches=2", "--test-samples", "150"]
    outs = [tmp_path / f"{i}.json" for i in range(3)]
    for out, chips, seed in zip(outs, ("2", "2", "1"), ("0", "0", "1"), strict=True):
        result = runner.invoke(app, [*base, "--chips", chips, "--seed", seed, "--out", str(out)])
        assert result.exit_code == 0, result.output
    a, b, c = (json.loads(o.read_text())["results"][0]["accuracies"] for o in outs)
    assert a == b and a[1] == c[0]
    assert json.loads(outs[0].read_text())["settings"]["seed"] == 0


def test_mitigate_checks_options_and_bn_before_running(toy_checkpoint: Path) -> None:  # noqa: F811
    base = ["mitigate", "--checkpoint", str(toy_checkpoint), "--hw", "fefet", "--chips", "1"]
    result = runner.invoke(app, [*base, "--method", "bn_adapt", "--option", "bn_adpt.num_batches=2"])
    assert result.exit_code == 2 and "bn_adpt" in result.output
    result = runner.invoke(
        app, ["mitigate", "--pretrained", "lenet5-fmnist", "--dataset", "fashion-mnist-mini", "--hw", "rram"]
    )
    assert isinstance(result.exception, ValueError) and "no BatchNorm layer" in str(result.exception)
