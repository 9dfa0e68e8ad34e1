"""Registries of the sweep building blocks: trial kinds and plugins; the mitigations are re-exported.

The **mitigation** registry lives in :mod:`xbarlab.mitigation.registry` (a mitigation is applied to every
programmed, drifted, calibrated chip before it is tested; a sweep file selects it by name and may change its
options). Its names are re-exported here for the sweep engine and older imports.

Because worker processes import modules afresh, a mitigation or trial kind defined outside :mod:`xbarlab` must
be importable: list its module under ``plugins`` in the sweep file (imported by the driver and by every worker
before the first trial, :func:`import_plugins`), or declare a mitigation lazily with
:func:`register_lazy_mitigation` (name → module imported on first use).

A **trial kind** is the function that runs one trial (``kind: accuracy`` is the default: see
:mod:`xbarlab.experiments.trial`), registered with what the sweep engine must know of it before any trial
runs (:class:`TrialKindDef`): the model names it accepts under ``model.pretrained``, how a model's identity
(SHA-256) is read, how its inputs are checked, and the extra ``data`` keys it takes. A paper's trial kind
(e.g. ``p2_task`` of :mod:`xbarlab.papers.p2.trial`) registers itself in its own module, which a sweep file
lists under ``plugins``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
from xbarlab.schema import Field

__all__ = [
    "MitigationContext",
    "MitigationDef",
    "MitigationFn",
    "MitigationOutcome",
    "OptionLimit",
    "TrialKind",
    "TrialKindDef",
    "check_options",
    "get_mitigation",
    "get_trial_kind",
    "get_trial_kind_def",
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


@dataclass(frozen=True)
class TrialKindDef:
    """A registered trial kind: the function running one trial and what the sweep engine needs to plan it.

    ``run``: the function, or ``"module:function"`` imported on first use. The hooks default to the
    classification models of :mod:`xbarlab.checkpoint` (``None``):

    * ``pretrained()``: the names allowed under ``model.pretrained``;
    * ``fingerprint(model)``: the SHA-256 of the weights of a ``{"pretrained": ...}`` / ``{"checkpoint": ...}``
      mapping (part of each trial's identity); raises ``FileNotFoundError`` for a missing file;
    * ``check_inputs(settings)``: read the model and data of one settings mapping and raise
      ``ValueError``/``OSError`` when they cannot work together (``xbarlab sweep`` calls it before any trial);
    * ``data_fields``: extra keys of the ``data`` section, with their types, defaults and ranges;
    * ``model_fields``: extra keys of the ``model`` section (e.g. P3's compensation branches).
    """

    name: str
    run: str | TrialKind
    pretrained: Callable[[], list[str]] | None = None
    fingerprint: Callable[[Mapping[str, Any]], str] | None = None
    check_inputs: Callable[[Mapping[str, Any]], None] | None = None
    data_fields: Mapping[str, Field] = field(default_factory=dict)
    model_fields: Mapping[str, Field] = field(default_factory=dict)


_TRIAL_KINDS: dict[str, TrialKindDef] = {}


def register_trial_kind(
    name: str,
    fn: str | TrialKind,
    *,
    pretrained: Callable[[], list[str]] | None = None,
    fingerprint: Callable[[Mapping[str, Any]], str] | None = None,
    check_inputs: Callable[[Mapping[str, Any]], None] | None = None,
    data_fields: Mapping[str, Field] | None = None,
    model_fields: Mapping[str, Field] | None = None,
) -> None:
    """Register a trial kind: a function or a ``"module:function"`` string, and its hooks (:class:`TrialKindDef`)."""
    _TRIAL_KINDS[name] = TrialKindDef(
        name, fn, pretrained, fingerprint, check_inputs, dict(data_fields or {}), dict(model_fields or {})
    )


def get_trial_kind_def(name: str) -> TrialKindDef:
    """The registration of trial kind ``name``; raises ``KeyError`` naming the registered kinds."""
    if name not in _TRIAL_KINDS:
        raise KeyError(f"unknown trial kind {name!r}; allowed: {', '.join(list_trial_kinds())}")
    return _TRIAL_KINDS[name]


def get_trial_kind(name: str) -> TrialKind:
    """The function of trial kind ``name``; raises ``KeyError`` naming the registered kinds."""
    definition = get_trial_kind_def(name)
    fn = definition.run
    if isinstance(fn, str):
        module, _, attr = fn.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        _TRIAL_KINDS[name] = dataclasses.replace(definition, run=fn)
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
