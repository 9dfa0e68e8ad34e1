"""The ``xbarlab`` command line. Each command group lives in its own module with a ``register(app)`` function."""

from __future__ import annotations

import importlib

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


def main() -> None:
    """Entry point of the ``xbarlab`` console script."""
    app()
