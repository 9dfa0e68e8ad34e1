"""Real trials (toy model on sklearn digits): metrics are sane, and local, process and Ray executors agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiments_util import toy_checkpoint, write_toy_sweep
from xbarlab.experiments import SweepSpec, load_spec, run_sweep, run_trial
from xbarlab.experiments.store import Store

__all__ = ["toy_checkpoint"]


def _metrics(store: Path) -> dict[str, dict[str, Any]]:
    """hash → metrics without the wall-time entries (those differ between runs)."""
    with Store(store, readonly=True) as db:
        return {r.hash: {k: v for k, v in r.metrics.items() if not k.endswith("_s")} for r in db.rows()}


@pytest.fixture(scope="module")
def toy_spec(toy_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> SweepSpec:
    path = write_toy_sweep(tmp_path_factory.mktemp("sweep") / "toy.yaml", toy_checkpoint, chips=2)
    return load_spec(path)


@pytest.fixture(scope="module")
def local_run(toy_spec: SweepSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("local") / "local.sqlite"
    summary = run_sweep(toy_spec, store=store, executor="local", threads=2)
    assert summary.ran == 8 and summary.failed == 0 and summary.complete
    return store


def test_local_metrics_are_real(local_run: Path, toy_spec: SweepSpec) -> None:
    with Store(local_run, readonly=True) as db:
        rows = db.rows()
        assert len(rows) == 8
        by = {(r.params["hardware.read_noise.sigma"], r.params["mitigation"], r.chip): r.metrics for r in rows}
        for chip in (0, 1):
            for sigma in (0.1, 0.3):
                pc2 = by[(sigma, "none", chip)]["pc2"]
                # FeFET read noise relative to G, once per weight: PC2 ≈ σ²/4 (papers.md §1.11)
                assert sigma**2 / 8 < pc2 < sigma**2 / 2
                assert by[(sigma, "bn_adapt", chip)]["pc2"] == pc2  # BN mitigation does not change W_NI
                assert by[(sigma, "bn_adapt", chip)]["bn_adapt_images"] == 128
            assert by[(0.3, "none", chip)]["pc2"] > 4 * by[(0.1, "none", chip)]["pc2"]
        for m in by.values():
            assert 0.0 <= m["accuracy"] <= 100.0 and m["test_samples"] == 150
        low = sum(by[(0.1, "none", c)]["accuracy"] for c in (0, 1)) / 2
        high = sum(by[(0.3, "none", c)]["accuracy"] for c in (0, 1)) / 2
        adapted = sum(by[(0.3, "bn_adapt", c)]["accuracy"] for c in (0, 1)) / 2
        assert low > 85.0 and high < low and adapted > high
        phases = db.timings()
        assert {"load_s", "program_s", "calibrate_s", "mitigation_s", "evaluate_s", "total_s"} <= set(phases)
        assert db.environments()[0]["torch"]
    # resuming a complete sweep runs nothing
    again = run_sweep(toy_spec, store=local_run, executor="local")
    assert again.ran == 0 and again.already_done == 8 and again.complete
    # one trial re-run in this process gives the stored metrics bit for bit
    from xbarlab.experiments import resolve_trials

    trial = resolve_trials(toy_spec)[5]
    out = run_trial(trial.config)
    assert out["error"] is None
    stored = _metrics(local_run)[trial.hash]
    assert {k: v for k, v in out["metrics"].items() if not k.endswith("_s")} == stored


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_process_executor_gives_identical_results(local_run: Path, toy_spec: SweepSpec, tmp_path: Path) -> None:
    store = tmp_path / "process.sqlite"
    summary = run_sweep(toy_spec, store=store, executor="process", workers=2)
    assert summary.ran == 8 and summary.failed == 0
    assert "process (2 workers × 1 threads)" in summary.executor
    assert _metrics(store) == _metrics(local_run)
    with Store(store, readonly=True) as db:
        assert len({r.worker for r in db.rows()}) == 2  # both workers ran trials


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.ray
def test_ray_executor_gives_identical_results(local_run: Path, toy_spec: SweepSpec, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray", reason="the Ray executor test needs the ray extra: pip install 'xbarlab[ray]'")
    from xbarlab.experiments import RayExecutor

    assert not ray.is_initialized()
    executor = RayExecutor(workers=2)  # ray.init(num_cpus=2, include_dashboard=False) on this machine
    try:
        assert ray.cluster_resources()["CPU"] == 2
        summary = run_sweep(toy_spec, store=tmp_path / "ray.sqlite", executor=executor)
    finally:
        executor.close()
    assert not ray.is_initialized()
    assert summary.ran == 8 and summary.failed == 0
    assert _metrics(tmp_path / "ray.sqlite") == _metrics(local_run)


def test_failed_trial_is_recorded_and_retried(toy_checkpoint: Path, tmp_path: Path) -> None:
    path = write_toy_sweep(tmp_path / "bad.yaml", toy_checkpoint, chips=1, sigmas="[0.1]")
    path.write_text(path.read_text().replace("pc2_layer: features.3", "pc2_layer: features.99"))
    summary = run_sweep(path, store=tmp_path / "bad.sqlite")
    assert summary.failed == 2 and summary.ran == 0 and not summary.complete
    assert "features.99" in summary.failures[0][1] and "features.3" in summary.failures[0][1]
    with Store(tmp_path / "bad.sqlite", readonly=True) as db:
        assert len(db.failures()) == 2 and db.count_results() == 0
        assert "Traceback" in db.failures()[0]["traceback"]
