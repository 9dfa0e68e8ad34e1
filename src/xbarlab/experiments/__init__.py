"""Experiments at scale: declarative sweeps, a resumable SQLite results store, local/process/Ray executors.

>>> from xbarlab.experiments import load_spec, run_sweep, Store
>>> spec = load_spec("p1-r1-read-noise")                        # a shipped sweep name (or any path)
>>> summary = run_sweep(spec, executor="process", workers=2)    # doctest: +SKIP
>>> rows = Store(summary.store).rows(spec.name)                 # doctest: +SKIP

See ``docs/experiments.md`` for the sweep-file reference, the store layout and the executors.
"""

from __future__ import annotations

from xbarlab.experiments.executors import (
    EXECUTORS,
    Executor,
    LocalExecutor,
    ProcessExecutor,
    RayExecutor,
    make_executor,
)
from xbarlab.experiments.identity import canonical_json, format_value, trial_hash
from xbarlab.experiments.registry import (
    MitigationDef,
    MitigationOutcome,
    get_mitigation,
    list_mitigations,
    list_trial_kinds,
    register_lazy_mitigation,
    register_mitigation,
    register_trial_kind,
)
from xbarlab.experiments.spec import (
    GridAxis,
    ReportSpec,
    SweepSpec,
    SweepSpecError,
    Trial,
    builtin_sweep,
    list_builtin_sweeps,
    load_spec,
    parse_spec,
    resolve_trials,
)
from xbarlab.experiments.store import ResultRow, Store, StoreError
from xbarlab.experiments.sweep import Progress, SweepSummary, plan_sweep, run_sweep
from xbarlab.experiments.trial import TrialContext, run_trial

__all__ = [
    "EXECUTORS",
    "Executor",
    "GridAxis",
    "LocalExecutor",
    "MitigationDef",
    "MitigationOutcome",
    "ProcessExecutor",
    "Progress",
    "RayExecutor",
    "ReportSpec",
    "ResultRow",
    "Store",
    "StoreError",
    "SweepSpec",
    "SweepSpecError",
    "SweepSummary",
    "Trial",
    "TrialContext",
    "builtin_sweep",
    "canonical_json",
    "format_value",
    "get_mitigation",
    "list_builtin_sweeps",
    "list_mitigations",
    "list_trial_kinds",
    "load_spec",
    "make_executor",
    "parse_spec",
    "plan_sweep",
    "register_lazy_mitigation",
    "register_mitigation",
    "register_trial_kind",
    "resolve_trials",
    "run_sweep",
    "run_trial",
    "trial_hash",
]
