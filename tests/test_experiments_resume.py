"""A sweep killed with SIGKILL mid-run and resumed ends with every trial exactly once and a sound database."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments_util import cli, toy_checkpoint, write_toy_sweep
from xbarlab.experiments import load_spec, resolve_trials, run_sweep, run_trial
from xbarlab.experiments.store import Store

__all__ = ["toy_checkpoint"]


def _count(store: Path) -> int:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


def _run_and_kill(args: list[str], cwd: Path, store: Path, at_least: int, timeout: float = 240) -> int:
    """Start the CLI, SIGKILL it once ``at_least`` results are stored (plus a random delay); returns the count."""
    code = "from xbarlab.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout
    try:
        while _count(store) < at_least:
            assert proc.poll() is None, f"sweep ended before it was killed: {proc.stderr.read()!r}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "sweep too slow"
            time.sleep(0.02)
        time.sleep(random.Random(at_least).uniform(0.0, 0.4))  # land somewhere inside the next trial
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return _count(store)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_after_sigkill(toy_checkpoint: Path, tmp_path: Path) -> None:
    sweep = write_toy_sweep(
        tmp_path / "resume.yaml", toy_checkpoint, name="resume", sigmas="[0.05, 0.1, 0.2]", chips=4, test_samples=300
    )
    store = tmp_path / "results" / "resume.sqlite"
    args = ["sweep", str(sweep), "--store", str(store), "--threads", "1", "--quiet"]
    first = _run_and_kill(args, tmp_path, store, at_least=3)
    assert 3 <= first < 24
    second = _run_and_kill([*args, "--executor", "process", "--workers", "2"], tmp_path, store, at_least=first + 3)
    assert first + 3 <= second < 24
    done = cli(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{24 - second} trial(s) run, {second} already stored, 0 failed, 24 planned" in done.stdout
    with Store(store, readonly=True) as db:
        assert db.integrity_check() == "ok"
        counts = db.result_counts()
        assert len(counts) == 24 and set(counts.values()) == {1}
        rows = db.rows("resume")
        assert sorted((r.point, r.chip) for r in rows) == [(p, c) for p in range(6) for c in range(4)]
        assert db.failures() == []
        n_timings = db._db.execute("SELECT COUNT(DISTINCT hash) FROM timings").fetchone()[0]
        assert n_timings == 24
        stored = {r.hash: r.metrics for r in rows}
    trials = resolve_trials(load_spec(sweep))
    assert {t.hash for t in trials} == set(stored)
    # results written before and after the kills equal a fresh in-process run
    for t in (trials[0], trials[-1]):
        fresh = run_trial(t.config)["metrics"]
        assert {k: v for k, v in fresh.items() if not k.endswith("_s")} == {
            k: v for k, v in stored[t.hash].items() if not k.endswith("_s")
        }
    # a second resume has nothing left to do
    again = run_sweep(sweep, store=store)
    assert again.ran == 0 and again.already_done == 24 and again.complete


def test_sweep_cli_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: b\nbase:\n  model: {pretrained: x}\n  data: {dataset: digits}\n  hardware: {preset: rram}\ngrid: {}\n"
    )
    res = cli(["sweep", str(bad)], cwd=tmp_path)
    assert res.returncode == 2
    assert f"{bad}:6: grid: empty grid" in res.stderr
    res = cli(["sweep", "p1-r1-read-noise", "--dry-run"], cwd=tmp_path)
    assert res.returncode == 0 and "21 grid points × 5 chips = 105 trials" in res.stdout
