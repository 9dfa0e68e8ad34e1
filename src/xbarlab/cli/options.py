"""Range checks for numeric command-line options, as Typer callbacks.

Every integer and float option of every command is checked before the command does any work: a value outside
its range ends the command with ``error: --option: invalid value V; allowed: <range>`` (exit status 2, see
:func:`xbarlab.cli.main`). ``None`` (option not given) always passes.

    chips: int = typer.Option(3, callback=at_least(1))
    lr: float = typer.Option(0.1, callback=positive)
    fraction: float = typer.Option(0.5, callback=fraction)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer

__all__ = [
    "OptionError",
    "above",
    "at_least",
    "check_range",
    "fraction",
    "named",
    "non_negative",
    "open_fraction",
    "positive",
    "positive_int",
    "seed",
]

N = TypeVar("N", int, float)


def check_range(
    value: N, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False, name: str = "value"
) -> N:
    """``value`` when it lies in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``) and is finite; else ``BadParameter``.

    The message names the allowed range: ``invalid value -1; allowed: >= 0``.
    """
    bad = isinstance(value, float) and not math.isfinite(value)
    if lo is not None and (value <= lo if lo_open else value < lo):
        bad = True
    if hi is not None and value > hi:
        bad = True
    if bad:
        if lo is not None and hi is not None:
            allowed = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        elif lo is not None:
            allowed = f"{'>' if lo_open else '>='} {lo:g}"
        else:
            allowed = f"<= {hi:g}" if hi is not None else "a finite number"
        raise typer.BadParameter(f"invalid value {value!r}; allowed: {allowed}")
    return value


def _callback(lo: float | None, hi: float | None = None, *, lo_open: bool = False) -> Callable[[Any], Any]:
    def callback(value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, (list, tuple)):
            return type(value)(check_range(v, lo=lo, hi=hi, lo_open=lo_open) for v in value)
        return check_range(value, lo=lo, hi=hi, lo_open=lo_open)

    return callback


def at_least(lo: float) -> Callable[[Any], Any]:
    """Callback: the value must be ``>= lo`` (e.g. ``at_least(1)`` for counts, ``at_least(128)``)."""
    return _callback(lo)


positive_int = at_least(1)
"""Counts: chips, epochs, batch sizes, limits, repeats, threads, workers, test samples (>= 1)."""

seed = at_least(0)
"""Seeds (>= 0; chip k is programmed with seed + k)."""

non_negative = _callback(0.0)
"""Non-negative numbers: weight decay, warm-up epochs, times since programming in s (>= 0)."""

positive = _callback(0.0, lo_open=True)
"""Strictly positive numbers: learning rate, width multiplier, noise level η (> 0)."""

fraction = _callback(0.0, 1.0)
"""Fractions and probabilities in [0, 1] (momentum, label smoothing)."""


def above(lo: float, what: str) -> Callable[[Any], Any]:
    """Callback: a number > ``lo``, the message naming the quantity (``allowed: eta > 0``)."""

    def callback(value: Any) -> Any:
        if value is None:
            return value
        if not (math.isfinite(value) and value > lo):
            raise typer.BadParameter(f"invalid value {value!r}; allowed: {what} > {lo:g}")
        return value

    return callback


def open_fraction(value: Any) -> Any:
    """Callback: a number in [0, 1) (momentum, label smoothing: 1 would never learn)."""
    if value is None:
        return value
    if not (0.0 <= value < 1.0) or not math.isfinite(value):
        raise typer.BadParameter(f"invalid value {value!r}; allowed: [0, 1)")
    return value


class OptionError(ValueError):
    """A bad option value found while using it (unknown name, missing file): ``<option>: <reason>``."""


@contextmanager
def named(option: str) -> Iterator[None]:
    """Name ``option`` in errors raised inside the block: ``unknown dataset 'x'`` → ``--dataset: unknown …``.

    Re-raises input errors (``KeyError``, ``ValueError``, ``OSError``, data set errors) as :class:`OptionError`
    with one line ``<option>: <message>``; a message that already starts with the option is kept as it is.
    """
    from xbarlab.data.errors import DatasetError

    try:
        yield
    except (KeyError, ValueError, OSError, DatasetError) as exc:
        if isinstance(exc, OptionError):
            raise
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        text = " ".join(str(text).split())
        raise OptionError(text if text.startswith(option) else f"{option}: {text}") from exc
