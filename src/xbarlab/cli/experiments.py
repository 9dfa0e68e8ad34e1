"""Experiment commands: ``sweep``, ``results``, ``report`` and ``demo``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from xbarlab.cli import options as opt
from xbarlab.progress import log, progress_bar

_SQLITE_MAGIC = b"SQLite format 3\x00"


def _err(message: str) -> None:
    sys.stderr.write(message.rstrip() + "\n")


def _is_store(path: Path) -> bool:
    """Whether ``path`` is an SQLite file; an unreadable file ends the command with the OS reason."""
    if not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            return fh.read(16) == _SQLITE_MAGIC
    except OSError as exc:
        _err(f"error: {path}: cannot read ({exc.strerror})")
        raise typer.Exit(2) from exc


def _check_out_file(out: str | None) -> None:
    """``results -o``: a file path in a writable folder (not a folder), checked before anything is read."""
    if out is None:
        return
    path = Path(out)
    if path.is_dir():
        _err(f"error: -o: {path} is a folder; allowed: a file path")
        raise typer.Exit(2)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        _err(f"error: -o: {path}: folder {parent} is not writable; allowed: a path in a writable folder")
        raise typer.Exit(2)


def _check_out_dir(out: str) -> None:
    """``report -o`` / ``demo -o``: a folder (created when missing) in a writable place, not a file."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        _err(f"error: -o: {path} is a file; allowed: a folder (created when missing)")
        raise typer.Exit(2)
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        _err(f"error: -o: {path}: folder {parent} is not writable; allowed: a path in a writable folder")
        raise typer.Exit(2)


def _check_sweep_name(store_path: Path, sweep: str | None) -> None:
    """``--sweep``: a sweep of the store, checked before anything is written."""
    from xbarlab.experiments.store import Store, StoreError

    if sweep is None:
        return
    try:
        with Store(store_path, readonly=True) as db:
            names = [str(sw["name"]) for sw in db.sweeps()]
    except StoreError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2) from exc
    if sweep not in names:
        _err(f"error: --sweep: invalid value {sweep!r}; allowed: one of {', '.join(names) or '(none)'}")
        raise typer.Exit(2)


def _resolve_source(source: str, store: str | None) -> tuple[Path, str | None, Any]:
    """``(store path, sweep name or None, spec or None)`` for a sweep file / built-in name / store path."""
    from xbarlab.experiments.spec import SweepSpecError, load_spec

    path = Path(source)
    if _is_store(path):
        return path, None, None
    if path.suffix in (".sqlite", ".sqlite3", ".db") and path.exists():
        _err(f"error: {path}: not an SQLite results store (the file does not start with the SQLite header)")
        raise typer.Exit(2)
    try:
        spec = load_spec(source)
    except SweepSpecError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(2) from exc
    store_path = Path(store) if store else spec.default_store()
    if not store_path.is_file():
        _err(f"error: store {store_path} does not exist (run `xbarlab sweep {source}` first, or pass --store)")
        raise typer.Exit(2)
    return store_path, spec.name, spec


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class _Reporter:
    """Progress: a rich bar on a terminal, one plain line per finished trial otherwise."""

    def __init__(self, name: str, quiet: bool) -> None:
        self.name = name
        self.quiet = quiet
        self.bar = progress_bar(not quiet and sys.stderr.isatty(), None, f"sweep {name}", transient=False, elapsed=True)

    def __enter__(self) -> _Reporter:
        self.bar.__enter__()
        return self

    def __call__(self, p: Any) -> None:
        acc = p.last_metrics.get("accuracy")
        last = f"last acc {acc:.2f}%" if isinstance(acc, (int, float)) else ""
        info = f"ETA {_fmt_eta(p.eta_s)}  {p.rate_per_min:.1f}/min  failed {p.failed}  {last}"
        if self.bar.active:
            self.bar.update(completed=p.done, total=p.total, text=info)
        elif p.ran or p.failed:
            line = f"[{p.done}/{p.total}] {info}" + (f"  error: {p.last_error}" if p.last_error else "")
            log(not self.quiet, line.rstrip())
        else:
            log(not self.quiet, f"[{p.done}/{p.total}] {p.pending} trial(s) to run")

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)


