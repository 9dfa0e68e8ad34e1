"""Registries of the sweep building blocks: trial kinds and plugins; the mitigations are re-exported.

The **mitigation** registry lives in :mod:`xbarlab.mitigation.registry` (a mitigation is applied to every
programmed, drifted, calibrated chip before it is tested; a sweep file selects it by name and may change its
options). Its names are re-exported here for the sweep engine and older imports.

Because worker processes import modules afresh, a mitigation or trial kind defined outside :mod:`xbarlab` must
be importable: list its module under ``plugins`` in the sweep file (imported by the driver and by every worker
before the first trial, :func:`import_plugins`), or declare a mitigation lazily with
:func:`register_lazy_mitigation` (name → module imported on first use).

A **trial kind** is the function that runs one trial (``kind: accuracy`` is the default: see
:mod:`xbarlab.experiments.trial`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from xbarlab.mitigation.registry import (
    MitigationContext,
    MitigationDef,
    MitigationFn,
    MitigationOutcome,
    OptionLimit,
    check_options,
    get_mitigation,
    list_mitigations,
    register_lazy_mitigation,
    register_mitigation,
    require_bn,
)

__all__ = [
    "MitigationContext",
    "MitigationDef",
    "MitigationFn",
    "MitigationOutcome",
    "OptionLimit",
    "TrialKind",
    "check_options",
    "get_mitigation",
    "get_trial_kind",
    "import_plugins",
    "list_mitigations",
    "list_trial_kinds",
    "register_lazy_mitigation",
    "register_mitigation",
    "register_trial_kind",
    "require_bn",
]

TrialKind = Callable[[Mapping[str, Any]], dict[str, Any]]
"""Runs one resolved trial configuration and returns its metrics (see ``run_trial``)."""

_TRIAL_KINDS: dict[str, str | TrialKind] = {}


def register_trial_kind(name: str, fn: str | TrialKind) -> None:
    """Register a trial kind: a function or a ``"module:function"`` string imported on first use."""
    _TRIAL_KINDS[name] = fn


def get_trial_kind(name: str) -> TrialKind:
    """The function of trial kind ``name``; raises ``KeyError`` naming the registered kinds."""
    if name not in _TRIAL_KINDS:
        raise KeyError(f"unknown trial kind {name!r}; allowed: {', '.join(list_trial_kinds())}")
    fn = _TRIAL_KINDS[name]
    if isinstance(fn, str):
        module, _, attr = fn.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        _TRIAL_KINDS[name] = fn
    assert callable(fn)
    return fn


def list_trial_kinds() -> list[str]:
    """Registered trial kinds, sorted."""
    return sorted(_TRIAL_KINDS)


def import_plugins(modules: tuple[str, ...] | list[str]) -> None:
    """Import plugin modules (they register mitigations or trial kinds); errors name the module."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"plugins: cannot import {module!r}: {exc}") from exc


register_trial_kind("accuracy", "xbarlab.experiments.trial:accuracy_trial")
