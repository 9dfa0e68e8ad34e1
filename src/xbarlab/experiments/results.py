"""Tidy tables of stored results: one row per (sweep, grid point, chip), one column per variable.

Columns: ``sweep``, ``point``, ``chip``, ``seed``, one column per swept key (its dotted path; mapping values
become ``k=v`` labels), ``mitigation``, ``hardware`` (the config name), every metric (``accuracy``, ``pc2``,
…), ``wall_time_s``, ``worker``, ``executor``, ``finished_at`` and ``hash``. Export as CSV, Parquet
(``pip install 'xbarlab[parquet]'``), JSON lines or a plain-text table.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from xbarlab.atomic import atomic_write, atomic_write_text
from xbarlab.experiments.identity import format_value
from xbarlab.experiments.store import ResultRow

__all__ = ["FORMATS", "format_table", "tidy", "write_table"]

FORMATS = ("table", "csv", "parquet", "json")
_LEAD = ("sweep", "point", "chip", "seed")
_TAIL = ("wall_time_s", "worker", "executor", "finished_at", "hash")


def _cell(value: Any) -> Any:
    if isinstance(value, (Mapping, list, tuple)):
        return format_value(value)
    return value


def tidy(rows: Iterable[ResultRow]) -> tuple[list[str], list[dict[str, Any]]]:
    """``(columns, records)`` of the tidy table for ``rows`` (columns in a stable, readable order)."""
    rows = list(rows)
    params: list[str] = []
    metrics: list[str] = []
    for r in rows:
        for k in r.params:
            if k not in params:
                params.append(k)
        for k in r.metrics:
            if k not in metrics:
                metrics.append(k)
    first = [m for m in ("accuracy", "pc2", "pc2_proj") if m in metrics]
    metrics = first + sorted(m for m in metrics if m not in first)
    param_cols = [p for p in params if p != "mitigation"]
    columns = [*_LEAD, *param_cols, "mitigation", "hardware", *metrics, *_TAIL]
    records = []
    for r in rows:
        rec: dict[str, Any] = {"sweep": r.sweep, "point": r.point, "chip": r.chip, "seed": r.seed}
        for p in param_cols:
            rec[p] = _cell(r.params.get(p))
        rec["mitigation"] = r.mitigation
        rec["hardware"] = r.config.get("hardware", {}).get("name")
        for m in metrics:
            rec[m] = _cell(r.metrics.get(m))
        rec.update(
            {
                "wall_time_s": r.wall_time_s,
                "worker": r.worker,
                "executor": r.executor,
                "finished_at": r.finished_at,
                "hash": r.hash,
            }
        )
        records.append(rec)
    return columns, records


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_table(columns: Sequence[str], records: Sequence[Mapping[str, Any]], *, max_width: int = 24) -> str:
    """A plain-text table (hash shortened to 12 characters, long cells cut at ``max_width``)."""

    def cell(col: str, rec: Mapping[str, Any]) -> str:
        text = _fmt(rec.get(col))
        if col == "hash":
            text = text[:12]
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    body = [[cell(c, r) for c in columns] for r in records]
    widths = [max([len(c), *(len(row[i]) for row in body)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in body]
    return "\n".join(lines)


def write_table(
    columns: Sequence[str], records: Sequence[Mapping[str, Any]], fmt: str, out: str | Path | None = None
) -> str | None:
    """Write the table in ``fmt`` to ``out`` (atomically), or return it as text; parquet needs ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"format: invalid value {fmt!r}; allowed: {', '.join(FORMATS)}")
    if fmt == "parquet":
        if out is None:
            raise ValueError("format parquet: needs an output file (-o FILE.parquet)")
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ImportError("format parquet needs pyarrow: pip install 'xbarlab[parquet]'") from exc
        table = (
            pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in records], schema=None).select(list(columns))
            if records
            else pa.table({c: pa.array([], type=pa.string()) for c in columns})
        )
        atomic_write(out, lambda p: pq.write_table(table, str(p)))
        return None
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow({c: "" if r.get(c) is None else r.get(c) for c in columns})
        text = buf.getvalue()
    elif fmt == "json":
        text = "".join(json.dumps({c: r.get(c) for c in columns}, allow_nan=True) + "\n" for r in records)
    else:
        text = format_table(columns, records) + "\n"
    if out is None:
        return text
    atomic_write_text(out, text)
    return None


def print_text(text: str) -> None:
    """Write text to stdout (used by the CLI)."""
    sys.stdout.write(text)
