"""Matplotlib figures of a sweep: metric vs a swept key with 95 % CI bands, bar charts, Pareto fronts; and the
W_NI vs W_ideal weight scatter of a chip (:func:`plot_weight_scatter`, from :mod:`xbarlab.metrics` records).

Every function writes one PNG and returns its path (or None when there is nothing to draw). The Agg backend
is used, so no display is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xbarlab.atomic import atomic_write
from xbarlab.experiments.identity import canonical_json, format_value
from xbarlab.metrics import MAX_SCATTER_POINTS, ArrayLike, LayerDistortion, _pair, _subsample, pc2
from xbarlab.reports.aggregate import Group, SweepData, is_number, pareto_front, short_key
from xbarlab.stats import metric_bounds

__all__ = [
    "bar_plot",
    "choose_x",
    "curve_plot",
    "line_plot",
    "pareto_plot",
    "plot_weight_scatter",
    "points_pareto_plot",
]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_LABELS = {
    "accuracy": "accuracy (%)",
    "pc2": "PC2",
    "pc2_proj": "PC2-proj",
    "clean_accuracy": "clean accuracy (%)",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def metric_label(metric: str) -> str:
    """Axis label of a metric (a percentage ``<name>_pct`` reads ``<name> (%)``)."""
    if metric in _LABELS:
        return _LABELS[metric]
    return metric.removesuffix("_pct") + " (%)" if metric.endswith("_pct") else metric


def choose_x(data: SweepData) -> tuple[str | None, bool]:
    """The swept key for the x axis (first numeric dimension unless the sweep names one) and log scale."""
    x = data.hints.get("x")
    if x not in data.dims:
        x = next((d for d in data.dims if all(is_number(v) for v in data.dim_values(d))), None)
    if x is None:
        return None, False
    log = data.hints.get("log_x")
    if log is None:
        vals = [float(v) for v in data.dim_values(x)]
        log = x == "drift_s" or x.endswith("_s") or (min(vals) > 0 and max(vals) / min(vals) >= 1e3)
    return x, bool(log)


def _color(data: SweepData, mitigation: str) -> str:
    return _COLORS[data.mitigations.index(mitigation) % len(_COLORS)]


def _facets(data: SweepData, x: str | None) -> list[tuple[tuple[Any, ...], list[Group]]]:
    """Groups split by the values of the dimensions other than ``x``."""
    others = [d for d in data.dims if d != x]
    out: dict[str, tuple[tuple[Any, ...], list[Group]]] = {}
    for g in data.groups:
        fkey = tuple(g.key[data.dims.index(d)] for d in others)
        out.setdefault(canonical_json(fkey), (fkey, []))[1].append(g)
    return list(out.values())


def line_plot(
    data: SweepData,
    metric: str,
    path: Path,
    *,
    mitigations: Sequence[str] | None = None,
    title: str | None = None,
) -> Path | None:
    """``metric`` vs the x dimension, one line per mitigation with a 95 % CI band; one panel per facet."""
    x, log_x = choose_x(data)
    if x is None:
        return None
    facets = _facets(data, x)
    facets = [(k, [g for g in gs if g.summary(metric) is not None]) for k, gs in facets]
    facets = [(k, gs) for k, gs in facets if gs]
    if not facets:
        return None
    plt = _plt()
    n = len(facets)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    others = [d for d in data.dims if d != x]
    xi = data.dims.index(x)
    for idx, (fkey, groups) in enumerate(facets):
        ax = axes[idx // cols][idx % cols]
        for mit in mitigations or data.mitigations:
            pts = sorted(
                ((float(g.key[xi]), g.summary(metric)) for g in groups if g.mitigation == mit),
                key=lambda t: t[0],
            )
            if not pts:
                continue
            xs = [p[0] for p in pts]
            means = [p[1].mean for p in pts if p[1] is not None]
            lo = [p[1].ci95_low for p in pts if p[1] is not None]
            hi = [p[1].ci95_high for p in pts if p[1] is not None]
            if metric_bounds(metric) is not None:  # a CI beyond [0, 100] % carries no information
                lo = [max(0.0, v) for v in lo]
                hi = [min(100.0, v) for v in hi]
            label = mit if mitigations is None or len(mitigations) > 1 else None
            ax.plot(xs, means, marker="o", color=_color(data, mit), label=label)
            ax.fill_between(xs, lo, hi, color=_color(data, mit), alpha=0.18, linewidth=0)
        clean = [g.summary(data.clean_quality) for g in groups] if metric == data.quality else []
        ref = [c.mean for c in clean if c is not None]
        if ref:
            ax.axhline(sum(ref) / len(ref), color="black", linestyle="--", linewidth=1, label="digital")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(short_key(x))
        ax.set_ylabel(metric_label(metric))
        ax.grid(True, alpha=0.3)
        if others:
            ax.set_title(
                ", ".join(f"{short_key(d)}={format_value(v)}" for d, v in zip(others, fkey, strict=True)),
                fontsize=9,
            )
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for idx in range(n, rows * cols):
        axes[idx // cols][idx % cols].axis("off")
    fig.suptitle(title or f"{metric_label(metric)} vs {short_key(x)} (mean, 95 % CI over chips)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def bar_plot(
    data: SweepData,
    metric: str,
    path: Path,
    *,
    mitigations: Sequence[str] | None = None,
    title: str | None = None,
) -> Path | None:
    """Grouped bars: one group per combination of the swept values, one bar per mitigation, 95 % CI bars."""
    mits = list(mitigations or data.mitigations)
    cats: list[tuple[Any, ...]] = []
    tokens: list[str] = []
    for g in data.groups:
        t = canonical_json(g.key)
        if t not in tokens and g.summary(metric) is not None:
            tokens.append(t)
            cats.append(g.key)
    if not cats:
        return None
    plt = _plt()
    width = 0.8 / max(1, len(mits))
    label_lines = max(data.label(k, sep="\n").count("\n") + 1 for k in cats)
    height = 3.6 + 0.16 * label_lines
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 + 1.1 * len(cats) * max(1, len(mits)) * 0.55), height))
    for j, mit in enumerate(mits):
        xs: list[float] = []
        means: list[float] = []
        errs: list[tuple[float, float]] = []
        for i in range(len(cats)):
            found = next((g for g in data.groups if g.mitigation == mit and canonical_json(g.key) == tokens[i]), None)
            s = found.summary(metric) if found is not None else None
            if s is None:
                continue
            xs.append(i + (j - (len(mits) - 1) / 2) * width)
            means.append(s.mean)
            lo, hi = s.ci95_low, s.ci95_high
            if metric_bounds(metric) is not None:  # a CI beyond [0, 100] % carries no information
                lo, hi = max(0.0, lo), min(100.0, hi)
            errs.append((s.mean - lo, hi - s.mean))
        if xs:
            label = mit if len(mits) > 1 or mitigations is None else None
            yerr = [[e[0] for e in errs], [e[1] for e in errs]]
            ax.bar(xs, means, width=width * 0.95, yerr=yerr, capsize=3, color=_color(data, mit), label=label)
    if metric == data.quality and data.clean_quality in data.metrics:
        clean = [g.summary(data.clean_quality) for g in data.groups]
        ref = [c.mean for c in clean if c is not None]
        if ref:
            ax.axhline(sum(ref) / len(ref), color="black", linestyle="--", linewidth=1, label="digital")
    ax.set_xticks(range(len(cats)))
    multi = len(data.dims) > 1
    ax.set_xticklabels(
        [data.label(k, sep="\n") for k in cats],
        rotation=20 if len(cats) > 3 and not multi else 0,
        ha="right" if len(cats) > 3 and not multi else "center",
        fontsize=8 if len(cats) <= 6 else 7,
    )
    ax.set_ylabel(metric_label(metric))
    ax.grid(True, axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.set_title(title or f"{metric_label(metric)} (mean, 95 % CI over chips)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def pareto_plot(data: SweepData, x_metric: str, y_metric: str, path: Path, *, by: str | None = None) -> Path | None:
    """Mean ``y_metric`` vs mean ``x_metric`` per configuration with the Pareto front (low x, high y).

    With ``by`` (a swept key), one front per value of ``by`` (e.g. per variation level), each in its colour;
    markers distinguish the mitigations.
    """
    series: dict[str, tuple[str, list[tuple[float, float, str, str]]]] = {}
    label_dims = [d for d in data.dims if d != by]
    for g in data.groups:
        xv = _value(data, g, x_metric)
        s = g.summary(y_metric)
        if xv is None or s is None:
            continue
        bval = g.key[data.dims.index(by)] if by in data.dims else None
        token = canonical_json(bval)
        name = f"{short_key(by)}={format_value(bval)}" if by in data.dims and by is not None else "all"
        label = ", ".join(
            f"{short_key(d)}={format_value(g.key[data.dims.index(d)])}" for d in label_dims if d != x_metric
        )
        series.setdefault(token, (name, []))[1].append((xv, s.mean, label, g.mitigation))
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    all_x: list[float] = []
    for k, (name, pts) in enumerate(series.values()):
        color = _COLORS[k % len(_COLORS)] if len(series) > 1 else "black"
        for mit in data.mitigations:
            sel = [p for p in pts if p[3] == mit]
            if sel:
                ax.scatter(
                    [p[0] for p in sel],
                    [p[1] for p in sel],
                    color=color,
                    s=26,
                    alpha=0.75,
                    marker=_MARKERS[data.mitigations.index(mit) % len(_MARKERS)],
                )
        front = pareto_front([(p[0], p[1]) for p in pts])
        ax.step(
            [pts[i][0] for i in front],
            [pts[i][1] for i in front],
            where="post",
            color=color,
            linewidth=1.2,
            label=f"front: {name}" if len(series) > 1 else "Pareto front",
        )
        if len(series) == 1:
            for i in front:
                text = " / ".join(t for t in (pts[i][2], pts[i][3]) if t)
                ax.annotate(text, (pts[i][0], pts[i][1]), fontsize=7, xytext=(4, 4), textcoords="offset points")
        all_x += [p[0] for p in pts]
    for mit in data.mitigations:
        ax.scatter([], [], color="gray", marker=_MARKERS[data.mitigations.index(mit) % len(_MARKERS)], label=mit)
    if all_x and min(all_x) > 0 and max(all_x) / min(all_x) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(metric_label(short_key(x_metric)))
    ax.set_ylabel(metric_label(y_metric))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(series) > 4 else 1)
    ax.set_title(f"Pareto front: {metric_label(y_metric)} vs {short_key(x_metric)} (means over chips)", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def curve_plot(
    curves: dict[str, list[tuple[float, float, float, float]]],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    hline: tuple[float, str] | None = None,
) -> Path | None:
    """Lines with 95 % CI bands from plain data: ``curves[name] = [(x, mean, ci_low, ci_high), ...]``;
    ``hline``: a dashed reference level and its label."""
    if not any(curves.values()):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, (name, pts) in enumerate(curves.items()):
        pts = sorted(pts)
        color = _COLORS[k % len(_COLORS)]
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], marker="o", color=color, label=name)
        ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts], color=color, alpha=0.15)
    if hline is not None:
        ax.axhline(hline[0], color="gray", linestyle="--", linewidth=1, label=hline[1])
    return _finish(fig, ax, path, xlabel=xlabel, ylabel=ylabel, title=title)


def points_pareto_plot(
    points: Sequence[tuple[float, float, str]],
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    highlight: Sequence[str] = (),
) -> Path | None:
    """Scatter of ``(x, y, label)`` points (low x and high y are better) with their Pareto front; points whose
    label is in ``highlight`` are annotated."""
    if not points:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=22, alpha=0.6, color=_COLORS[0], label="evaluated")
    front = pareto_front([(p[0], p[1]) for p in points])
    ax.step(
        [points[i][0] for i in front],
        [points[i][1] for i in front],
        where="post",
        color="black",
        linewidth=1.2,
        label="Pareto front",
    )
    for p in points:
        if p[2] in highlight:
            ax.scatter([p[0]], [p[1]], s=46, color=_COLORS[1], zorder=3)
            ax.annotate(p[2], (p[0], p[1]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    xs = [p[0] for p in points]
    if min(xs) > 0 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)
    return _finish(fig, ax, path, xlabel=xlabel, ylabel=ylabel, title=title)


def plot_weight_scatter(
    data: Sequence[LayerDistortion] | tuple[ArrayLike, ArrayLike],
    path: str | Path,
    *,
    max_points: int = MAX_SCATTER_POINTS,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Write the W_NI vs W_ideal scatter ("dumb-bell" plot of P1 Fig. 4) as a PNG and return its path.

    Args:
        data: either a pair ``(w_ideal, w_ni)`` (tensors/arrays of the same shape) or a sequence of
            :class:`LayerDistortion` records with scatter samples (one panel per layer).
        path: output PNG file; parent directories are created.
        max_points: at most this many points are drawn per panel (random subsample).
        seed: subsampling seed.
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, np.ndarray, np.ndarray, float]] = []
    if isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], LayerDistortion):
        x, y = _pair(data[0], data[1], "plot_weight_scatter", "w_ideal", "w_ni")
        panels.append(("", *_subsample(x, y, max_points, seed), pc2(x, y)))
    else:
        for rec in data:
            if not isinstance(rec, LayerDistortion):
                raise TypeError(
                    "plot_weight_scatter: data must be (w_ideal, w_ni) or LayerDistortion records, "
                    f"got an item of type {type(rec).__name__}"
                )
            if rec.scatter is None:
                raise ValueError(
                    f"plot_weight_scatter: record {rec.layer_name!r} has no scatter sample "
                    "(use layer_distortion(..., keep_scatter=True))"
                )
            panels.append((rec.layer_name, *_subsample(*rec.scatter, max_points, seed), rec.pc2))
    if not panels:
        raise ValueError("plot_weight_scatter: nothing to plot (empty record list)")
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, (name, x, y, p) in zip(axes.flat, panels, strict=False):
        ax.scatter(x, y, s=1, alpha=0.3, rasterized=True)
        lo = float(min(x.min(), y.min()))
        hi = float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--", label="W_NI = W_ideal")
        ax.set_xlabel("W_ideal")
        ax.set_ylabel("W_NI")
        ax.set_title(f"{name + ': ' if name else ''}PC2 = {p:.3g}", fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(out, lambda p: fig.savefig(p, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return out


def _finish(fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, title: str) -> Path:
    """Labels, grid, legend and title of a single-panel figure, then save it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _value(data: SweepData, g: Group, name: str) -> float | None:
    """A metric mean, or a swept numeric value, of a group."""
    s = g.summary(name)
    if s is not None:
        return s.mean
    v = g.key[data.dims.index(name)] if name in data.dims else data.constants.get(name)
    return float(v) if v is not None and is_number(v) else None


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda p: fig.savefig(p, dpi=110))
    finally:
        plt.close(fig)
    return path
