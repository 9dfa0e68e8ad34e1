"""Declarative field checks: ONE way to validate configuration values in xbarlab.

Hardware sections (:mod:`xbarlab.hardware`), sweep files (:mod:`xbarlab.experiments.spec`), mitigation options
(:mod:`xbarlab.mitigation.registry`) and the P3 configuration check their values with the functions and the
:class:`Field` schema of this module. Every refusal is one :class:`ConfigError` whose message is
``[source:line: ]<path>: <problem>; allowed: <what is allowed>``: the field's dotted path, the offending value
(``invalid value 0.5`` unless ``problem`` says otherwise), the allowed range and, for values read from a YAML
file, the file and the 1-based line. Nothing is clamped or skipped.

Bounds are written with ``:g`` (``>= 0``, ``> 0 and <= 1``); an integer with both bounds as ``an integer in
[lo, hi]``.

>>> number("drift.t0_s", 0.0, lo=0.0, lo_open=True)
Traceback (most recent call last):
...
xbarlab.schema.ConfigError: drift.t0_s: invalid value 0.0; allowed: > 0
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MISSING",
    "ConfigError",
    "Field",
    "boolean",
    "bounds_text",
    "check_mapping",
    "choice",
    "in_bounds",
    "integer",
    "integer_text",
    "is_number",
    "join",
    "number",
    "plain",
]

MISSING: Any = object()
"""Marker for "no value given" (distinct from ``None``, which is a value)."""


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field, the value and what is allowed.

    ``path``: dotted field path (``read_noise.sigma``); ``value``: the offending value; ``allowed``: what is
    allowed; ``problem`` replaces the default "invalid value <value>" part when a valid value is wrong in its
    context (e.g. a parameter of a section that is switched off, an unknown key, a missing key). ``source`` and
    ``line`` (1-based) locate the value in a file when known; ``keys`` is the path as a tuple of keys when a key
    itself holds a dot.
    """

    def __init__(
        self,
        path: str,
        value: Any,
        allowed: str,
        problem: str | None = None,
        *,
        source: str | None = None,
        line: int | None = None,
        keys: tuple[str, ...] | None = None,
    ) -> None:
        self.path = path
        self.value = value
        self.allowed = allowed
        self.problem = problem
        self.source = source
        self.line = line
        self.keys = keys if keys is not None else tuple(path.split(".")) if path else ()
        what = f"invalid value {value!r}" if problem is None else problem
        self.detail = f"{what}; allowed: {allowed}" if allowed else what
        """The message without the location and the path: ``<problem>; allowed: <allowed>`` (``<problem>`` alone
        when nothing is said about what is allowed)."""
        super().__init__(self._where() + f"{path}: {self.detail}")

    def _where(self) -> str:
        if self.source is None and self.line is None:
            return ""
        return f"{self.source or '<yaml>'}" + (f":{self.line}" if self.line is not None else "") + ": "

    def __reduce__(self) -> tuple[Any, ...]:
        # picklable (worker processes re-raise it in the parent)
        kwargs = {"source": self.source, "line": self.line, "keys": self.keys}
        return (_rebuild, (type(self), (self.path, self.value, self.allowed, self.problem), kwargs))

    def prefixed(self, root: str) -> ConfigError:
        """The same error with its path below ``root`` (e.g. ``layers[0].settings``); unchanged for an empty root."""
        if not root:
            return self
        return ConfigError(join(root, self.path), self.value, self.allowed, self.problem)


def _rebuild(cls: type[ConfigError], args: tuple[Any, ...], kwargs: dict[str, Any]) -> ConfigError:
    return cls(*args, **kwargs)


def join(path: str, key: str) -> str:
    """``path.key`` (``key`` alone for an empty path)."""
    return f"{path}.{key}" if path else key


def plain(value: Any) -> Any:
    """Mappings as ``dict`` with string keys and sequences as ``list``, recursively (a fresh copy)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------------------
# single values


def bounds_text(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> str:
    """The allowed interval as text: ``>= 0``, ``> 0 and <= 1``, ``< 1``; empty without bounds."""
    lo_txt = "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
    hi_txt = "" if hi is None else f"{'<' if hi_open else '<='} {hi:g}"
    return " and ".join(t for t in (lo_txt, hi_txt) if t)


def in_bounds(
    value: float, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False
) -> bool:
    """True when ``value`` lies in the interval (``lo``/``hi`` None = unbounded)."""
    if lo is not None and (value <= lo if lo_open else value < lo):
        return False
    return not (hi is not None and (value >= hi if hi_open else value > hi))


def is_number(value: Any) -> bool:
    """An ``int`` or ``float`` that is not a ``bool``."""
    return not isinstance(value, bool) and isinstance(value, (int, float))


def number(
    path: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_inf: bool = False,
) -> float:
    """``value`` as a float when it is a finite number (or ±inf with ``allow_inf``) within the bounds."""
    if not is_number(value):
        raise ConfigError(path, value, "a number")
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ConfigError(path, value, "a finite number")
    if not in_bounds(value, lo, hi, lo_open=lo_open, hi_open=hi_open):
        raise ConfigError(path, value, bounds_text(lo, hi, lo_open=lo_open, hi_open=hi_open))
    return float(value)


def integer_text(lo: int | None = None, hi: int | None = None) -> str:
    """``an integer in [lo, hi]``, ``an integer >= lo``, ``an integer <= hi`` or ``an integer``."""
    if lo is not None and hi is not None:
        return f"an integer in [{lo}, {hi}]"
    bounds = bounds_text(lo, hi)
    return "an integer" + (f" {bounds}" if bounds else "")


def integer(path: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` when it is an integer (not a bool) within ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not in_bounds(value, lo, hi):
        raise ConfigError(path, value, integer_text(lo, hi))
    return value


def choice(path: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices`` (the message lists them quoted)."""
    if value not in choices:
        raise ConfigError(path, value, "one of " + ", ".join(repr(c) for c in choices))
    return str(value)