def register(app: typer.Typer) -> None:
    """Add ``sweep``, ``results``, ``report`` and ``demo`` to ``app``."""

    @app.command("sweep")
    def sweep_cmd(
        file: str = typer.Argument(..., help="Sweep YAML file, or a built-in sweep name (docs/experiments.md)."),
        executor: str = typer.Option("local", "--executor", "-e", help="local | process | ray"),
        workers: int = typer.Option(
            None, "--workers", "-w", callback=opt.positive_int, help="Worker processes / Ray tasks in flight."
        ),
        threads: int = typer.Option(
            None, "--threads", callback=opt.positive_int, help="Torch threads per worker (default cores/workers)."
        ),
        address: str = typer.Option(None, "--address", help="Ray cluster address ('auto' or ray://host:port)."),
        store: str = typer.Option(None, "--store", "-s", help="Results store (default: from the file)."),
        limit: int = typer.Option(None, "--limit", callback=opt.positive_int, help="Run at most N trials now."),
        fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failed trial."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Validate and show the plan, run nothing."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
        device: str = typer.Option(
            None, "--device", help="Torch device of the trials (cpu, cuda, cuda:N; default: the file's, cpu)."
        ),
        set_: list[str] = typer.Option(
            None, "--set", help="Override a key of the file: base.data.data_dir=/data, chips=3 (repeatable)."
        ),
    ) -> None:
        """Run a sweep (resumable: trials already in the store are skipped)."""
        from xbarlab.experiments.executors import check_executor
        from xbarlab.experiments.spec import SweepSpecError, check_inputs, load_spec, resolve_trials
        from xbarlab.experiments.sweep import run_sweep
        from xbarlab.yamlio import parse_assignments

        try:
            check_executor(executor, address=address)
        except ValueError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(2) from exc
        try:
            overrides = parse_assignments(set_ or [], example="base.data.test_samples=1000")
        except ValueError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(2) from exc
        from xbarlab.cli.core import _check_device

        if device is not None:
            _check_device(device)
            overrides["base.device"] = device
        try:
            spec = load_spec(file, overrides=overrides or None)
            for _, settings in spec.points():  # the file's device (and grid values) usable here, before any work
                try:
                    _check_device(str(settings["device"]))
                except typer.BadParameter as exc:
                    raise SweepSpecError(
                        str(exc.message).removeprefix("--device: "), key="base.device", source=spec.source
                    ) from exc
            check_inputs(spec)  # models readable, data present and fitting: before the store is created
        except SweepSpecError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(2) from exc
        if dry_run:
            trials = resolve_trials(spec, fingerprint=False)
            axes = ", ".join(f"{a.path} ({len(a.values)})" for a in spec.grid)
            typer.echo(
                f"sweep {spec.name}: {spec.num_points} grid points × {spec.chips} chips = {len(trials)} "
                f"trials; axes: {axes}; store {store or spec.default_store()}"
            )
            return
        try:
            with _Reporter(spec.name, quiet) as reporter:
                summary = run_sweep(
                    spec,
                    store=store,
                    executor=executor,
                    workers=workers,
                    threads=threads,
                    address=address,
                    limit=limit,
                    fail_fast=fail_fast,
                    on_progress=reporter,
                )
        except (ValueError, ImportError, FileNotFoundError) as exc:
            _err(f"error: {exc}")
            raise typer.Exit(2) from exc
        typer.echo(summary.line())
        for trial_hash, error in summary.failures[:5]:
            _err(f"  failed {trial_hash[:12]}: {error}")
        if summary.interrupted:
            raise typer.Exit(130)
        if summary.failed:
            raise typer.Exit(1)

    @app.command("results")
    def results_cmd(
        source: str = typer.Argument(..., help="Results store (.sqlite) or sweep file / built-in name."),
        fmt: str = typer.Option("table", "--format", "-f", help="table | csv | parquet | json"),
        out: str = typer.Option(None, "--out", "-o", help="Output file (default stdout; parquet needs it)."),
        store: str = typer.Option(None, "--store", "-s", help="Store of a sweep file (default: from the file)."),
        sweep: str = typer.Option(None, "--sweep", help="Only this sweep of the store."),
    ) -> None:
        """Export the stored results as a tidy table (one row per chip instance)."""
        from xbarlab.experiments.results import FORMATS, tidy, write_table
        from xbarlab.experiments.store import Store, StoreError

        if fmt not in FORMATS:
            _err(f"error: --format: invalid value {fmt!r}; allowed: {', '.join(FORMATS)}")
            raise typer.Exit(2)
        _check_out_file(out)
        store_path, name, _ = _resolve_source(source, store)
        try:
            with Store(store_path, readonly=True) as db:
                names = [str(sw["name"]) for sw in db.sweeps()]
                if sweep is not None and sweep not in names:
                    allowed = ", ".join(names) or "(none)"
                    raise StoreError(f"--sweep: invalid value {sweep!r}; allowed: one of {allowed}")
                columns, records = tidy(db.rows(sweep or name))
        except StoreError as exc:
            _err(f"error: {exc}")
            raise typer.Exit(2) from exc
        try:
            text = write_table(columns, records, fmt, out)
        except (ValueError, ImportError) as exc:
            _err(f"error: {exc}")
            raise typer.Exit(2) from exc
        if text is not None:
            sys.stdout.write(text)
        else:
            _err(f"wrote {len(records)} rows to {out}")

    @app.command("report")
    def report_cmd(
        source: str = typer.Argument(..., help="Results store (.sqlite) or sweep file / built-in name."),
        out: str = typer.Option(..., "--out", "-o", help="Report folder (Markdown, HTML, PNG plots)."),
        title: str = typer.Option(None, "--title", help="Report title."),
        store: str = typer.Option(None, "--store", "-s", help="Store of a sweep file (default: from the file)."),
        sweep: str = typer.Option(None, "--sweep", help="Only this sweep of the store."),
    ) -> None:
        """Render a report (Markdown + self-contained HTML with plots and tables) from stored results."""
        from xbarlab.experiments.store import Store, StoreError
        from xbarlab.reports import render_report

        _check_out_dir(out)
        store_path, name, _ = _resolve_source(source, store)
        _check_sweep_name(store_path, sweep)
        try:
            with Store(store_path, readonly=True) as db:
                report = render_report(db, out, title=title, sweep=sweep or name)
        except (StoreError, ValueError) as exc:
            _err(f"error: {exc}")
            raise typer.Exit(2) from exc
        typer.echo(f"report: {report.html} (Markdown: {report.markdown})")

    @app.command("demo")
    def demo_cmd(
        out: str = typer.Option("reports/demo", "--out", "-o", help="Report folder."),
        chips: int = typer.Option(
            None, "--chips", callback=opt.positive_int, help="Chip instances per preset (default 3; quick 2)."
        ),
        quick: bool = typer.Option(False, "--quick", help="Tiny setting (for tests): few images, 1 epoch."),
        executor: str = typer.Option(
            None, "--executor", "-e", help="local | process (default: process with 2 workers on >= 2 cores)"
        ),
        workers: int = typer.Option(
            None, "--workers", "-w", callback=opt.positive_int, help="Workers of the process executor."
        ),
        device: str = typer.Option("cpu", "--device", help="Torch device of the chip evaluations: cpu, cuda, cuda:N."),
    ) -> None:
        """End-to-end demo: ResNet-20 on Fashion-MNIST on rram/fefet/pcm-i chips, BN mitigations, report."""
        from xbarlab.cli.core import _check_device
        from xbarlab.experiments.executors import check_executor

        _check_device(device)
        if executor is not None:
            try:
                check_executor(executor, allowed=("local", "process"))
            except ValueError as exc:
                _err(f"error: {exc}")
                raise typer.Exit(2) from exc
        _check_out_dir(out)
        from xbarlab.demo import run_demo

        result = run_demo(out, chips=chips, quick=quick, executor=executor, workers=workers, device=device)
        typer.echo(f"demo report: {result.html} (Markdown: {result.markdown}; {result.wall_s:.0f} s)")
