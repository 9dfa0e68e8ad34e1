"""The mitigation registry: every method a sweep, ``xbarlab mitigate`` or a paper can select by name.

A **mitigation** is applied to every programmed (drifted, calibrated) chip before it is tested. It is
registered with its options and their defaults; a sweep file selects it by name (``mitigation: bn_adapt``)
and may change options (``mitigation_options: {bn_adapt: {num_batches: 5}}``), ``xbarlab mitigate`` the same way
(``--method bn_adapt --option bn_adapt.num_batches=5``, checked by :func:`check_options` and run as a trial runs
it: :func:`xbarlab.experiments.trial.trial_mitigation`). The resolved trial configuration stores the full
option set of the selected mitigation, so a trial's identity changes when an option (or a default) changes.

A method registers itself with :func:`register_mitigation` in its own module (e.g.
:mod:`xbarlab.mitigation.drift_compensation`), declared here with :func:`register_lazy_mitigation` (name →
module imported on first use). The BatchNorm methods of :mod:`xbarlab.mitigation.bn` are registered below.
Because worker processes import modules afresh, a mitigation defined outside :mod:`xbarlab` must be importable:
list its module under ``plugins`` in the sweep file (see :func:`xbarlab.experiments.registry.import_plugins`).

A mitigation function receives the chip, a :class:`MitigationContext` (in sweeps the trial's
:class:`xbarlab.experiments.trial.TrialContext`) and its full option set; it returns a :class:`MitigationOutcome`.
This module imports nothing from :mod:`xbarlab.experiments` (the sweep engine sits above the mitigations).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from xbarlab import schema
from xbarlab.mitigation.bn import adapt_bn, bn_modules, finetune_bn, online_bn
from xbarlab.schema import ConfigError

__all__ = [
    "P1_SCHEDULE",
    "P1_SCHEDULE_LIMITS",
    "MitigationContext",
    "MitigationDef",
    "MitigationFn",
    "MitigationOutcome",
    "NoDataContext",
    "OptionLimit",
    "RegisteredMitigation",
    "check_options",
    "check_trial_kind",
    "get_mitigation",
    "list_mitigations",
    "register_lazy_mitigation",
    "register_mitigation",
    "require_bn",
]


class MitigationContext(Protocol):
    """What a mitigation may use: the trial configuration, the chip seed, the torch device, seeded loaders."""

    config: Mapping[str, Any]
    seed: int
    device: torch.device

    def train_loader(self, batch_size: int, *, augment: bool, purpose: str) -> Iterable[Any]:
        """Shuffled training batches ``(x, y)`` seeded by (chip seed, ``purpose``); augmentation on request."""
        ...


@dataclass
class MitigationOutcome:
    """What a mitigation returns: numbers for the results store and an optional evaluation context.

    ``info``: metrics recorded with the trial (e.g. ``bn_adapt_images``); values must be JSON numbers,
    strings or booleans. ``evaluation``: a context manager entered around the test-set evaluation (e.g.
    :func:`xbarlab.mitigation.online_bn`), or ``None``.
    """

    info: dict[str, Any] = field(default_factory=dict)
    evaluation: contextlib.AbstractContextManager[Any] | None = None


MitigationFn = Callable[[nn.Module, MitigationContext, Mapping[str, Any]], MitigationOutcome]
"""``apply(chip, context, options) -> MitigationOutcome``."""


@dataclass(frozen=True)
class MitigationDef:
    """A registered mitigation: name, description, options with defaults, and the function applying it.

    Option types are taken from the defaults: an ``int`` default accepts integers, a ``float`` default any
    number, a ``bool``/``str`` default only that type, a ``None`` default ``None`` or a number.
    """

    name: str
    description: str
    apply: MitigationFn
    options: Mapping[str, Any] = field(default_factory=dict)
    limits: Mapping[str, OptionLimit] = field(default_factory=dict)
    """Allowed values per option, checked with the types when a sweep is planned (before any trial runs)."""
    requires_bn: bool = False
    """The method acts on BatchNorm layers: a model without BN is refused (:func:`require_bn`)."""
    trial_kinds: tuple[str, ...] = ()
    """The sweep trial kinds whose context the method needs (empty: every kind); others are refused when a sweep is
    planned (:func:`check_trial_kind`), and ``xbarlab mitigate`` runs ``accuracy`` trials."""


@dataclass(frozen=True)
class OptionLimit:
    """The allowed values of one mitigation option: a numeric interval and/or a set of choices.

    ``lo``/``hi`` bound numbers (open with ``lo_open``/``hi_open``); ``choices`` lists allowed strings; ``None``
    values pass when the option's default is ``None``.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()

    def check(self, value: Any) -> str | None:
        """What is allowed, when ``value`` is not; ``None`` when it is (text of :func:`xbarlab.schema.bounds_text`)."""
        if value is None:
            return None
        if self.choices:
            return None if value in self.choices else "one of " + ", ".join(self.choices)
        bounds = dict(lo_open=self.lo_open, hi_open=self.hi_open)
        if schema.in_bounds(value, self.lo, self.hi, **bounds):
            return None
        return schema.bounds_text(self.lo, self.hi, **bounds)


