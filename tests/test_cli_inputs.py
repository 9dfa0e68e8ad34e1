"""Every bad input ends with exit status 2, ONE ``error: <field>: …`` line on stderr, and nothing written.

The cases drive :func:`xbarlab.cli.main` in-process (the console script's own error handling); none trains or
evaluates a model (at most one tiny toy sweep trial builds the results store of the report/results cases).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from experiments_util import toy_checkpoint, write_toy_sweep  # noqa: F401  (pytest fixture)
from xbarlab.cli import main


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of ``xbarlab ARGS``."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def assert_refused(args: list[str], field: str, capsys: pytest.CaptureFixture[str], out: Path | None = None) -> str:
    """Exit 2, exactly one ``error:`` line, naming ``field``; ``out`` (the --out/-o path) not created."""
    code, err = run(args, capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert field in lines[0], lines[0]
    assert "╭" not in err and "Traceback" not in err, err
    if out is not None:
        assert not out.exists(), f"{out} was written"
    return lines[0]


# ---------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize(
    ("args", "field", "message"),
    [
        (["demo", "--chips", "0"], "--chips", "invalid value 0; allowed: >= 1"),
        (["sweep", "x.yaml", "--limit", "-1"], "--limit", "invalid value -1; allowed: >= 1"),
        (["train", "-m", "resnet20", "-d", "digits", "--seed", "-1"], "--seed", "allowed: >= 0"),
        (["train", "-m", "resnet20", "-d", "digits", "--lr", "0"], "--lr", "allowed: > 0"),
        (["train", "-m", "resnet20", "-d", "digits", "--momentum", "1.5"], "--momentum", "allowed: [0, 1)"),
        (["train", "-m", "resnet20", "-d", "digits", "--epochs", "0"], "--epochs", ">= 1"),
        (["evaluate", "--hw", "fefet", "--pretrained", "x", "--time", "-1"], "--time", "allowed: >= 0"),
        (["evaluate", "--hw", "fefet", "--pretrained", "x", "--max-test", "0"], "--max-test", ">= 1"),
        (["mitigate", "--hw", "fefet", "--pretrained", "x", "--chips", "0"], "--chips", ">= 1"),
        (["distortion", "--hw", "fefet", "--calib-images", "64"], "--calib-images", ">= 128"),
        (["bench", "--repeats", "0"], "--repeats", ">= 1"),
        (["p2", "evaluate", "--threads", "0"], "--threads", ">= 1"),
        (["p2", "drift", "--chips", "0"], "--chips", ">= 1"),
        (["p2", "train-detector", "--lr", "-1"], "--lr", "> 0"),
        (["sweep", "x.yaml", "--workers", "0"], "--workers", ">= 1"),
        (["evaluate", "--hw", "fefet", "--chips", "abc"], "--chips", "integer"),
        (["evaluate", "--nosuch"], "--nosuch", "no such option"),
        (["evaluate", "--pretrained", "x"], "--hw", "missing"),
        (["sweep"], "FILE", "missing"),
        (["nosuchcommand"], "xbarlab", "No such command"),
        (["evaluate", "--hw", "fefet", "--pretrained", "nosuch"], "--pretrained", "unknown pre-trained model"),
        (["evaluate", "--hw", "fefet", "--checkpoint", "/nonexistent/c"], "--checkpoint", "not found"),
        (
            ["evaluate", "--hw", "fefet", "--pretrained", "resnet20-fmnist", "--dataset", "nosuch"],
            "--dataset",
            "unknown",
        ),
        (["mitigate", "--hw", "fefet", "--pretrained", "resnet20-fmnist", "--method", "nosuch"], "--method", "unknown"),
        (["train", "-m", "nosuch", "-d", "digits"], "--model", "unknown model"),
        (["train", "-m", "resnet20", "-d", "nosuch"], "--dataset", "unknown dataset"),
        (["cost", "--model", "nosuch"], "--model", "unknown model"),
        (["p2", "drift", "--device", "tpu"], "--device", "allowed: cpu, cuda"),
        (["p2", "evaluate", "--device", "tpu"], "--device", "allowed: cpu, cuda"),
        (["distortion", "--hw", "fefet", "--device", "tpu"], "--device", "allowed: cpu, cuda"),
        (["mitigate", "--hw", "fefet", "--pretrained", "resnet20-fmnist", "--device", "tpu"], "--device", "cpu"),
        (["train", "-m", "resnet20", "-d", "digits", "--device", "tpu"], "--device", "allowed: cpu, cuda"),
    ],
)
def test_bad_option_values_are_one_line(
    args: list[str], field: str, message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    flags = {"evaluate": "--out", "mitigate": "--out", "demo": "-o", "p2": "-o", "distortion": "--out"}
    flag = {**flags, "correctnet": "--out"}.get(args[0])
    line = assert_refused([*args, flag, str(out)] if flag else args, field, capsys, out)
    assert message in line


def test_help_still_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["evaluate", "--help"], capsys)
    assert code == 0
    code, _ = run(["--help"], capsys)
    assert code == 0


# ------------------------------------------------------------------------------------------------- YAML
def test_empty_and_duplicate_hardware_yaml_refused_with_file_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval.json"
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    base = ["evaluate", "--pretrained", "resnet20-fmnist", "--max-test", "5", "--chips", "1", "--out", str(out)]
    line = assert_refused([*base, "--hw", str(empty)], f"{empty}:1", capsys, out)
    assert "empty document" in line
    dup = tmp_path / "dup.yaml"
    dup.write_text("read_noise:\n  kind: relative_to_G\n  sigma: 0.1\n  sigma: 0.9\n")
    line = assert_refused([*base, "--hw", str(dup)], f"{dup}:4", capsys, out)
    assert "duplicate key 'sigma'" in line


def test_yamlio_one_parser() -> None:
    from xbarlab import yamlio
    from xbarlab.hardware import HardwareConfig

    with pytest.raises(yamlio.YamlInputError, match=r"^f\.yaml:3: duplicate key 'a'"):
        yamlio.load_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")
    with pytest.raises(yamlio.YamlInputError, match="empty document"):
        HardwareConfig.from_yaml("# only a comment\n")
    assert yamlio.load_yaml("x: 1e-1\n") == {"x": 0.1}
    # a merge key followed by an explicit key is not a duplicate
    assert yamlio.load_yaml("b: &b {k: 1}\nc:\n  <<: *b\n  k: 2\n")["c"] == {"k": 2}


# ------------------------------------------------------------------------------------------------- data
def test_data_of_the_wrong_shape_refused_before_any_work(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    toy_checkpoint: Path,  # noqa: F811
) -> None:
    out = tmp_path / "eval.json"
    # 8×8 digits on the 28×28 ResNet-20 ran and scored 8 %
    base = ["--hw", "fefet", "--pretrained", "resnet20-fmnist", "--dataset", "digits", "--out", str(out)]
    line = assert_refused(["evaluate", *base, "--max-test", "5", "--chips", "1"], "--dataset", capsys, out)
    assert "1×8×8" in line and "1×28×28" in line
    assert_refused(["mitigate", *base, "--test-samples", "5", "--chips", "1"], "--dataset", capsys, out)
    folder = tmp_path / "distortion"
    args = ["distortion", "--hw", "fefet", "--checkpoint", str(toy_checkpoint), "--dataset", "fashion-mnist-mini"]
    assert_refused([*args, "--out", str(folder)], "--dataset", capsys, folder)


def test_check_model_input_three_channels_on_one_channel_model(toy_checkpoint: Path) -> None:  # noqa: F811
    from xbarlab.checkpoint import load_checkpoint
    from xbarlab.data.base import ImageDataset
    from xbarlab.data.check import DataShapeError, check_model_input

    model, meta = load_checkpoint(toy_checkpoint)
    rgb = ImageDataset(
        torch.zeros(4, 3, 8, 8, dtype=torch.uint8),
        torch.zeros(4, dtype=torch.int64),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        name="rgb",
    )
    with pytest.raises(DataShapeError, match=r"--dataset: rgb gives inputs of shape 3×8×8.*1×8×8"):
        check_model_input(model, rgb, meta)
    with pytest.raises(DataShapeError, match=r"--dataset: rgb inputs of shape 3×8×8 do not fit"):
        check_model_input(model, rgb, {})  # no metadata: the probe forward pass finds it
    grey = ImageDataset(
        torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), mean=(0.5,), std=(0.5,), name="g"
    )
    check_model_input(model, grey, meta)  # fits: no error
    many = ImageDataset(
        torch.zeros(2, 1, 8, 8, dtype=torch.uint8),
        torch.tensor([0, 1]),
        mean=(0.5,),
        std=(0.5,),
        classes=[str(i) for i in range(20)],
        name="many",
    )
    with pytest.raises(DataShapeError, match="20 classes, the model vgg-small has 10 outputs"):
        check_model_input(model, many, meta)


# --------------------------------------------------------------------------- nothing written before checks
def test_options_checked_before_output_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p2"
    line = assert_refused(["p2", "drift", "--readout", "nosuch", "-o", str(out)], "--readout", capsys, out)
    assert "allowed: forward, weights, conductance" in line
    assert_refused(["p2", "drift", "--preset", "nosuch", "-o", str(out)], "--preset", capsys, out)
    assert_refused(["p2", "drift", "--times", "1,-5", "-o", str(out)], "--times", capsys, out)
    assert_refused(["p2", "evaluate", "--models", "x=/nonexistent/m", "-o", str(out)], "/nonexistent/m", capsys, out)
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    line = assert_refused(["train", "-m", "lenet5", "-d", "digits", "--out", str(a_file)], "--out", capsys)
    assert "is a file" in line and a_file.read_text() == ""
    run_dir = tmp_path / "run"
    args = ["p2", "train-detector", "--epochs", "1", "--train-count", "4", "--test-count", "4", "-o", str(run_dir)]
    assert_refused([*args, "--dataset", "nosuch"], "--dataset", capsys, run_dir)
    assert_refused([*args, "--init-from", str(tmp_path / "missing")], "--init-from", capsys, run_dir)
    demo = tmp_path / "demo"
    assert_refused(["demo", "--executor", "nosuch", "-o", str(demo)], "--executor", capsys, demo)
    assert_refused(["demo", "--device", "tpu", "-o", str(demo)], "--device", capsys, demo)
    evaluate = tmp_path / "eval.json"
    args = ["evaluate", "--hw", "fefet", "--pretrained", "resnet20-fmnist", "--out", str(evaluate)]
    assert_refused([*args, "--device", "tpu0"], "--device", capsys, evaluate)
    assert_refused([*args, "--hw", "nosuch"], "--hw", capsys, evaluate)


def test_ray_missing_is_refused_before_the_store(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    toy_checkpoint: Path,  # noqa: F811
) -> None:
    import importlib.util

    spec = write_toy_sweep(tmp_path / "toy.yaml", toy_checkpoint)
    store = tmp_path / "toy.sqlite"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    line = assert_refused(["sweep", str(spec), "--executor", "ray", "--store", str(store)], "--executor", capsys)
    assert "Ray is not installed" in line
    assert not store.exists()
    assert_refused(["sweep", str(spec), "--executor", "nosuch", "--store", str(store)], "--executor", capsys)
    assert_refused(["sweep", str(spec), "--device", "tpu", "--store", str(store)], "--device", capsys)
    assert not store.exists()


def test_sweep_inputs_checked_before_the_store(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    toy_checkpoint: Path,  # noqa: F811
) -> None:
    spec = write_toy_sweep(tmp_path / "toy.yaml", toy_checkpoint)
    store = tmp_path / "toy.sqlite"
    corrupt = tmp_path / "corrupt"
    (tmp_path / "corrupt.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "corrupt.json").write_text(Path(f"{toy_checkpoint}.json").read_text())
    for dry in ([], ["--dry-run"]):
        args = ["sweep", str(spec), "--store", str(store), *dry]
        line = assert_refused([*args, "--set", f"base.model.checkpoint={corrupt}"], "base.model.checkpoint", capsys)
        assert str(spec) in line
        line = assert_refused([*args, "--set", "base.data.dataset=fashion-mnist-mini"], "base.data.dataset", capsys)
        assert "1×28×28" in line and "1×8×8" in line
        assert not store.exists()
    dup = tmp_path / "dup.yaml"
    dup.write_text(spec.read_text() + "chips: 3\n")
    assert_refused(["sweep", str(dup), "--dry-run"], f"{dup}:", capsys)
    line = assert_refused(["sweep", str(spec), "--set", "base.device=tpu", "--dry-run"], "base.device", capsys)
    assert "allowed: cpu, cuda, cuda:N" in line
    missing = ["--set", "base.data.dataset=mnist", "--set", "base.data.data_dir=/nonexistent/mnist"]
    line = assert_refused(["sweep", str(spec), "--store", str(store), *missing], "base.data.data_dir", capsys)
    assert "/nonexistent/mnist" in line and not store.exists()
    empty_hw = tmp_path / "empty_hw.yaml"
    empty_hw.write_text("")
    with_file = tmp_path / "file_hw.yaml"
    with_file.write_text(spec.read_text().replace("{preset: fefet}", f"{{file: {empty_hw}}}"))
    line = assert_refused(["sweep", str(with_file), "--dry-run"], "base.hardware.file", capsys)
    assert f"{empty_hw}:1: empty document" in line


# ---------------------------------------------------------------------------------------- stores, -o
@pytest.fixture
def toy_store(tmp_path: Path, toy_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> Path:  # noqa: F811
    spec = write_toy_sweep(tmp_path / "toy.yaml", toy_checkpoint, sigmas="[0.1]", chips=1, test_samples=30)
    store = tmp_path / "toy.sqlite"
    code, err = run(["sweep", str(spec), "--store", str(store), "--quiet", "--limit", "1"], capsys)
    assert code == 0, err
    return store


def test_report_and_results_outputs(toy_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "report"
    line = assert_refused(["report", str(toy_store), "-o", str(folder), "--sweep", "nosuch"], "--sweep", capsys, folder)
    assert "allowed: one of toy" in line
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    line = assert_refused(["report", str(toy_store), "-o", str(a_file)], "-o", capsys)
    assert "is a file" in line and a_file.read_text() == "keep"
    a_dir = tmp_path / "a_dir"
    a_dir.mkdir()
    line = assert_refused(["results", str(toy_store), "-o", str(a_dir)], "-o", capsys)
    assert "is a folder" in line and list(a_dir.iterdir()) == []
    out = tmp_path / "x.csv"
    assert_refused(["results", str(toy_store), "-f", "xlsx", "-o", str(out)], "--format", capsys, out)


def test_store_write_errors_name_the_os_reason(
    toy_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xbarlab.experiments.store import Store, StoreError

    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(StoreError, match=r"cannot create the folder .*blocker"):
        Store(blocker / "s.sqlite")
    real = sqlite3.connect

    def full_disk(*args: object, **kwargs: object) -> sqlite3.Connection:
        db = real(*args, **kwargs)  # type: ignore[arg-type]

        class Full:
            def execute(self, sql: str, *rest: object) -> object:
                if sql.startswith("PRAGMA journal_mode"):
                    raise sqlite3.OperationalError("database or disk is full")
                return db.execute(sql, *rest)

            def close(self) -> None:
                db.close()

        return Full()  # type: ignore[return-value]

    monkeypatch.setattr(sqlite3, "connect", full_disk)
    with pytest.raises(StoreError, match=r"toy\.sqlite: cannot write the store \(database or disk is full\)") as info:
        Store(toy_store)
    assert "not an xbarlab results store" not in str(info.value)


# --------------------------------------------------------------------------------- confidence intervals
def test_confidence_interval_stays_in_range_and_is_marked() -> None:
    from xbarlab.cli.core import _spread
    from xbarlab.stats import format_ci, summarize

    plain = summarize([99.9, 100.0, 100.0])
    assert plain.ci95_high == pytest.approx(100.1101, abs=1e-4)  # the Student-t interval passes 100 %
    s = summarize([99.9, 100.0, 100.0], bounds=(0.0, 100.0))
    assert s.ci95_low == pytest.approx(plain.ci95_low) and s.ci95_high == 100.0 and s.bounded
    assert s.ci95_half_width == pytest.approx(plain.ci95_half_width) == pytest.approx(4.303 * s.std / 3**0.5)
    assert format_ci(s) == "[99.82, 100.00]†"
    assert _spread(s.n, s.std, s.ci95_low, s.ci95_high, s.bounded)[1] == "[99.82, 100.00]†"
    inside = summarize([50.0, 52.0, 54.0], bounds=(0.0, 100.0))
    assert not inside.bounded and inside.ci95_low == pytest.approx(52.0 - 4.303 * 2.0 / 3**0.5)
    low = summarize([0.0, 0.5, 0.2], bounds=(0.0, 100.0))
    assert low.ci95_low == 0.0 and low.bounded
    with pytest.raises(ValueError, match=r"values: invalid value 101.0; allowed: \[0, 100\]"):
        summarize([99.0, 101.0], bounds=(0.0, 100.0))


def test_report_table_marks_bounded_interval() -> None:
    from xbarlab.reports.aggregate import group_rows, normalize_rows
    from xbarlab.reports.tables import _summary_table

    rows = normalize_rows(
        [
            {"params": {"x": 1}, "mitigation": "none", "metrics": {"accuracy": a}, "chip": i, "sweep": "s"}
            for i, a in enumerate((99.9, 100.0, 100.0))
        ]
    )
    block = _summary_table(group_rows("s", rows), ())
    assert any(h.startswith("95 % CI (†") for h in block.headers)
    assert any("[99.82, 100.00]†" in cell for row in block.rows for cell in row)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize(
    "args",
    [
        ["evaluate", "--hw", "fefet", "--pretrained", "resnet20-fmnist"],
        ["mitigate", "--hw", "fefet", "--pretrained", "resnet20-fmnist"],
        ["demo"],
        ["distortion", "--hw", "fefet"],
        ["p2", "drift"],
        ["p2", "evaluate"],
        ["train", "-m", "resnet20", "-d", "digits"],
        ["correctnet", "run", "--set", "model=lenet5-fmnist"],
    ],
)
def test_cuda_unavailable_is_one_line_before_any_work(
    args: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--device cuda`` without a GPU: exit 2, one ``error:`` line naming --device and ``allowed: cpu``."""
    out = tmp_path / "out"
    flags = {"evaluate": "--out", "mitigate": "--out", "demo": "-o", "p2": "-o", "distortion": "--out"}
    flag = {**flags, "correctnet": "--out"}.get(args[0])
    full = [*args, "--device", "cuda", *([flag, str(out)] if flag else [])]
    line = assert_refused(full, "--device", capsys, out)
    assert "cuda requested but torch.cuda.is_available() is False" in line and "allowed: cpu" in line, line
