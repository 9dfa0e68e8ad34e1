"""Results store: one SQLite database per store path (stdlib ``sqlite3``, WAL mode).

Tables:

* ``trials``: every trial ever planned: ``hash`` (primary key), its resolved configuration (JSON).
* ``sweeps`` / ``sweep_trials``: which sweep (by name) planned which trial, with the swept values
  (``params``), the chip index and the grid point; a trial shared by two sweeps is stored and run once.
* ``results``: one row per finished trial: ``hash`` (primary key), ``accuracy``, ``pc2``, ``wall_time_s``
  as columns and every metric as JSON, the worker, the environment and the start/finish times.
* ``environments``: versions, host and device of the workers (deduplicated by content).
* ``timings``: phase timings per trial (load, convert, program, calibrate, mitigation, evaluate, total).
* ``failures``: the last error of a trial that failed (a failed trial is not a result and runs again on
  resume).

Every write is one transaction (``BEGIN IMMEDIATE`` … ``COMMIT``); results are inserted with
``INSERT … ON CONFLICT(hash) DO NOTHING``, so a trial is stored exactly once however many workers or
sweeps finish it, and a process killed at any point (even with SIGKILL) leaves the database consistent:
SQLite's journal rolls back an unfinished transaction. Concurrent writers wait on ``busy_timeout``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbarlab.experiments.identity import canonical_json
from xbarlab.experiments.spec import SweepSpec, Trial

__all__ = ["SCHEMA_VERSION", "ResultRow", "Store", "StoreError"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    hash TEXT PRIMARY KEY,
    config_json TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    spec_text TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    source TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_trials (
    sweep TEXT NOT NULL REFERENCES sweeps(name),
    hash TEXT NOT NULL REFERENCES trials(hash),
    point INTEGER NOT NULL,
    chip INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    params_json TEXT NOT NULL,
    PRIMARY KEY (sweep, point, chip)
);
CREATE TABLE IF NOT EXISTS environments (
    id TEXT PRIMARY KEY,
    env_json TEXT NOT NULL,
    first_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    hash TEXT PRIMARY KEY REFERENCES trials(hash),
    accuracy REAL,
    pc2 REAL,
    wall_time_s REAL,
    metrics_json TEXT NOT NULL,
    env_id TEXT REFERENCES environments(id),
    worker TEXT,
    executor TEXT,
    started_at TEXT,
    finished_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS timings (
    hash TEXT NOT NULL REFERENCES results(hash),
    phase TEXT NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (hash, phase)
);
CREATE TABLE IF NOT EXISTS failures (
    hash TEXT PRIMARY KEY REFERENCES trials(hash),
    error TEXT NOT NULL,
    traceback TEXT,
    worker TEXT,
    failed_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS sweep_trials_by_hash ON sweep_trials(hash);
"""


class StoreError(RuntimeError):
    """The store cannot be opened or is not an xbarlab results store."""


def _check_writable(path: Path) -> None:
    """Create the folder of a store to be written and check that the store can be written there.

    Raises :class:`StoreError` naming the path and the OS reason (read-only folder, permission denied, ...),
    not "not a results store".
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"store {path}: cannot create the folder {path.parent} ({exc.strerror})") from exc
    for target in (path.parent, path) if path.exists() else (path.parent,):  # WAL files live next to the store
        if not os.access(target, os.W_OK):
            raise StoreError(f"store {path}: {target} is not writable (permission denied); allowed: a writable path")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ResultRow:
    """One finished trial as read back from the store (a row of the tidy table)."""

    sweep: str
    hash: str
    point: int
    chip: int
    seed: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    config: dict[str, Any]
    wall_time_s: float | None
    worker: str | None
    executor: str | None
    finished_at: str

    @property
    def mitigation(self) -> str:
        """The mitigation's name."""
        return str(self.config.get("mitigation", {}).get("name", "none"))


