"""The ``xbarlab`` command line. Each command group lives in its own module with a ``register(app)`` function."""

from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(
    name="xbarlab",
    help="Analog in-memory-computing crossbar simulator: convert, program, measure, mitigate, sweep, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules under xbarlab.cli that register commands. Add a module name here to expose its commands.
COMMAND_MODULES: tuple[str, ...] = ("core", "mitigation", "train", "experiments", "tasks", "correctnet")


def _register_all() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"xbarlab.cli.{name}")
        module.register(app)


_register_all()


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that report bad input (config, model, data, files): shown as one line, not a traceback."""
    import sqlite3

    import yaml

    from xbarlab.experiments.store import StoreError
    from xbarlab.layers import NotProgrammedError

    return (
        ValueError,
        TypeError,
        OSError,
        KeyError,
        OverflowError,
        yaml.YAMLError,
        NotProgrammedError,
        StoreError,
        sqlite3.DatabaseError,
    )


def main() -> None:
    """Entry point of the ``xbarlab`` console script.

    Errors caused by the input (invalid configuration values, missing files, unknown names, …) end the command
    with ``error: <message>`` and exit status 2; ``XBARLAB_DEBUG=1`` shows the full traceback instead.
    """
    try:
        app()
    except _user_errors() as exc:
        if os.environ.get("XBARLAB_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        print("(set XBARLAB_DEBUG=1 for the traceback)", file=sys.stderr)
        raise SystemExit(2) from None