def boolean(path: str, value: Any) -> bool:
    """``value`` when it is ``true`` or ``false`` (no 0/1, no strings)."""
    if not isinstance(value, bool):
        raise ConfigError(path, value, "true or false")
    return value


# ------------------------------------------------------------------------------------------------------------
# declarative fields of a mapping

_KIND_TEXT = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "mapping": "a mapping",
    "list": "a list",
}


@dataclass(frozen=True)
class Field:
    """One key of a mapping: its kind, default, whether it may be null or must be given, and its bounds.

    ``kind``: ``str`` (non-empty), ``int``, ``float`` (finite; an int is accepted and converted), ``bool``,
    ``mapping`` or ``list``. ``lo``/``hi`` bound numbers (open with ``lo_open``/``hi_open``); ``choices`` lists
    the allowed strings; ``optional``: null is allowed; ``required``: the key must be given (else ``default``).
    """

    kind: str
    default: Any = None
    optional: bool = False
    required: bool = False
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KIND_TEXT:
            raise ValueError(f"Field.kind: invalid value {self.kind!r}; allowed: one of {', '.join(_KIND_TEXT)}")

    def describe(self) -> str:
        """What the field allows, e.g. ``an integer >= 1 or null``."""
        base = "one of " + ", ".join(self.choices) if self.choices else _KIND_TEXT[self.kind]
        bounds = bounds_text(self.lo, self.hi, lo_open=self.lo_open, hi_open=self.hi_open)
        if bounds:
            base += f" {bounds}"
        return base + (" or null" if self.optional else "")

    def fits(self, value: Any) -> bool:
        """True when :meth:`check` accepts ``value``."""
        return self._convert(value) is not MISSING

    def check(self, path: str, value: Any, *, keys: tuple[str, ...] | None = None) -> Any:
        """``value`` converted to the field's type; :class:`ConfigError` at ``path`` when it does not fit."""
        out = self._convert(value)
        if out is MISSING:
            raise ConfigError(path, value, self.describe(), keys=keys)
        return out

    def _convert(self, value: Any) -> Any:
        if value is None:
            return None if self.optional else MISSING
        if self.kind == "str":
            ok = isinstance(value, str) and bool(value) and (not self.choices or value in self.choices)
            return value if ok else MISSING
        if self.kind == "bool":
            return value if isinstance(value, bool) else MISSING
        if self.kind in ("int", "float"):
            if not is_number(value) or (self.kind == "int" and not isinstance(value, int)):
                return MISSING
            if isinstance(value, float) and not math.isfinite(value):
                return MISSING
            if not in_bounds(value, self.lo, self.hi, lo_open=self.lo_open, hi_open=self.hi_open):
                return MISSING
            return float(value) if self.kind == "float" else int(value)
        if self.kind == "mapping":
            return dict(value) if isinstance(value, Mapping) else MISSING
        return list(value) if isinstance(value, (list, tuple)) else MISSING


def check_mapping(
    keys: tuple[str, ...], data: Any, fields: Mapping[str, Field], *, fill_defaults: bool = True
) -> dict[str, Any]:
    """Check a mapping against its fields: unknown keys refused, required keys demanded, values converted.

    ``keys``: the mapping's path as a tuple of keys (``()`` for the document root); ``None`` data is an empty
    mapping. Missing optional keys get (a copy of) their default with ``fill_defaults``. Errors are
    :class:`ConfigError` with ``keys`` set: ``unknown key``, ``missing`` (the error's ``keys`` then end with the
    missing key) or ``invalid value``.
    """
    path = ".".join(keys)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path or "<root>", data, f"a mapping with keys {', '.join(fields)}", keys=keys)
    for key in data:
        if key not in fields:
            sub = (*keys, str(key))
            raise ConfigError(".".join(sub), data[key], ", ".join(fields), "unknown key", keys=sub)
    out: dict[str, Any] = {}
    for key, spec in fields.items():
        sub = (*keys, key)
        if key in data:
            out[key] = spec.check(".".join(sub), data[key], keys=sub)
        elif spec.required:
            raise ConfigError(".".join(sub), MISSING, spec.describe(), "missing", keys=sub)
        elif fill_defaults:
            out[key] = copy.deepcopy(spec.default)
    return out
