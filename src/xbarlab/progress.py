"""Progress output, the one place it is written: status lines and a progress bar, both on stderr.

* :func:`log` -- one status line on stderr (flushed), or nothing when disabled.
* :func:`progress_bar` -- a context manager with a rich bar on stderr (description, bar, ``done/total``, a text
  field, time remaining or elapsed); disabled, it shows nothing and its methods do nothing.

stdout stays for results. Nothing here computes: callers decide what the text says.

>>> from xbarlab.progress import log, progress_bar
>>> log(True, "generating canvases")                                  # doctest: +SKIP
>>> with progress_bar(True, 5, "chips (fefet)") as bar:               # doctest: +SKIP
...     for k in range(5):
...         bar.advance(f"last acc {90.0:.2f}%")
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Bar", "log", "progress_bar"]


def log(enabled: bool, text: str) -> None:
    """Write ``text`` and a newline to stderr and flush, when ``enabled``."""
    if enabled:
        print(text, file=sys.stderr, flush=True)


class Bar:
    """A rich progress bar on stderr (see :func:`progress_bar`); every method is a no-op when disabled."""

    def __init__(self, enabled: bool, total: int | None, label: str, *, transient: bool, elapsed: bool) -> None:
        self.enabled = enabled
        self.total = total
        self.label = label
        self.transient = transient
        self.elapsed = elapsed
        self._progress: Any = None
        self._task: Any = None

    @property
    def active(self) -> bool:
        """Whether the bar is shown (enabled and inside the ``with`` block)."""
        return self._progress is not None

    def __enter__(self) -> Bar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[text]}"),
                TimeElapsedColumn() if self.elapsed else TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=self.transient,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total, text="")
        return self

    def advance(self, text: str | None = None) -> None:
        """One step done; ``text`` (when given) replaces the text field."""
        if self._progress is not None:
            fields = {} if text is None else {"text": text}
            self._progress.update(self._task, advance=1, **fields)

    def update(self, *, completed: int, total: int | None = None, text: str | None = None) -> None:
        """Set the steps done (and the total, and the text field, when given)."""
        if total is not None:
            self.total = total
        if self._progress is not None:
            fields = {} if text is None else {"text": text}
            self._progress.update(self._task, completed=completed, total=self.total, **fields)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None


def progress_bar(enabled: bool, total: int | None, label: str, *, transient: bool = True, elapsed: bool = False) -> Bar:
    """A progress bar of ``total`` steps (``None``: unknown yet) described by ``label``, on stderr.

    Use it as ``with progress_bar(...) as bar:`` and call :meth:`Bar.advance` per step or :meth:`Bar.update`
    with the count done. ``transient``: the bar disappears at the end; ``elapsed``: show the time elapsed
    instead of the time remaining. Disabled (``enabled`` False), nothing is shown.
    """
    return Bar(enabled, total, label, transient=transient, elapsed=elapsed)