@dataclass(frozen=True)
class RegisteredMitigation:
    """A registered mitigation with its full option set and the context it gets for a chip seed."""

    definition: MitigationDef
    options: Mapping[str, Any]
    context: Callable[[int], MitigationContext]
    """Chip seed → what the mitigation may use (seeded loaders, device, configuration)."""

    def apply(self, chip: nn.Module, seed: int) -> Any:
        """Apply the mitigation to ``chip`` (chip seed ``seed``); returns its outcome."""
        return self.definition.apply(chip, self.context(seed), dict(self.options))


@dataclass
class NoDataContext:
    """The context of a mitigation that reads no training data (drift compensation outside a sweep): the chip
    seed; asking it for a loader is an error naming the purpose."""

    seed: int
    config: Mapping[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def train_loader(self, batch_size: int, *, augment: bool, purpose: str) -> Iterable[Any]:
        """Refused: this context holds no data."""
        raise ValueError(f"{purpose}: this mitigation was given no training data (use a sweep or xbarlab mitigate)")


P1_SCHEDULE: Mapping[str, Any] = {
    "epochs": 5,
    "lr": 0.01,
    "lr_step_epochs": 2,
    "lr_gamma": 0.2,
    "momentum": 0.9,
    "batch_size": 128,
    "max_samples": None,
    "augment": True,
}
"""The P1 §1.7 B fine-tuning schedule (SGD with momentum, LR stepped by ``lr_gamma`` every ``lr_step_epochs``;
``max_samples`` labelled samples, ``None``: all): the option defaults of ``bn_finetune`` and ``ln_finetune``."""

P1_SCHEDULE_LIMITS: Mapping[str, OptionLimit] = {
    "epochs": OptionLimit(lo=1),
    "lr": OptionLimit(lo=0.0, lo_open=True),
    "lr_step_epochs": OptionLimit(lo=1),
    "lr_gamma": OptionLimit(lo=0.0, hi=1.0, lo_open=True),
    "momentum": OptionLimit(lo=0.0, hi=1.0, hi_open=True),
    "batch_size": OptionLimit(lo=1),
    "max_samples": OptionLimit(lo=1),
}
"""The allowed values of :data:`P1_SCHEDULE`'s options."""

_MITIGATIONS: dict[str, MitigationDef] = {}
_LAZY_MITIGATIONS: dict[str, str] = {}


def register_mitigation(definition: MitigationDef, *, replace: bool = False) -> MitigationDef:
    """Add a mitigation to the registry (``replace=True`` to redefine an existing name)."""
    if not definition.name or not isinstance(definition.name, str):
        raise ValueError(f"mitigation name: invalid value {definition.name!r}; allowed: a non-empty string")
    if definition.name in _MITIGATIONS and not replace:
        raise ValueError(f"mitigation {definition.name!r} is already registered (pass replace=True)")
    _MITIGATIONS[definition.name] = definition
    return definition


def register_lazy_mitigation(name: str, module: str) -> None:
    """Declare that importing ``module`` registers the mitigation ``name`` (imported on first use)."""
    _LAZY_MITIGATIONS[name] = module


def get_mitigation(name: str) -> MitigationDef:
    """The registered mitigation ``name``; raises ``KeyError`` naming the registered ones."""
    if name not in _MITIGATIONS and name in _LAZY_MITIGATIONS:
        importlib.import_module(_LAZY_MITIGATIONS[name])
    if name not in _MITIGATIONS:
        raise KeyError(f"unknown mitigation {name!r}; allowed: {', '.join(list_mitigations())}")
    return _MITIGATIONS[name]


def check_trial_kind(name: str, kind: str) -> None:
    """Raise ``ValueError`` when mitigation ``name`` cannot run in trials of ``kind`` (``trial_kinds``)."""
    kinds = get_mitigation(name).trial_kinds
    if kinds and kind not in kinds:
        raise ValueError(
            f"invalid value {name!r} for a trial of kind {kind!r}; allowed: it runs only in trials of kind "
            f"{', '.join(kinds)} (it needs their data)"
        )


def list_mitigations(kind: str | None = None) -> list[str]:
    """Names of the registered (and lazily declared) mitigations, sorted; with ``kind``, only those that trials of
    that kind can run (:attr:`MitigationDef.trial_kinds`; lazily declared modules are imported to know)."""
    names = sorted(set(_MITIGATIONS) | set(_LAZY_MITIGATIONS))
    if kind is None:
        return names
    return [n for n in names if kind in (get_mitigation(n).trial_kinds or (kind,))]


def _type_name(default: Any) -> str:
    if default is None:
        return "null or a number"
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    return type(default).__name__


def _matches(default: Any, value: Any) -> bool:
    if default is None:
        return value is None or schema.is_number(value)
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return schema.is_number(value)
    return isinstance(value, type(default))


def check_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The full option set of mitigation ``name``: defaults updated with ``options``, type-checked.

    Raises :class:`xbarlab.schema.ConfigError` (a ``ValueError``) whose message names the option, the value and
    what is allowed; ``KeyError`` for an unknown mitigation.
    """
    definition = get_mitigation(name)
    unknown = sorted(set(options) - set(definition.options))
    if unknown:
        allowed = ", ".join(definition.options) or "none (this mitigation takes no options)"
        key = unknown[0]
        raise ConfigError(f"option {key!r} of mitigation {name!r}", options[key], allowed, "unknown option")
    merged = dict(definition.options)
    for key, value in options.items():
        default = definition.options[key]
        where = f"option {key!r} of mitigation {name!r}"
        if not _matches(default, value):
            raise ConfigError(where, value, _type_name(default))
        merged[key] = float(value) if isinstance(default, float) else value
        limit = definition.limits.get(key)
        problem = limit.check(value) if limit is not None else None
        if problem is not None:
            raise ConfigError(where, value, problem)
    return merged


# ------------------------------------------------------------------------------------------------------------
# built-in mitigations (xbarlab.mitigation.bn)


def _none(chip: nn.Module, ctx: MitigationContext, options: Mapping[str, Any]) -> MitigationOutcome:
    return MitigationOutcome()


def require_bn(chip: nn.Module, method: str) -> None:
    """A BN method on a model without BatchNorm would report the unmitigated accuracy as its result: refuse."""
    if not bn_modules(chip):
        raise ValueError(
            f"mitigation {method!r}: the model has no BatchNorm layer, so there is nothing to adapt; allowed: "
            "models with BN (e.g. resnet20, vgg-small), or another mitigation"
        )


def _bn_adapt(chip: nn.Module, ctx: MitigationContext, options: Mapping[str, Any]) -> MitigationOutcome:
    require_bn(chip, "bn_adapt")
    loader = ctx.train_loader(int(options["batch_size"]), augment=bool(options["augment"]), purpose="bn_adapt")
    res = adapt_bn(
        chip, loader, num_batches=int(options["num_batches"]), momentum=options["momentum"], device=ctx.device
    )
    return MitigationOutcome({"bn_adapt_images": res.num_images, "bn_adapt_s": res.wall_time_s})


def _bn_online(chip: nn.Module, ctx: MitigationContext, options: Mapping[str, Any]) -> MitigationOutcome:
    require_bn(chip, "bn_online")
    return MitigationOutcome({}, online_bn(chip))


def _bn_finetune(chip: nn.Module, ctx: MitigationContext, options: Mapping[str, Any]) -> MitigationOutcome:
    require_bn(chip, "bn_finetune")
    bs = int(options["batch_size"])
    augment = bool(options["augment"])
    loader = ctx.train_loader(bs, augment=augment, purpose="bn_finetune")
    adapt_loader = ctx.train_loader(bs, augment=augment, purpose="bn_finetune_adapt")
    max_samples = options["max_samples"]
    res = finetune_bn(
        chip,
        loader,
        epochs=int(options["epochs"]),
        lr=float(options["lr"]),
        lr_step_epochs=int(options["lr_step_epochs"]),
        lr_gamma=float(options["lr_gamma"]),
        momentum=float(options["momentum"]),
        max_samples=None if max_samples is None else int(max_samples),
        device=ctx.device,
        progress=False,
        start_from_adapted=bool(options["start_from_adapted"]),
        adapt_loader=adapt_loader,
        adapt_batches=int(options["adapt_batches"]),
    )
    return MitigationOutcome(
        {
            "finetune_samples": res.samples_used,
            "finetune_steps": res.steps,
            "finetune_s": res.wall_time_s,
            "finetune_loss": res.epoch_loss[-1] if res.epoch_loss else None,
            "finetune_train_acc": 100.0 * res.epoch_accuracy[-1] if res.epoch_accuracy else None,
        }
    )


register_mitigation(MitigationDef("none", "No mitigation: test the programmed chip as it is.", _none))
register_mitigation(
    MitigationDef(
        "bn_adapt",
        "BN adaptation / noise-aware BN (P1 baseline, P2 reading A): re-estimate BN running statistics "
        "on the chip from training batches (xbarlab.mitigation.adapt_bn).",
        _bn_adapt,
        {"num_batches": 20, "batch_size": 128, "augment": True, "momentum": None},
        {
            "num_batches": OptionLimit(lo=1),
            "batch_size": OptionLimit(lo=1),
            "momentum": OptionLimit(lo=0.0, hi=1.0, lo_open=True),
        },
        requires_bn=True,
    )
)
register_mitigation(
    MitigationDef(
        "bn_online",
        "Online test-batch BN statistics (P2 reading B; xbarlab.mitigation.online_bn); depends on the test "
        "batch size (data.batch_size).",
        _bn_online,
        requires_bn=True,
    )
)
register_mitigation(
    MitigationDef(
        "bn_finetune",
        "BN γ/β fine-tuning on the chip (P1 §1.7 B; xbarlab.mitigation.finetune_bn), starting from BN "
        "adaptation; max_samples limits the labelled training samples (few-shot).",
        _bn_finetune,
        {**P1_SCHEDULE, "start_from_adapted": True, "adapt_batches": 20},
        {**P1_SCHEDULE_LIMITS, "adapt_batches": OptionLimit(lo=1)},
        requires_bn=True,
    )
)

# Mitigations defined in other modules, imported on first use.
register_lazy_mitigation("drift_comp_global", "xbarlab.mitigation.drift_compensation")
register_lazy_mitigation("drift_comp_column", "xbarlab.mitigation.drift_compensation")
register_lazy_mitigation("ln_finetune", "xbarlab.mitigation.layernorm")
register_lazy_mitigation("ln_distill", "xbarlab.mitigation.layernorm")
