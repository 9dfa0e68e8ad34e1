"""Results store: exactly-once results, concurrent writers, failures, re-planning, tidy export and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments_util import dedent
from xbarlab.experiments import Store, StoreError, parse_spec, resolve_trials
from xbarlab.experiments.results import tidy, write_table

SPEC = dedent(
    """
    name: s
    base:
      model: {checkpoint: /nonexistent/ckpt}
      data: {dataset: digits}
      hardware: {preset: rram}
    grid:
      hardware.read_noise.sigma: [0.05, 0.1, 0.2]
      mitigation: [none, bn_adapt]
    chips: 3
    """
)


def _outcome(acc: float, pc2: float = 0.001) -> dict:  # type: ignore[type-arg]
    return {
        "metrics": {"accuracy": acc, "pc2": pc2, "test_samples": 100},
        "timings": {"evaluate_s": 0.5, "total_s": 1.25},
        "env": {"host": "h", "torch": "t", "xbarlab": "x"},
        "worker": "h:1",
        "started_at": "2026-01-01T00:00:00",
        "finished_at": "2026-01-01T00:00:01",
        "error": None,
    }


def test_results_exactly_once_and_failures(tmp_path: Path) -> None:
    spec = parse_spec(SPEC)
    trials = resolve_trials(spec, fingerprint=False)
    with Store(tmp_path / "r.sqlite") as db:
        db.register_sweep(spec, trials)
        db.register_sweep(spec, trials)  # idempotent
        assert db.add_result(trials[0].hash, _outcome(90.0)) is True
        assert db.add_result(trials[0].hash, _outcome(11.0)) is False  # never overwritten nor duplicated
        failed = dict(_outcome(0.0), error="RuntimeError: boom", traceback="tb")
        assert db.add_result(trials[1].hash, failed) is False
        db.add_failure(trials[1].hash, failed)
        assert db.done_hashes() == {trials[0].hash}
        assert [f["attempts"] for f in db.failures()] == [2]
        assert db.add_result(trials[1].hash, _outcome(80.0)) is True
        assert db.failures() == []
        rows = db.rows("s")
        assert [r.metrics["accuracy"] for r in rows] == [90.0, 80.0]
        assert rows[0].params == {"hardware.read_noise.sigma": 0.05, "mitigation": "none"}
        assert db.result_counts() == {trials[0].hash: 1, trials[1].hash: 1}
        assert db.timings()["total_s"] == [1.25, 1.25]
        assert db.sweeps()[0]["planned"] == 18 and db.sweeps()[0]["done"] == 2
        assert db.integrity_check() == "ok"
        assert db._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # re-planning with a smaller grid keeps results of the trials that stay planned
        smaller = parse_spec(SPEC.replace("[0.05, 0.1, 0.2]", "[0.05]"))
        db.register_sweep(smaller, resolve_trials(smaller, fingerprint=False))
        assert db.sweeps()[0]["planned"] == 6 and db.sweeps()[0]["done"] == 2


_WRITER = """
import sys
from xbarlab.experiments import Store
path, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Store(path) as db:
    for i in range(start, stop):
        db.add_result(f"h{i:04d}", {"metrics": {"accuracy": float(i)}, "timings": {"total_s": 0.1},
                                    "env": {"writer": start}, "finished_at": "t", "error": None})