class Store:
    """A results store at ``path`` (created with its folder when missing). Use as a context manager.

    ``readonly``: the store must exist already; its schema is not created (reading an existing store).
    """

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise StoreError(f"store {self.path}: no such file")
        if not readonly:
            _check_writable(self.path)
        uri = f"file:{self.path}?mode={'rw' if readonly else 'rwc'}"
        if readonly and not os.access(self.path.parent, os.W_OK):
            # an archived store in a read-only folder: WAL mode cannot create its -shm file there, so open the
            # file as immutable (a cleanly closed store has no pending WAL content)
            uri = f"file:{self.path}?mode=ro&immutable=1"
        try:
            self._db = sqlite3.connect(
                uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:
                self._db.close()
                raise StoreError(
                    f"store {self.path}: an SQLite database of something else (tables "
                    f"{', '.join(sorted(tables)[:5])}); allowed: a new file or an xbarlab results store"
                )
            if not readonly:
                self._retry(lambda: self._db.execute("PRAGMA journal_mode = WAL"))
                self._db.execute("PRAGMA synchronous = NORMAL")
                self._db.execute("PRAGMA foreign_keys = ON")
                with self.transaction() as db:
                    db.executescript_in_tx(_SCHEMA)  # type: ignore[attr-defined]
                    db.execute(
                        "INSERT INTO meta(key, value) VALUES ('schema_version', ?) ON CONFLICT(key) DO NOTHING",
                        (str(SCHEMA_VERSION),),
                    )
            version = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError as exc:  # read-only file or folder, full disk, I/O error: the OS reason
            raise StoreError(f"store {self.path}: cannot {'read' if readonly else 'write'} the store ({exc})") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"store {self.path}: not an xbarlab results store ({exc})") from exc
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise StoreError(f"store {self.path}: schema version {version and version[0]!r}; allowed: {SCHEMA_VERSION}")

    # ------------------------------------------------------------------------------------------ plumbing
    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _retry(fn: Any, attempts: int = 50) -> Any:
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or i == attempts - 1:
                    raise
                time.sleep(0.05 * (i + 1))
        return None

    @contextmanager
    def transaction(self) -> Iterator[_Tx]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on any exception)."""
        self._retry(lambda: self._db.execute("BEGIN IMMEDIATE"))
        try:
            yield _Tx(self._db)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._retry(lambda: self._db.execute("COMMIT"))

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` (``"ok"`` for a sound database)."""
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    # ------------------------------------------------------------------------------------------ writing
    def register_sweep(self, spec: SweepSpec, trials: Iterable[Trial]) -> None:
        """Record the sweep and its planned trials (one transaction; replaces the sweep's previous plan).

        Results are keyed by trial hash, so re-planning a sweep never loses results: trials that are still
        planned keep theirs.
        """
        now = _now()
        spec_json = canonical_json(
            {
                "name": spec.name,
                "description": spec.description,
                "grid": [[a.path, list(a.values)] for a in spec.grid],
                "chips": spec.chips,
                "seed": spec.seed,
                "report": {
                    "title": spec.report.title,
                    **({"metric": spec.report.metric} if spec.report.metric else {}),
                    "x": spec.report.x,
                    "log_x": spec.report.log_x,
                    "pareto": list(spec.report.pareto) if spec.report.pareto else None,
                },
            }
        )
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sweeps(name, spec_text, spec_json, source, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET spec_text = excluded.spec_text, "
                "spec_json = excluded.spec_json, source = excluded.source, updated_at = excluded.updated_at",
                (spec.name, spec.text, spec_json, spec.source, now, now),
            )
            db.executemany(
                "INSERT INTO trials(hash, config_json, created_at) VALUES (?, ?, ?) ON CONFLICT(hash) DO NOTHING",
                [(t.hash, canonical_json(t.config), now) for t in trials],
            )
            db.execute("DELETE FROM sweep_trials WHERE sweep = ?", (spec.name,))
            db.executemany(
                "INSERT INTO sweep_trials(sweep, hash, point, chip, seed, params_json) "
                "VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(sweep, point, chip) DO UPDATE SET hash = excluded.hash, seed = excluded.seed, "
                "params_json = excluded.params_json",
                [(spec.name, t.hash, t.point, t.chip, t.seed, canonical_json(t.params)) for t in trials],
            )

    def add_result(self, trial_hash: str, outcome: Mapping[str, Any], *, executor: str | None = None) -> bool:
        """Store a finished trial in one transaction; returns False when it was already stored.

        ``outcome`` is what :func:`xbarlab.experiments.run_trial` returns. A failed outcome (``error`` set)
        is recorded in ``failures`` instead and returns False.
        """
        if outcome.get("error"):
            self.add_failure(trial_hash, outcome)
            return False
        metrics = dict(outcome.get("metrics", {}))
        env = dict(outcome.get("env", {}))
        env_json = canonical_json(env)
        import hashlib

        env_id = hashlib.sha256(env_json.encode()).hexdigest()[:16]
        timings = dict(outcome.get("timings", {}))
        with self.transaction() as db:
            db.execute(
                "INSERT INTO environments(id, env_json, first_seen) VALUES (?, ?, ?) ON CONFLICT(id) DO NOTHING",
                (env_id, env_json, _now()),
            )
            cur = db.execute(
                "INSERT INTO results(hash, accuracy, pc2, wall_time_s, metrics_json, env_id, worker, "
                "executor, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(hash) DO NOTHING",
                (
                    trial_hash,
                    _num(metrics.get("accuracy")),
                    _num(metrics.get("pc2")),
                    _num(timings.get("total_s")),
                    canonical_json(metrics),
                    env_id,
                    outcome.get("worker"),
                    executor,
                    outcome.get("started_at"),
                    outcome.get("finished_at") or _now(),
                ),
            )
            inserted = cur.rowcount == 1
            if inserted:
                db.executemany(
                    "INSERT INTO timings(hash, phase, seconds) VALUES (?, ?, ?) ON CONFLICT(hash, phase) DO NOTHING",
                    [(trial_hash, k, float(v)) for k, v in timings.items()],
                )
                db.execute("DELETE FROM failures WHERE hash = ?", (trial_hash,))
        return inserted

    def add_failure(self, trial_hash: str, outcome: Mapping[str, Any]) -> None:
        """Record a failed attempt (the trial stays pending)."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO failures(hash, error, traceback, worker, failed_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(hash) DO UPDATE SET error = excluded.error, traceback = excluded.traceback, "
                "worker = excluded.worker, failed_at = excluded.failed_at, attempts = failures.attempts + 1",
                (
                    trial_hash,
                    str(outcome.get("error")),
                    outcome.get("traceback"),
                    outcome.get("worker"),
                    _now(),
                ),
            )

    # ------------------------------------------------------------------------------------------ reading
    def done_hashes(self, hashes: Iterable[str] | None = None) -> set[str]:
        """Hashes with a stored result (restricted to ``hashes`` when given)."""
        done = {row[0] for row in self._db.execute("SELECT hash FROM results")}
        return done if hashes is None else done & set(hashes)

    def count_results(self) -> int:
        """Number of stored results."""
        return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def sweeps(self) -> list[dict[str, Any]]:
        """The sweeps recorded in the store (name, spec JSON, source, times, planned and done counts)."""
        out = []
        for name, spec_json, spec_text, source, created, updated in self._db.execute(
            "SELECT name, spec_json, spec_text, source, created_at, updated_at FROM sweeps ORDER BY created_at"
        ):
            planned, done = self._db.execute(
                "SELECT COUNT(*), COUNT(r.hash) FROM sweep_trials s LEFT JOIN results r ON r.hash = s.hash "
                "WHERE s.sweep = ?",
                (name,),
            ).fetchone()
            out.append(
                {
                    "name": name,
                    "spec": json.loads(spec_json),
                    "spec_text": spec_text,
                    "source": source,
                    "created_at": created,
                    "updated_at": updated,
                    "planned": planned,
                    "done": done,
                }
            )
        return out

    def failures(self) -> list[dict[str, Any]]:
        """Failed trials that have no result (error, traceback, attempts)."""
        rows = self._db.execute(
            "SELECT f.hash, f.error, f.traceback, f.worker, f.failed_at, f.attempts FROM failures f "
            "LEFT JOIN results r ON r.hash = f.hash WHERE r.hash IS NULL ORDER BY f.failed_at"
        )
        keys = ("hash", "error", "traceback", "worker", "failed_at", "attempts")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def environments(self) -> list[dict[str, Any]]:
        """Distinct worker environments with the number of results each produced."""
        rows = self._db.execute(
            "SELECT e.id, e.env_json, COUNT(r.hash) FROM environments e "
            "LEFT JOIN results r ON r.env_id = e.id GROUP BY e.id ORDER BY e.first_seen"
        )
        return [{"id": i, **json.loads(j), "results": n} for i, j, n in rows]

    def timings(self, sweep: str | None = None) -> dict[str, list[float]]:
        """Phase → seconds over the stored results (of one sweep when given)."""
        query = "SELECT t.phase, t.seconds FROM timings t"
        args: tuple[Any, ...] = ()
        if sweep is not None:
            query += " JOIN sweep_trials s ON s.hash = t.hash WHERE s.sweep = ?"
            args = (sweep,)
        out: dict[str, list[float]] = {}
        for phase, seconds in self._db.execute(query, args):
            out.setdefault(phase, []).append(float(seconds))
        return out

    def rows(self, sweep: str | None = None) -> list[ResultRow]:
        """Finished trials joined with their sweep membership (every sweep, or one), in grid order."""
        query = (
            "SELECT s.sweep, s.hash, s.point, s.chip, s.seed, s.params_json, r.metrics_json, t.config_json, "
            "r.wall_time_s, r.worker, r.executor, r.finished_at FROM sweep_trials s "
            "JOIN results r ON r.hash = s.hash JOIN trials t ON t.hash = s.hash"
        )
        args: tuple[Any, ...] = ()
        if sweep is not None:
            query += " WHERE s.sweep = ?"
            args = (sweep,)
        query += " ORDER BY s.sweep, s.point, s.chip"
        return [
            ResultRow(sw, h, p, c, sd, json.loads(pj), json.loads(mj), json.loads(cj), wt, wk, ex, fin)
            for sw, h, p, c, sd, pj, mj, cj, wt, wk, ex, fin in self._db.execute(query, args)
        ]

    def result_counts(self) -> dict[str, int]:
        """Number of result rows per trial hash (always 1: the primary key guarantees it)."""
        return {h: n for h, n in self._db.execute("SELECT hash, COUNT(*) FROM results GROUP BY hash")}


class _Tx:
    """The connection inside a transaction (execute / executemany / a schema script)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[tuple[Any, ...]]) -> sqlite3.Cursor:
        return self._db.executemany(sql, rows)

    def executescript_in_tx(self, script: str) -> None:
        """Run ``;``-separated statements inside the open transaction (``executescript`` would commit)."""
        for statement in script.split(";"):
            if statement.strip():
                self._db.execute(statement)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
