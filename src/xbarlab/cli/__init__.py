"""The ``xbarlab`` command line. Each command group lives in its own module with a ``register(app)`` function."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, NoReturn

import typer

app = typer.Typer(
    name="xbarlab",
    help="Analog in-memory-computing crossbar simulator: convert, program, measure, mitigate, sweep, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Modules under xbarlab.cli that register commands. Add a module name here to expose its commands.
COMMAND_MODULES: tuple[str, ...] = ("core", "mitigation", "train", "experiments", "tasks", "correctnet", "rehash")


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


def _option_name(exc: BaseException) -> str:
    """The option or argument a Click usage error is about (``--chips``, ``FILE``), or the command's path."""
    param = getattr(exc, "param", None)
    if param is not None and getattr(param, "param_type_name", "") == "option":
        long = [o for o in param.opts if o.startswith("--")]
        return str((long or param.opts)[0])
    if param is not None:
        return str(getattr(param, "metavar", None) or str(param.name).upper())
    option_name = getattr(exc, "option_name", None)  # NoSuchOption
    if option_name:
        return str(option_name)
    ctx = getattr(exc, "ctx", None)
    return str(ctx.command_path) if ctx is not None else "xbarlab"


def _usage_line(exc: BaseException) -> str:
    """One ``<option>: <message>`` line for a Click/Typer usage error (instead of a multi-line box)."""
    click = _click_exceptions()
    name = _option_name(exc)
    message = str(getattr(exc, "message", exc)).strip()
    if isinstance(exc, click.MissingParameter):
        message = "missing; required"
    elif isinstance(exc, click.NoSuchOption):
        message = "no such option"
        if exc.possibilities:
            message += f"; did you mean {', '.join(sorted(exc.possibilities))}?"
    message = " ".join(message.split())
    if message.startswith((f"{name}:", f"{name} ", "-")):
        return message  # the message already names its option
    return f"{name}: {message}"


def _click_exceptions() -> Any:
    """Click's exception module as Typer uses it (Typer >= 0.26 ships its own copy of Click as ``typer._click``)."""
    try:
        from typer._click import exceptions
    except ImportError:  # older Typer: the Click package
        from click import exceptions  # type: ignore[no-redef]
    return exceptions


def _fail(line: str) -> NoReturn:
    print(f"error: {line}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``xbarlab`` console script (``argv``: the arguments, default ``sys.argv[1:]``).

    Every bad input ends the command with ONE line ``error: <option or field>: <message>`` on stderr and exit
    status 2: Click/Typer usage errors (bad option value, missing argument, unknown option) as well as errors
    caused by the input (invalid configuration values, missing files, unknown names, …); ``XBARLAB_DEBUG=1``
    shows the full traceback of the latter instead. ``--help`` prints the help and exits 0.
    """
    click = _click_exceptions()
    try:
        code = app(args=argv, prog_name="xbarlab", standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        exc.show()  # `xbarlab` / `xbarlab p2` without a command: the help, as before
        raise SystemExit(exc.exit_code) from None
    except click.UsageError as exc:
        _fail(_usage_line(exc))
    except click.ClickException as exc:
        _fail(" ".join(exc.format_message().split()))
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except _user_errors() as exc:
        if os.environ.get("XBARLAB_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {' '.join(str(message).splitlines())}", file=sys.stderr)
        print("(set XBARLAB_DEBUG=1 for the traceback)", file=sys.stderr)
        raise SystemExit(2) from None
    if isinstance(code, int) and code != 0:
        raise SystemExit(code)
