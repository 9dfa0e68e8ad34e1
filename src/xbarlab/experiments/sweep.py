"""Run a sweep: resolve its trials, skip the ones already in the store, run the rest, store each result.

>>> from xbarlab.experiments import run_sweep
>>> summary = run_sweep("p1-r1", executor="process", workers=2)     # doctest: +SKIP
>>> print(summary.line())                                            # doctest: +SKIP

Resuming is running the same sweep again: the store is asked for the finished trial hashes and only the
missing trials run. Each result is written in its own transaction as soon as the trial finishes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xbarlab.experiments.executors import Executor, make_executor
from xbarlab.experiments.spec import SweepSpec, Trial, load_spec, resolve_trials
from xbarlab.experiments.store import Store

__all__ = ["Progress", "SweepSummary", "plan_sweep", "run_sweep"]


@dataclass
class Progress:
    """Progress of a running sweep, passed to the ``on_progress`` callback after every trial."""

    total: int
    done: int
    failed: int
    ran: int
    pending: int
    elapsed_s: float
    last_hash: str | None = None
    last_metrics: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None

    @property
    def rate_per_min(self) -> float:
        """Trials finished per minute in this run."""
        return 60.0 * self.ran / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Estimated seconds to finish the remaining trials (None before the first one)."""
        if self.ran == 0:
            return None
        return self.elapsed_s / self.ran * self.pending


@dataclass(frozen=True)
class SweepSummary:
    """Outcome of :func:`run_sweep`."""

    name: str
    store: Path
    executor: str
    total: int
    already_done: int
    ran: int
    failed: int
    duplicates: int
    wall_s: float
    interrupted: bool = False
    failures: tuple[tuple[str, str], ...] = ()

    @property
    def complete(self) -> bool:
        """Every planned trial has a result."""
        return self.already_done + self.ran >= self.total

    def line(self) -> str:
        """One-line summary."""
        rate = 60.0 * self.ran / self.wall_s if self.wall_s > 0 and self.ran else 0.0
        state = "interrupted" if self.interrupted else ("complete" if self.complete else "incomplete")
        return (
            f"sweep {self.name}: {state}; {self.ran} trial(s) run, {self.already_done} already stored, "
            f"{self.failed} failed, {self.total} planned; {self.wall_s:.1f} s ({rate:.1f} trials/min) on "
            f"{self.executor}; store {self.store}"
        )


def plan_sweep(spec: SweepSpec, store: Store) -> tuple[list[Trial], list[Trial]]:
    """Resolve the trials, record the plan in the store; returns ``(all trials, unique pending trials)``."""
    trials = resolve_trials(spec, fingerprint=True)
    store.register_sweep(spec, trials)
    done = store.done_hashes({t.hash for t in trials})
    pending: list[Trial] = []
    seen: set[str] = set()
    for t in trials:
        if t.hash not in done and t.hash not in seen:
            pending.append(t)
            seen.add(t.hash)
    return trials, pending


def run_sweep(
    spec: SweepSpec | str | Path,
    *,
    store: str | Path | None = None,
    executor: str | Executor = "local",
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    limit: int | None = None,
    fail_fast: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
) -> SweepSummary:
    """Run the missing trials of a sweep and store their results.

    Args:
        spec: a :class:`SweepSpec`, a sweep file path, or a built-in sweep name.
        store: store path (default: the file's ``store`` key, else ``xbarlab-results/<name>.sqlite``).
        executor: ``local``, ``process``, ``ray`` or an :class:`Executor` instance.
        workers, threads, address: executor settings (see :func:`make_executor`).
        limit: run at most this many trials now (the rest stays pending).
        fail_fast: stop at the first failed trial.
        on_progress: called after every finished trial with a :class:`Progress`.
    """
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    store_path = Path(store) if store is not None else spec.default_store()
    t0 = time.perf_counter()
    with Store(store_path) as db:
        trials, pending = plan_sweep(spec, db)
        total_unique = len({t.hash for t in trials})
        already = total_unique - len(pending)
        duplicates = len(trials) - total_unique
        if limit is not None:
            pending = pending[: max(0, limit)]
        ran = failed = 0
        failures: list[tuple[str, str]] = []
        interrupted = False
        runner = executor if isinstance(executor, Executor) else None
        progress = Progress(total_unique, already, 0, 0, len(pending), 0.0)
        if on_progress is not None:
            on_progress(progress)
        if pending:
            if runner is None:
                runner = make_executor(str(executor), workers=workers, threads=threads, address=address)
            try:
                jobs = [(t.hash, t.config) for t in pending]
                for trial_hash, outcome in runner.run(jobs):
                    if outcome.get("error"):
                        failed += 1
                        failures.append((trial_hash, str(outcome["error"])))
                        db.add_failure(trial_hash, outcome)
                    else:
                        db.add_result(trial_hash, outcome, executor=runner.name)
                        ran += 1
                    progress = Progress(
                        total_unique,
                        already + ran,
                        failed,
                        ran,
                        len(pending) - ran - failed,
                        time.perf_counter() - t0,
                        trial_hash,
                        dict(outcome.get("metrics", {})),
                        outcome.get("error"),
                    )
                    if on_progress is not None:
                        on_progress(progress)
                    if fail_fast and failed:
                        interrupted = True
                        break
            except KeyboardInterrupt:
                interrupted = True
            finally:
                if not isinstance(executor, Executor):
                    runner.close()
        name = runner.describe() if runner is not None else str(getattr(executor, "name", executor))
        return SweepSummary(
            spec.name,
            store_path,
            name,
            total_unique,
            already,
            ran,
            failed,
            duplicates,
            time.perf_counter() - t0,
            interrupted,
            tuple(failures),
        )
