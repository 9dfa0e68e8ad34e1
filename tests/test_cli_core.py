"""The core and mitigation commands end to end on a toy checkpoint (sklearn digits)."""

from __future__ import annotations

import json
from pathlib import Path

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
        "64",
        "--out",
        str(tmp_path),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    table = (tmp_path / "distortion.md").read_text()
    assert table.count("\n") >= 3 and "e-0" in table
    assert (tmp_path / "weight_scatter.png").stat().st_size > 1000


def test_cost_reports_savings() -> None:
    result = runner.invoke(app, ["cost", "--model", "lenet5", "--input-shape", "1,28,28"])
    assert result.exit_code == 0, result.output
    assert "saving" in result.output.lower()
