"""The grid of a sweep file: dotted-path axes, their checks, and how a grid value is set in the settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from xbarlab.experiments.identity import canonical_json, plain
from xbarlab.experiments.settings import (
    _BASE_FIELDS,
    _DATA_FIELDS,
    _HW_KEYS,
    _METRIC_FIELDS,
    _MODEL_FIELDS,
    Path_,
    _Ctx,
)
from xbarlab.schema import Field


@dataclass(frozen=True)
class GridAxis:
    """One swept key: a dotted path into the base settings, its values and its line in the file."""

    path: str
    values: tuple[Any, ...]
    line: int | None = None


_SCALAR_KEYS = ("drift_s", "mitigation", "device")


def _grid_target(ctx: _Ctx, key: str, line_path: Path_) -> tuple[str, ...]:
    """Check a grid key's syntax; returns its parts."""
    parts = tuple(key.split("."))
    if any(not p for p in parts):
        raise ctx.error(line_path, "empty path component; allowed: a dotted path such as hardware.read_noise.sigma")
    head = parts[0]
    allowed_heads = ", ".join(_BASE_FIELDS)
    if head not in _BASE_FIELDS:
        raise ctx.error(line_path, f"unknown key {head!r}; allowed: a dotted path starting with one of {allowed_heads}")
    if head in _SCALAR_KEYS and len(parts) != 1:
        raise ctx.error(line_path, f"{head!r} takes no sub-key; allowed: {head}")
    tables = {"model": _MODEL_FIELDS, "data": _DATA_FIELDS, "metrics": _METRIC_FIELDS}
    if head in tables and (len(parts) != 2 or parts[1] not in tables[head]):
        raise ctx.error(line_path, f"unknown key; allowed: {', '.join(f'{head}.{k}' for k in tables[head])}")
    if head == "mitigation_options" and len(parts) != 3:
        raise ctx.error(line_path, "allowed: mitigation_options.<mitigation>.<option>")
    if head == "hardware":
        if len(parts) < 2 or parts[1] not in _HW_KEYS or parts[1] == "overrides":
            keys = ", ".join(k for k in _HW_KEYS if k != "overrides")
            raise ctx.error(line_path, f"unknown key; allowed: hardware.<key> with key among {keys}")
        if parts[1] in ("preset", "file", "name", "keep_digital", "layers") and len(parts) != 2:
            raise ctx.error(line_path, f"hardware.{parts[1]} takes no sub-key")
    return parts


def _apply_path(ctx: _Ctx, settings: dict[str, Any], axis: GridAxis, value: Any) -> None:
    """Set the grid value ``value`` of ``axis`` in ``settings`` (in place)."""
    parts = tuple(axis.path.split("."))
    head = parts[0]
    value = plain(value)
    if len(parts) == 1:
        settings[head] = value
        return
    if head == "model":
        settings["model"] = {"pretrained": None, "checkpoint": None, parts[1]: value}
        return
    if head in ("data", "metrics"):
        settings[head][parts[1]] = value
        return
    if head == "mitigation_options":
        settings[head].setdefault(parts[1], {})[parts[2]] = value
        return
    hw = settings["hardware"]
    if parts[1] in ("preset", "file"):
        hw.pop("preset", None)
        hw.pop("file", None)
        hw[parts[1]] = value
        return
    dotted = ".".join(parts[1:])
    overrides = hw.setdefault("overrides", {})
    if isinstance(value, Mapping):
        for k, v in value.items():
            overrides[f"{dotted}.{k}"] = v
    else:
        overrides[dotted] = value


def _check_grid(ctx: _Ctx, data: Any) -> tuple[GridAxis, ...]:
    if not isinstance(data, Mapping):
        raise ctx.error(("grid",), f"invalid value {data!r}; allowed: a mapping of dotted paths to lists of values")
    if not data:
        raise ctx.error(("grid",), "empty grid; allowed: at least one dotted path with a non-empty list of values")
    axes: list[GridAxis] = []
    for key, values in data.items():
        k = str(key)
        line_path: Path_ = ("grid", k)
        _grid_target(ctx, k, line_path)
        if not isinstance(values, list):
            raise ctx.error(line_path, f"invalid value {values!r}; allowed: a non-empty list of values")
        if not values:
            raise ctx.error(line_path, "empty list of values; allowed: a non-empty list")
        seen: list[str] = []
        for v in values:
            token = canonical_json(v)
            if token in seen:
                raise ctx.error(line_path, f"value {v!r} listed twice; allowed: distinct values")
            seen.append(token)
        axes.append(GridAxis(k, tuple(plain(v) for v in values), ctx.line(line_path)))
    # per-axis type checks: set each value alone on the base and validate the plain fields
    for axis in axes:
        path = ("grid", axis.path)
        parts = axis.path.split(".")
        for value in axis.values:
            field_spec = _field_for(parts)
            if field_spec is not None and not field_spec.fits(value):
                raise ctx.error(path, f"invalid value {value!r}; allowed: {field_spec.describe()}")
    return tuple(axes)


def _field_for(parts: list[str]) -> Field | None:
    head = parts[0]
    if len(parts) == 1 and head in _BASE_FIELDS:
        return _BASE_FIELDS[head]
    tables = {"model": _MODEL_FIELDS, "data": _DATA_FIELDS, "metrics": _METRIC_FIELDS}
    if head in tables and len(parts) == 2:
        spec = tables[head][parts[1]]
        return Field(spec.kind, optional=spec.optional or head == "model", lo=spec.lo, lo_open=spec.lo_open)
    return None