"""


def test_concurrent_writers(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with Store(path) as db, db.transaction() as tx:  # plan 200 trials so the foreign keys hold
        tx.executemany(
            "INSERT INTO trials(hash, config_json, created_at) VALUES (?, '{}', 't')",
            [(f"h{i:04d}",) for i in range(200)],
        )
    # four processes write overlapping ranges at the same time
    ranges = [(0, 120), (40, 160), (80, 200), (0, 200)]
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(a), str(b)]) for a, b in ranges]
    assert [p.wait(timeout=240) for p in procs] == [0, 0, 0, 0]
    with Store(path) as db:
        counts = db.result_counts()
        assert len(counts) == 200 and set(counts.values()) == {1}
        accs = dict(db._db.execute("SELECT hash, accuracy FROM results"))
        assert all(accs[f"h{i:04d}"] == float(i) for i in range(200))
        assert db.integrity_check() == "ok"
        assert len(db.environments()) >= 1


def test_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no such file"):
        Store(tmp_path / "missing.sqlite", readonly=True)
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database, just text " * 100)
    with pytest.raises(StoreError, match="not an xbarlab results store"):
        Store(bad)


def _filled_store(path: Path) -> list[float]:
    spec = parse_spec(SPEC)
    trials = resolve_trials(spec, fingerprint=False)
    accs = []
    with Store(path) as db:
        db.register_sweep(spec, trials)
        for i, t in enumerate(trials):
            acc = (
                90.0
                - 10 * t.params["hardware.read_noise.sigma"] * 10
                + i * 0.01
                + (5 if t.params["mitigation"] == "bn_adapt" else 0)
            )
            accs.append(acc)
            db.add_result(t.hash, _outcome(acc, pc2=t.params["hardware.read_noise.sigma"] ** 2 / 4))
    return accs


def test_tidy_export_formats(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    accs = _filled_store(path)
    with Store(path, readonly=True) as db:
        columns, records = tidy(db.rows())
    assert columns[:6] == ["sweep", "point", "chip", "seed", "hardware.read_noise.sigma", "mitigation"]
    assert [r["accuracy"] for r in records] == pytest.approx(accs)
    assert records[0]["hardware"] == "rram" and records[0]["wall_time_s"] == 1.25
    text = write_table(columns, records, "csv")
    assert text is not None and text.splitlines()[0].startswith("sweep,point,chip,seed")
    assert len(text.splitlines()) == 19
    assert f"{accs[5]}" in text
    lines = write_table(columns, records, "json")
    assert lines is not None and json.loads(lines.splitlines()[3])["accuracy"] == pytest.approx(accs[3])
    table = write_table(columns, records, "table")
    assert table is not None and "bn_adapt" in table
    with pytest.raises(ValueError, match="allowed: table, csv, parquet, json"):
        write_table(columns, records, "xlsx")


def test_results_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xbarlab.cli import app

    path = tmp_path / "t.sqlite"
    accs = _filled_store(path)
    runner = CliRunner()
    res = runner.invoke(app, ["results", str(path), "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("\n") == 19 and str(accs[7]) in res.stdout
    out = tmp_path / "x.csv"
    res = runner.invoke(app, ["results", str(path), "-f", "csv", "-o", str(out)])
    assert res.exit_code == 0 and out.read_text().count("\n") == 19
    res = runner.invoke(app, ["results", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2


def test_parquet_export(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="parquet export needs the parquet extra (pyarrow)")
    path = tmp_path / "t.sqlite"
    accs = _filled_store(path)
    with Store(path, readonly=True) as db:
        columns, records = tidy(db.rows())
    out = tmp_path / "r.parquet"
    assert write_table(columns, records, "parquet", out) is None
    table = pq.read_table(out)
    assert table.column_names == columns
    assert table.column("accuracy").to_pylist() == pytest.approx(accs)
    with pytest.raises(ValueError, match="needs an output file"):
        write_table(columns, records, "parquet")


def test_store_in_a_read_only_folder_opens_for_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    spec = parse_spec(SPEC)
    trials = resolve_trials(spec, fingerprint=False)
    with Store(tmp_path / "r.sqlite") as db:
        db.register_sweep(spec, trials)
        db.add_result(trials[0].hash, _outcome(90.0))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK else real_access(p, mode))
    (tmp_path / "r.sqlite-shm").unlink(missing_ok=True)
    with Store(tmp_path / "r.sqlite", readonly=True) as db:
        assert [r.metrics["accuracy"] for r in db.rows("s")] == [90.0]
    assert not (tmp_path / "r.sqlite-shm").exists()  # nothing written next to an archived store


def test_foreign_sqlite_files_are_refused(tmp_path: Path) -> None:
    import sqlite3

    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE inventory (item TEXT)")
    with pytest.raises(StoreError, match=r"an SQLite database of something else .*inventory"):
        Store(other)
    with sqlite3.connect(other) as db:  # untouched: no xbarlab tables were added
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["inventory"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cli_refuses_bad_store_files_sweep_names_and_executor_options(tmp_path: Path) -> None:
    from experiments_util import cli

    spec = parse_spec(SPEC)
    with Store(tmp_path / "r.sqlite") as db:
        db.register_sweep(spec, resolve_trials(spec, fingerprint=False))
    (tmp_path / "junk.sqlite").write_text("junk\n")
    result = cli(["results", "junk.sqlite"], tmp_path)
    assert result.returncode == 2 and "not an SQLite results store" in result.stderr
    result = cli(["results", "r.sqlite", "--sweep", "nosuch"], tmp_path)
    assert result.returncode == 2 and "--sweep: invalid value 'nosuch'; allowed: one of s" in result.stderr
    (tmp_path / "s.yaml").write_text(SPEC)
    for args, text in (
        (["--executor", "dask"], "allowed: local, process, ray"),
        (["--threads", "0"], "--threads"),
        (["--workers", "0"], "--workers"),
    ):
        result = cli(["sweep", "s.yaml", *args], tmp_path)
        assert result.returncode == 2 and text in result.stderr, result.stderr
