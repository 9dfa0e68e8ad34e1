"""Report tables: the aggregated results per group (mean ± 95 % CI per metric) and the per-trial table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xbarlab.experiments.identity import format_value
from xbarlab.reports.aggregate import Group, SweepData, short_key
from xbarlab.reports.render import Block
from xbarlab.stats import BOUNDED_MARK, metric_bounds

__all__ = ["MAX_TRIAL_ROWS"]

MAX_TRIAL_ROWS = 400
"""Per-trial tables longer than this are left to ``trials.csv``."""


def _f(value: float | None, metric: str) -> str:
    if value is None:
        return ""
    if metric.startswith("pc2"):
        return f"{value:.3e}"
    if metric_bounds(metric) is not None or "accuracy" in metric or metric.endswith("acc"):
        return f"{value:.2f}"
    return f"{value:.4g}"


def _sorted_groups(data: SweepData) -> list[Group]:
    def key(g: Group) -> tuple[Any, ...]:
        parts: list[Any] = []
        for i, d in enumerate(data.dims):
            vals = data.dim_values(d)
            parts.append(next((j for j, v in enumerate(vals) if v == g.key[i]), 0))
        parts.append(data.mitigations.index(g.mitigation))
        return tuple(parts)

    return sorted(data.groups, key=key)


def _summary_table(data: SweepData, extra: Sequence[str]) -> Block:
    q = data.quality
    metrics = [m for m in ("pc2", "pc2_proj", data.clean_quality, *extra) if m in data.metrics and m != q]
    metrics = list(dict.fromkeys(metrics))
    headers = [
        *(short_key(d) for d in data.dims),
        "mitigation",
        "n",
        f"{q} mean",
        "std",
        "95 % CI",
        *(f"{m} mean" for m in metrics),
    ]
    rows = []
    for g in _sorted_groups(data):
        s = g.summary(q)
        row = [format_value(v) for v in g.key] + [g.mitigation, str(g.n)]
        if s is not None and s.n < 2:  # one chip: no spread to estimate
            row += [_f(s.mean, q), "–", "–"]
        elif s is not None:
            row += [
                _f(s.mean, q),
                _f(s.std, q),
                f"[{_f(s.ci95_low, q)}, {_f(s.ci95_high, q)}]" + (BOUNDED_MARK if s.bounded else ""),
            ]
        else:
            row += ["", "", ""]
        for m in metrics:
            ms = g.summary(m)
            row.append(_f(ms.mean if ms else None, m))
        rows.append(row)
    if any(BOUNDED_MARK in cell for row in rows for cell in row):  # say what the mark means, in the table
        headers[headers.index("95 % CI")] = f"95 % CI ({BOUNDED_MARK}: limited to 0–100 %)"
    return Block("table", headers=headers, rows=rows)


def _trial_table(data: SweepData) -> Block:
    metrics = [m for m in (data.quality, "pc2", "pc2_proj") if m in data.metrics]
    headers = [*(short_key(d) for d in data.dims), "mitigation", "chip", *metrics]
    rows = []
    for r in data.rows:
        rows.append(
            [format_value(r.params.get(d)) for d in data.dims]
            + [r.mitigation, str(r.chip)]
            + [_f(r.metrics.get(m) if isinstance(r.metrics.get(m), (int, float)) else None, m) for m in metrics]
        )
    return Block("table", headers=headers, rows=rows)


def _rows_table(datas: Sequence[SweepData]) -> tuple[list[str], list[dict[str, Any]]]:
    columns: list[str] = ["sweep"]
    records = []
    for d in datas:
        for r in d.rows:
            rec: dict[str, Any] = {"sweep": r.sweep}
            rec.update({k: format_value(v) if isinstance(v, (dict, list)) else v for k, v in r.params.items()})
            rec["mitigation"] = r.mitigation
            rec["chip"] = r.chip
            rec.update(r.metrics)
            for k in rec:
                if k not in columns:
                    columns.append(k)
            records.append(rec)
    return columns, records
