"""Group trial results by the swept values and the mitigation and summarise them over chip instances."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xbarlab.experiments.identity import canonical_json, format_value
from xbarlab.stats import Summary, metric_bounds, summarize

__all__ = ["Group", "Row", "SweepData", "group_rows", "is_number", "normalize_rows", "pareto_front"]


@dataclass(frozen=True)
class Row:
    """One trial for reporting: sweep name, swept values, mitigation, metrics, chip index."""

    sweep: str
    params: Mapping[str, Any]
    mitigation: str
    metrics: Mapping[str, Any]
    chip: int = 0


@dataclass
class Group:
    """Trials sharing the swept values (``key``) and the mitigation, with per-metric summaries."""

    key: tuple[Any, ...]
    mitigation: str
    values: dict[str, list[float]] = field(default_factory=dict)

    def summary(self, metric: str) -> Summary | None:
        """Mean, std and 95 % CI of ``metric`` over the chips (None when not recorded)."""
        vals = self.values.get(metric)
        return summarize(vals, bounds=metric_bounds(metric)) if vals else None

    @property
    def n(self) -> int:
        """Number of trials (chips) in the group."""
        return max((len(v) for v in self.values.values()), default=0)


def quality_metric(hints: Mapping[str, Any]) -> str:
    """The metric a sweep is judged by: its ``report.metric`` hint, else ``accuracy``."""
    return str(hints.get("metric") or "accuracy")


@dataclass
class SweepData:
    """The rows of one sweep with its dimensions: the swept keys whose value varies, and the mitigations."""

    name: str
    rows: list[Row]
    dims: list[str]
    constants: dict[str, Any]
    mitigations: list[str]
    groups: list[Group]
    metrics: list[str]
    hints: Mapping[str, Any] = field(default_factory=dict)
    spec_text: str | None = None

    @property
    def quality(self) -> str:
        """The metric the sweep is judged by (:func:`quality_metric` of its hints)."""
        return quality_metric(self.hints)

    @property
    def clean_quality(self) -> str:
        """The digital model's value of :attr:`quality` (``clean_<quality>``)."""
        return "clean_" + self.quality

    def dim_values(self, dim: str) -> list[Any]:
        """Distinct values of a dimension in first-seen order (numbers sorted)."""
        i = self.dims.index(dim)
        seen: list[Any] = []
        tokens: set[str] = set()
        for g in self.groups:
            token = canonical_json(g.key[i])
            if token not in tokens:
                tokens.add(token)
                seen.append(g.key[i])
        if all(is_number(v) for v in seen):
            seen.sort()
        return seen

    def label(self, key: Sequence[Any], dims: Sequence[str] | None = None, sep: str = ", ") -> str:
        """``dim=value, …`` label of a group key (restricted to ``dims``); mapping values in parentheses."""
        use = dims if dims is not None else self.dims
        parts = []
        for d in use:
            v = key[self.dims.index(d)]
            text = format_value(v)
            if isinstance(v, Mapping) and "=" in text:
                if sep == "\n":  # one field per line (tick labels)
                    parts.append(f"{short_key(d)}:\n" + "\n".join(f"{k}={format_value(x)}" for k, x in v.items()))
                    continue
                text = f"({text})"
            parts.append(text if len(use) == 1 else f"{short_key(d)}={text}")
        return sep.join(parts) if parts else "all"


def short_key(path: str) -> str:
    """A readable name for a dotted path (``hardware.read_noise.sigma`` → ``read_noise.sigma``)."""
    return path[len("hardware.") :] if path.startswith("hardware.") else path


def is_number(value: Any) -> bool:
    """True for ints and finite floats (not bools)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def normalize_rows(rows: Iterable[Any]) -> list[Row]:
    """Accept :class:`xbarlab.experiments.ResultRow` objects or mappings with keys ``params``, ``mitigation``,
    ``metrics`` (and optionally ``sweep``, ``chip``)."""
    out: list[Row] = []
    for r in rows:
        if isinstance(r, Row):
            out.append(r)
        elif isinstance(r, Mapping):
            metrics = r.get("metrics")
            if not isinstance(metrics, Mapping):
                raise ValueError(f"rows: each row needs a 'metrics' mapping; got {r!r}")
            out.append(
                Row(
                    str(r.get("sweep", "results")),
                    dict(r.get("params", {})),
                    str(r.get("mitigation", r.get("params", {}).get("mitigation", "none"))),
                    dict(metrics),
                    int(r.get("chip", 0)),
                )
            )
        else:  # ResultRow
            out.append(Row(r.sweep, dict(r.params), r.mitigation, dict(r.metrics), r.chip))
    return out


def group_rows(
    name: str,
    rows: Sequence[Row],
    *,
    grid_order: Sequence[str] | None = None,
    hints: Mapping[str, Any] | None = None,
    spec_text: str | None = None,
) -> SweepData:
    """Group one sweep's rows by its varying swept keys and the mitigation."""
    keys: list[str] = list(grid_order or [])
    for r in rows:
        for k in r.params:
            if k not in keys:
                keys.append(k)
    keys = [k for k in keys if k != "mitigation"]
    dims: list[str] = []
    constants: dict[str, Any] = {}
    for k in keys:
        tokens = {canonical_json(r.params.get(k)) for r in rows}
        if len(tokens) > 1:
            dims.append(k)
        elif rows:
            constants[k] = rows[0].params.get(k)
    mitigations: list[str] = []
    for r in rows:
        if r.mitigation not in mitigations:
            mitigations.append(r.mitigation)
    groups: dict[str, Group] = {}
    metrics: list[str] = []
    for r in rows:
        key = tuple(r.params.get(d) for d in dims)
        token = canonical_json([key, r.mitigation])
        group = groups.setdefault(token, Group(key, r.mitigation))
        for m, v in r.metrics.items():
            if is_number(v):
                group.values.setdefault(m, []).append(float(v))
                if m not in metrics:
                    metrics.append(m)
    quality = quality_metric(hints or {})
    first = [m for m in (quality, "pc2", "pc2_proj", "clean_" + quality) if m in metrics]
    metrics = first + [m for m in metrics if m not in first]
    return SweepData(
        name,
        list(rows),
        dims,
        constants,
        mitigations,
        list(groups.values()),
        metrics,
        dict(hints or {}),
        spec_text,
    )


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto-optimal points when minimising x (cost) and maximising y (quality), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
