"""The report renderer: :func:`render_report` reads a store (or rows), groups and summarises per sweep, writes
``report.md``, ``report.html``, ``trials.csv`` and ``plots/*.png`` (see :mod:`xbarlab.reports`)."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbarlab.atomic import atomic_write_text
from xbarlab.experiments.identity import format_value
from xbarlab.experiments.results import tidy, write_table
from xbarlab.experiments.store import ResultRow, Store
from xbarlab.reports.aggregate import Group, SweepData, group_rows, normalize_rows, short_key
from xbarlab.reports.plots import bar_plot, choose_x, line_plot, metric_label, pareto_plot
from xbarlab.reports.render import Block, to_html, to_markdown
from xbarlab.reports.tables import MAX_TRIAL_ROWS, _f, _rows_table, _summary_table, _trial_table
from xbarlab.stats import metric_bounds, summarize

__all__ = ["Report", "render_report"]


@dataclass(frozen=True)
class Report:
    """Files of a rendered report."""

    out_dir: Path
    markdown: Path
    html: Path
    csv: Path
    plots: tuple[Path, ...]
    sweeps: tuple[str, ...]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "sweep"


def _sweep_blocks(data: SweepData, plots_dir: Path, info: Mapping[str, Any]) -> tuple[list[Block], list[Path]]:
    blocks: list[Block] = [Block("h2", f"Sweep `{data.name}`")]
    plots: list[Path] = []
    desc = info.get("description")
    if desc:
        blocks.append(Block("p", str(desc)))
    facts = [f"{len(data.rows)} trial result(s); mitigations: {', '.join(data.mitigations)}"]
    incomplete = info.get("planned") is not None and int(info["done"]) < int(info["planned"])
    if info.get("planned") is not None:
        facts.append(f"planned trials: {info['planned']}, with results: {info['done']}")
    if incomplete:
        blocks.append(
            Block(
                "p",
                f"**Incomplete sweep**: {info['done']} of {info['planned']} planned trials have results (resume it "
                "with `xbarlab sweep`); values listed as fixed below may only be the ones reached so far.",
            )
        )
    if data.dims:
        facts.append("swept: " + ", ".join(f"`{d}` ({len(data.dim_values(d))} values)" for d in data.dims))
    for k, v in data.constants.items():
        facts.append(f"fixed{' so far' if incomplete else ''}: `{k}` = {format_value(v)}")
    q = data.quality
    clean = Group((), "").summary("x")
    for g in data.groups:
        clean = g.summary(data.clean_quality) or clean
    if clean is not None:
        unit = " %" if metric_bounds(q) is not None else ""
        facts.append(f"digital (clean) {q}: {_f(clean.mean, q)}{unit}")
    blocks.append(Block("ul", items=facts))
    stem = _slug(data.name)
    x, _ = choose_x(data)
    first = data.mitigations[:1]
    if q in data.metrics:
        stem_q = _slug(q.replace("_", "-"))
        label = "Accuracy" if q == "accuracy" else metric_label(q)
        if x is not None:
            p = line_plot(data, q, plots_dir / f"{stem}-{stem_q}.png")
            caption = f"{label} vs {short_key(x)}: mean over chips, band = 95 % CI; one line per mitigation."
        else:
            p = bar_plot(data, q, plots_dir / f"{stem}-{stem_q}.png")
            caption = f"{label} per configuration and mitigation: mean over chips, error bar = 95 % CI."
        if p is not None:
            plots.append(p)
            blocks.append(Block("img", caption, path=p))
    for metric in ("pc2", "pc2_proj"):
        if metric not in data.metrics:
            continue
        path = plots_dir / f"{stem}-{metric.replace('_', '-')}.png"
        if x is not None:
            p = line_plot(
                data,
                metric,
                path,
                mitigations=first,
                title=f"{metric_label(metric)} vs {short_key(x)} (mean, 95 % CI over chips)",
            )
        else:
            p = bar_plot(
                data,
                metric,
                path,
                mitigations=first,
                title=f"{metric_label(metric)} per configuration (mean, 95 % CI over chips)",
            )
        if p is not None:
            plots.append(p)
            blocks.append(
                Block(
                    "img",
                    f"{metric_label(metric)} of the probe layer (before mitigation, which "
                    f"does not change the weights).",
                    path=p,
                )
            )
    pareto = data.hints.get("pareto")
    extra: list[str] = []
    if pareto:
        px, py = pareto[0], pareto[1]
        by = pareto[2] if len(pareto) > 2 else None
        extra.append(px)
        p = pareto_plot(data, px, py, plots_dir / f"{stem}-pareto.png", by=by)
        if p is not None:
            plots.append(p)
            blocks.append(
                Block(
                    "img",
                    f"Pareto front of {py} vs {short_key(px)} (minimise {short_key(px)}, "
                    f"maximise {py}); points are means over chips.",
                    path=p,
                )
            )
    blocks.append(Block("h3", "Results by configuration"))
    blocks.append(_summary_table(data, extra))
    blocks.append(Block("h3", "All trials"))
    if len(data.rows) <= MAX_TRIAL_ROWS:
        blocks.append(_trial_table(data))
    else:
        blocks.append(Block("p", f"{len(data.rows)} trials: see `trials.csv`."))
    if data.spec_text:
        blocks.append(Block("h3", "Sweep file"))
        blocks.append(Block("pre", data.spec_text))
    return blocks, plots


def _from_store(store: Any, sweep: str | None) -> tuple[list[SweepData], list[dict[str, Any]], dict[str, Any]]:
    sweeps = store.sweeps()
    if sweep is not None:
        sweeps = [s for s in sweeps if s["name"] == sweep]
        if not sweeps:
            names = ", ".join(s["name"] for s in store.sweeps()) or "none"
            raise ValueError(f"sweep: invalid value {sweep!r}; allowed: a sweep of the store ({names})")
    datas = []
    infos = []
    for s in sweeps:
        rows = normalize_rows(store.rows(s["name"]))
        spec = s["spec"]
        report = spec.get("report", {}) or {}
        hints = {
            "metric": report.get("metric"),
            "x": report.get("x"),
            "log_x": report.get("log_x"),
            "pareto": tuple(report["pareto"]) if report.get("pareto") else None,
        }
        order = [axis[0] for axis in spec.get("grid", [])]
        datas.append(group_rows(s["name"], rows, grid_order=order, hints=hints, spec_text=s["spec_text"]))
        infos.append(
            {
                "description": spec.get("description"),
                "planned": s["planned"],
                "done": s["done"],
                "title": report.get("title"),
            }
        )
    extra = {
        "environments": store.environments(),
        "failures": store.failures(),
        "timings": store.timings(sweep),
        "path": str(store.path),
    }
    return datas, infos, extra


def render_report(
    source: Any,
    out_dir: str | Path,
    *,
    title: str | None = None,
    sweep: str | None = None,
    notes: Sequence[str] | str | None = None,
    x: str | None = None,
    log_x: bool | None = None,
    pareto: tuple[str, ...] | None = None,
) -> Report:
    """Render a report folder from a results store or from rows; returns the written files.

    Args:
        source: a :class:`xbarlab.experiments.Store`, a store path, or rows: :class:`ResultRow` objects or
            mappings ``{"params": {...}, "mitigation": str, "metrics": {...}, "chip": int, "sweep": str}``.
        out_dir: report folder (created); ``report.md``, ``report.html``, ``trials.csv``, ``plots/*.png``.
        title: page title (default: from the sweep file, else the sweep names).
        sweep: only this sweep of the store.
        notes: Markdown paragraphs (``- `` lines become bullet lists) put after the title.
        x, log_x, pareto: plot hints for rows given directly (store sweeps use their file's ``report`` key).
    """
    out = Path(out_dir)
    plots_dir = out / "plots"
    if out.exists() and not out.is_dir():
        raise ValueError(f"-o: {out} is a file; allowed: a folder (created when missing)")
    extra: dict[str, Any] = {}
    result_rows: list[ResultRow] = []
    if isinstance(source, (str, Path)):
        with Store(source, readonly=True) as db:
            return render_report(db, out, title=title, sweep=sweep, notes=notes, x=x, log_x=log_x, pareto=pareto)
    if isinstance(source, Store):
        datas, infos, extra = _from_store(source, sweep)
        result_rows = source.rows(sweep)
    else:
        rows = normalize_rows(_as_list(source))
        names: list[str] = []
        for r in rows:
            if r.sweep not in names:
                names.append(r.sweep)
        hints = {"x": x, "log_x": log_x, "pareto": pareto}
        datas = [group_rows(n, [r for r in rows if r.sweep == n], hints=hints) for n in names]
        infos = [{} for _ in names]
        result_rows = [r for r in _as_list(source) if isinstance(r, ResultRow)]
    if not datas:
        raise ValueError("nothing to report: no sweep with results")
    plots_dir.mkdir(parents=True, exist_ok=True)  # the inputs are checked: only now is anything written
    page_title = (
        title
        or next((i.get("title") for i in infos if i.get("title")), None)
        or ("xbarlab report: " + ", ".join(d.name for d in datas))
    )
    blocks: list[Block] = [Block("h1", page_title)]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    src = f"store `{extra['path']}`" if extra.get("path") else "rows passed to render_report"
    blocks.append(
        Block(
            "p",
            f"Generated {stamp} from {src}. Means over chip instances with Student-t 95 % confidence intervals.",
        )
    )
    blocks += _note_blocks(notes)
    plots: list[Path] = []
    for data, info in zip(datas, infos, strict=True):
        b, p = _sweep_blocks(data, plots_dir, info)
        blocks += b
        plots += p
    blocks += _extra_blocks(extra)
    csv_path = out / "trials.csv"
    if result_rows:
        columns, records = tidy(result_rows)
    else:
        columns, records = _rows_table(datas)
    write_table(columns, records, "csv", csv_path)
    md_path = out / "report.md"
    html_path = out / "report.html"
    atomic_write_text(md_path, to_markdown(blocks, out))
    atomic_write_text(html_path, to_html(blocks, page_title))
    return Report(out, md_path, html_path, csv_path, tuple(plots), tuple(d.name for d in datas))


def _as_list(source: Iterable[Any]) -> list[Any]:
    return list(source)


def _note_blocks(notes: Sequence[str] | str | None) -> list[Block]:
    if not notes:
        return []
    paragraphs = [notes] if isinstance(notes, str) else list(notes)
    blocks: list[Block] = []
    for para in paragraphs:
        lines = [ln for ln in para.strip().splitlines()]
        if lines and all(ln.lstrip().startswith("- ") for ln in lines):
            blocks.append(Block("ul", items=[ln.lstrip()[2:] for ln in lines]))
        elif lines and lines[0].startswith("#"):
            level = min(3, len(lines[0]) - len(lines[0].lstrip("#")))
            blocks.append(Block(f"h{max(2, level)}", lines[0].lstrip("#").strip()))
            if lines[1:]:
                blocks += _note_blocks("\n".join(lines[1:]))
        else:
            blocks.append(Block("p", " ".join(ln.strip() for ln in lines)))
    return blocks


def _extra_blocks(extra: Mapping[str, Any]) -> list[Block]:
    blocks: list[Block] = []
    failures = extra.get("failures") or []
    if failures:
        blocks.append(Block("h2", "Failed trials (no result; they run again on resume)"))
        blocks.append(
            Block(
                "table",
                headers=["hash", "attempts", "error"],
                rows=[[f["hash"][:12], str(f["attempts"]), str(f["error"])[:200]] for f in failures],
            )
        )
    timings = extra.get("timings") or {}
    if timings:
        blocks.append(Block("h2", "Timings per trial (s)"))
        rows = []
        for phase in sorted(timings, key=lambda p: (p == "total_s", p)):
            s = summarize(timings[phase])
            rows.append([phase, str(s.n), f"{s.mean:.3f}", f"{max(timings[phase]):.3f}"])
        blocks.append(Block("table", headers=["phase", "n", "mean", "max"], rows=rows))
    envs = extra.get("environments") or []
    if envs:
        blocks.append(Block("h2", "Environment"))
        keys = ["host", "device", "xbarlab", "torch", "numpy", "python", "cpu_count", "results"]
        blocks.append(Block("table", headers=keys, rows=[[str(e.get(k, "")) for k in keys] for e in envs]))
    return blocks
