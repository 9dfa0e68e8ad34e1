"""Sweep files: YAML parsing with line numbers, validation, grid expansion and trial identity.

A sweep file has base settings, a grid of values by dotted path, a number of chip instances and a seed::

    name: r1-read-noise
    base:
      model: {pretrained: resnet20-fmnist}
      data: {dataset: fashion-mnist, test_samples: 2000}
      hardware: {preset: fefet}
      mitigation: none
      metrics: {pc2_layer: layer2.0.conv1}
    grid:
      hardware.read_noise.sigma: [0.05, 0.1, 0.2]
      mitigation: [none, bn_adapt]
    chips: 5
    seed: 0

Every combination of grid values is a *point*; each point runs ``chips`` trials, chip k with seed
``seed + k``.
A trial's identity is the SHA-256 of the canonical JSON of its resolved configuration (full hardware config,
model fingerprint, data, mitigation with all options, seed): see :func:`trial_hash`.

Errors raise :class:`SweepSpecError`, whose message names the file, the line, the key, the value and what is
allowed. The full key reference is in ``docs/experiments.md``.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from xbarlab import yamlio
from xbarlab.checkpoint import list_pretrained, load_checkpoint, load_pretrained
from xbarlab.data import DatasetError, get_dataset
from xbarlab.data.check import check_model_input
from xbarlab.data.registry import dataset_info, list_datasets
from xbarlab.experiments.identity import TRIAL_FORMAT, canonical_json, format_value, plain, trial_hash
from xbarlab.experiments.registry import check_options, import_plugins, list_mitigations, list_trial_kinds
from xbarlab.experiments.trial import model_fingerprint
from xbarlab.hardware import SECTIONS, HardwareConfig
from xbarlab.presets import load_preset
from xbarlab.schema import ConfigError, Field, check_mapping

__all__ = [
    "TRIAL_FORMAT",
    "GridAxis",
    "ReportSpec",
    "SweepSpec",
    "SweepSpecError",
    "Trial",
    "builtin_sweep",
    "canonical_json",
    "check_inputs",
    "format_value",
    "list_builtin_sweeps",
    "load_spec",
    "parse_spec",
    "resolve_trials",
    "trial_hash",
]

_MISSING: Any = object()


class SweepSpecError(ConfigError):
    """An invalid sweep file (a :class:`xbarlab.schema.ConfigError`). ``key`` is the dotted key, ``line`` its
    1-based line (None when unknown); the message is ``<source>:<line>: <key>: <detail>``."""

    def __init__(self, message: str, *, key: str, line: int | None = None, source: str | None = None) -> None:
        self.key = key
        problem, _, allowed = message.partition("; allowed: ")
        super().__init__(key, None, allowed, problem, source=source or "<sweep>", line=line)
        self.source = source
        self.detail = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (self.detail, self.key, self.line, self.source))


def _rebuild_error(message: str, key: str, line: int | None, source: str | None) -> SweepSpecError:
    return SweepSpecError(message, key=key, line=line, source=source)


# ------------------------------------------------------------------------------------------------------------
# YAML with line numbers


MAX_TRIALS = 100_000
"""Largest sweep planned at once: the plan (one row per trial) is built in memory and stored in one transaction;
five million trials took minutes and 2 GB just to plan."""

Path_ = tuple[str, ...]


def _read_yaml(text: str, source: str | None) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML text; returns the data and a map from key paths to 1-based line numbers."""
    try:
        return yamlio.load_with_lines(text, source)
    except yamlio.YamlInputError as exc:
        raise SweepSpecError(exc.problem, key=exc.key or "<yaml>", line=exc.line, source=source) from exc


# ------------------------------------------------------------------------------------------------------------
# schema


_MODEL_FIELDS: dict[str, Field] = {
    "pretrained": Field("str", optional=True, doc="name of a shipped pre-trained model (load_pretrained)"),
    "checkpoint": Field("str", optional=True, doc="checkpoint path (safetensors + JSON; relative to the CWD)"),
}
_DATA_FIELDS: dict[str, Field] = {
    "dataset": Field("str", required=True, doc="data set name (xbarlab.data.list_datasets)"),
    "data_dir": Field("str", optional=True, doc="folder of the data files (default: the data set's own)"),
    "test_samples": Field("int", optional=True, lo=1, doc="cap on test images (the first N of the test split)"),
    "batch_size": Field("int", 256, lo=1, doc="test batch size"),
    "calib_batches": Field("int", 4, lo=1, doc="batches for DAC/ADC range calibration"),
    "calib_batch_size": Field("int", 128, lo=1, doc="batch size of the converter calibration"),
}
_METRIC_FIELDS: dict[str, Field] = {
    "pc2_layer": Field("str", optional=True, doc="analog layer whose PC2 is recorded (dotted module name)"),
    "clean_accuracy": Field("bool", False, doc="also record the digital model's accuracy (once per worker)"),
}
_HW_KEYS = ("preset", "file", "overrides", "name", "keep_digital", "layers", *SECTIONS)
_BASE_FIELDS: dict[str, Field] = {
    "model": Field("mapping", required=True, doc="pretrained: NAME or checkpoint: PATH"),
    "data": Field("mapping", required=True),
    "hardware": Field("mapping", required=True, doc="preset/file + sections + dotted overrides"),
    "drift_s": Field("float", optional=True, lo=0.0, lo_open=True, doc="read time since programming (s)"),
    "mitigation": Field("str", "none", doc="registered mitigation"),
    "mitigation_options": Field("mapping", {}, doc="mitigation name -> options"),
    "metrics": Field("mapping", {}),
    "device": Field("str", "cpu", doc="torch device of the trials"),
}
_REPORT_FIELDS: dict[str, Field] = {
    "title": Field("str", optional=True),
    "x": Field("str", optional=True, doc="grid key for the x axis (default: the first numeric one)"),
    "log_x": Field("bool", optional=True, doc="logarithmic x axis (default: for drift_s)"),
    "pareto": Field("mapping", optional=True, doc="{x: cost metric, y: quality metric, by: grid key} fronts"),
}
_TOP_FIELDS: dict[str, Field] = {
    "name": Field("str", required=True, doc="sweep name ([A-Za-z0-9._-])"),
    "description": Field("str", "", doc="free text"),
    "kind": Field("str", "accuracy", doc="trial kind"),
    "base": Field("mapping", required=True),
    "grid": Field("mapping", required=True, doc="dotted path -> non-empty list of values"),
    "chips": Field("int", 1, lo=1, doc="chip instances per grid point"),
    "seed": Field("int", 0, lo=0, doc="chip k uses seed + k"),
    "store": Field("str", optional=True, doc="default results store path"),
    "plugins": Field("list", [], doc="modules imported before running (register mitigations)"),
    "report": Field("mapping", {}),
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Ctx:
    """Error context: source name and the key → line map."""

    def __init__(self, source: str | None, lines: Mapping[Path_, int]) -> None:
        self.source = source
        self.lines = lines
        self.overridden: set[Path_] = set()

    def line(self, path: Path_) -> int | None:
        p = tuple(path)
        while p:
            if p in self.overridden:
                return None
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return None

    def error(self, path: Path_, message: str, *, line_path: Path_ | None = None) -> SweepSpecError:
        target = tuple(line_path or path)
        if any(target[: len(o)] == o for o in self.overridden):
            message += " (set with --set)"
        return SweepSpecError(message, key=".".join(path), line=self.line(target), source=self.source)


def _check_mapping(
    ctx: _Ctx, path: Path_, data: Any, fields: Mapping[str, Field], *, fill_defaults: bool = True
) -> dict[str, Any]:
    """:func:`xbarlab.schema.check_mapping` with the error located in the file (a missing key: its mapping's line)."""
    try:
        return check_mapping(path, data, fields, fill_defaults=fill_defaults)
    except ConfigError as exc:
        line_path = path if exc.problem == "missing" else None
        raise ctx.error(exc.keys, exc.detail, line_path=line_path) from None


# ------------------------------------------------------------------------------------------------------------
# data classes


@dataclass(frozen=True)
class GridAxis:
    """One swept key: a dotted path into the base settings, its values and its line in the file."""

    path: str
    values: tuple[Any, ...]
    line: int | None = None


@dataclass(frozen=True)
class ReportSpec:
    """Report hints: title, the x-axis key and its scale, and Pareto fronts ``(x metric, y metric[, by key])``."""

    title: str | None = None
    x: str | None = None
    log_x: bool | None = None
    pareto: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Trial:
    """One chip instance of one grid point: its identity hash, resolved configuration and swept values."""

    hash: str
    config: Mapping[str, Any]
    params: Mapping[str, Any]
    chip: int
    seed: int
    point: int


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep. ``base`` holds the normalised base settings (defaults filled in)."""

    name: str
    description: str
    kind: str
    base: Mapping[str, Any]
    grid: tuple[GridAxis, ...]
    chips: int
    seed: int
    store: str | None = None
    plugins: tuple[str, ...] = ()
    report: ReportSpec = field(default_factory=ReportSpec)
    source: str | None = None
    text: str = ""

    @property
    def num_points(self) -> int:
        """Number of grid points (product of the axes' lengths)."""
        return math.prod(len(a.values) for a in self.grid)

    @property
    def num_trials(self) -> int:
        """Grid points × chips."""
        return self.num_points * self.chips

    @property
    def swept_keys(self) -> list[str]:
        """The grid's dotted paths, in file order."""
        return [a.path for a in self.grid]

    def points(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """``(params, settings)`` for every grid point, in file order (the last axis varies fastest)."""
        ctx = _Ctx(self.source, {})
        for combo in itertools.product(*(a.values for a in self.grid)):
            params = {a.path: v for a, v in zip(self.grid, combo, strict=True)}
            settings = copy.deepcopy(dict(self.base))
            for axis, value in zip(self.grid, combo, strict=True):
                _apply_path(ctx, settings, axis, value)
            yield params, settings

    def default_store(self) -> Path:
        """Store path when none is given: the file's ``store``, else ``xbarlab-results/<name>.sqlite``."""
        return Path(self.store) if self.store else Path("xbarlab-results") / f"{self.name}.sqlite"


# ------------------------------------------------------------------------------------------------------------
# base settings


def _check_hardware(ctx: _Ctx, path: Path_, data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ctx.error(path, f"invalid value {data!r}; allowed: a mapping with keys {', '.join(_HW_KEYS)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        k = str(key)
        if k not in _HW_KEYS:
            raise ctx.error((*path, k), f"unknown key; allowed: {', '.join(_HW_KEYS)}")
        if k in ("preset", "file", "name"):
            if not isinstance(value, str) or not value:
                raise ctx.error((*path, k), f"invalid value {value!r}; allowed: a non-empty string")
        elif k == "overrides" or k in SECTIONS:
            if not isinstance(value, Mapping):
                raise ctx.error((*path, k), f"invalid value {value!r}; allowed: a mapping")
            value = plain(value)
        out[k] = value
    if "preset" in out and "file" in out:
        raise ctx.error((*path, "file"), "both 'preset' and 'file' given; allowed: one of them")
    out.setdefault("overrides", {})
    return out


def _hardware_changes(hw: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted-path changes of a hardware settings mapping (sections flattened, then ``overrides``)."""
    changes: dict[str, Any] = {}
    for key, value in hw.items():
        if key in SECTIONS:
            for field_name, field_value in value.items():
                changes[f"{key}.{field_name}"] = field_value
        elif key in ("name", "keep_digital", "layers"):
            changes[key] = value
    for key, value in hw.get("overrides", {}).items():
        if key in SECTIONS and isinstance(value, Mapping):
            for field_name, field_value in value.items():
                changes[f"{key}.{field_name}"] = field_value
        else:
            changes[str(key)] = value
    return changes


def build_hardware(hw: Mapping[str, Any]) -> HardwareConfig:
    """The :class:`HardwareConfig` of hardware settings (preset or file, then sections and overrides)."""
    if hw.get("preset"):
        base = load_preset(str(hw["preset"]))
    elif hw.get("file"):
        path = Path(str(hw["file"])).expanduser()
        if not path.is_file():
            raise ConfigError("file", str(path), "an existing hardware YAML file")
        try:
            base = HardwareConfig.from_yaml(path)
        except yamlio.YamlInputError as exc:  # empty file, duplicate key, bad YAML: name the sweep key too
            raise ConfigError("file", str(path), f"a valid hardware YAML file ({exc})") from exc
    else:
        base = HardwareConfig()
    changes = _hardware_changes(hw)
    return base.override(changes) if changes else base


def _hardware_error_line(ctx: _Ctx, root: Path_, exc: ConfigError) -> Path_:
    """The key path of the file that most likely caused a :class:`ConfigError` (for its line number)."""
    dotted = exc.path
    section = dotted.split(".")[0]
    candidates = [
        (*root, "overrides", dotted),
        (*root, "overrides", section),
        (*root, *dotted.split(".")),
        (*root, section),
    ]
    if dotted in ("preset", "file"):
        candidates.insert(0, (*root, dotted))
    for cand in candidates:
        if cand in ctx.lines:
            return cand
    return root


def _check_base(ctx: _Ctx, data: Any) -> dict[str, Any]:
    path: Path_ = ("base",)
    base = _check_mapping(ctx, path, data, _BASE_FIELDS)
    model = _check_mapping(ctx, (*path, "model"), base["model"], _MODEL_FIELDS)
    base["model"] = model
    base["data"] = _check_mapping(ctx, (*path, "data"), base["data"], _DATA_FIELDS)
    base["metrics"] = _check_mapping(ctx, (*path, "metrics"), base["metrics"], _METRIC_FIELDS)
    base["hardware"] = _check_hardware(ctx, (*path, "hardware"), base["hardware"])
    base["mitigation_options"] = {str(k): plain(v) for k, v in base["mitigation_options"].items()}
    for name, options in base["mitigation_options"].items():
        if not isinstance(options, Mapping):
            raise ctx.error((*path, "mitigation_options", name), f"invalid value {options!r}; allowed: a mapping")
    return base


def _validate_settings(
    ctx: _Ctx,
    settings: dict[str, Any],
    *,
    blame: Path_ | None = None,
    value: Any = _MISSING,
    hw_cache: dict[str, HardwareConfig] | None = None,
    check_model: bool = True,
) -> HardwareConfig:
    """Cross-field checks of one resolved settings mapping; returns its hardware config.

    ``blame``: the grid key that produced these settings (errors then name it and the value).
    """

    def fail(path: Path_, message: str) -> SweepSpecError:
        if blame is not None:
            shown = f" (grid value {value!r})" if value is not _MISSING else ""
            return SweepSpecError(
                f"{'.'.join(path)}: {message}{shown}",
                key=".".join(blame),
                line=ctx.line(blame),
                source=ctx.source,
            )
        return ctx.error(path, message)

    model = settings["model"]
    given = [k for k in ("pretrained", "checkpoint") if model.get(k)]
    if check_model and len(given) != 1:
        raise fail(
            ("base", "model"),
            f"{'both' if given else 'neither'} 'pretrained' and 'checkpoint' given; allowed: exactly one of them",
        )
    if check_model and model.get("pretrained") and model["pretrained"] not in list_pretrained():
        raise fail(
            ("base", "model", "pretrained"),
            f"invalid value {model['pretrained']!r}; allowed: one of {', '.join(list_pretrained())}",
        )
    dataset = settings["data"].get("dataset")
    if dataset is not None:
        try:
            dataset_info(str(dataset))
        except KeyError:
            names = ", ".join(d.name for d in list_datasets())
            raise fail(("base", "data", "dataset"), f"invalid value {dataset!r}; allowed: one of {names}") from None
    name = settings["mitigation"]
    if name not in list_mitigations():
        raise fail(("base", "mitigation"), f"invalid value {name!r}; allowed: one of {', '.join(list_mitigations())}")
    for mit, options in settings["mitigation_options"].items():
        if mit not in list_mitigations():
            raise fail(
                ("base", "mitigation_options", mit),
                f"unknown mitigation; allowed: one of {', '.join(list_mitigations())}",
            )
        try:
            check_options(mit, options)
        except ValueError as exc:
            raise fail(("base", "mitigation_options", mit), str(exc)) from exc
    hw_key = canonical_json(settings["hardware"])
    if hw_cache is not None and hw_key in hw_cache:
        return hw_cache[hw_key]
    try:
        hw = build_hardware(settings["hardware"])
    except ConfigError as exc:
        if blame is not None:
            raise fail(
                ("base", "hardware", *exc.path.split(".")),
                f"invalid value {exc.value!r}; allowed: {exc.allowed}",
            ) from exc
        full = ("base", "hardware", *exc.path.split("."))
        from_set = any(full[: len(o)] == o for o in ctx.overridden)  # the value came from --set, not the file
        raise SweepSpecError(
            f"invalid value {exc.value!r}; allowed: {exc.allowed}" + (" (set with --set)" if from_set else ""),
            key="base.hardware." + exc.path,
            line=None if from_set else ctx.line(_hardware_error_line(ctx, ("base", "hardware"), exc)),
            source=ctx.source,
        ) from exc
    if hw_cache is not None:
        hw_cache[hw_key] = hw
    return hw


# ------------------------------------------------------------------------------------------------------------
# grid


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


# ------------------------------------------------------------------------------------------------------------
# entry points


def _apply_overrides(data: Any, overrides: Mapping[str, Any], ctx: _Ctx) -> Any:
    """Set dotted keys of the parsed file (``--set``): ``base.data.data_dir``, ``chips``, ``grid.<key>``."""
    if not isinstance(data, dict):
        return data
    for dotted, value in overrides.items():
        parts = str(dotted).split(".")
        if parts[0] == "grid" and len(parts) > 1:
            parts = ["grid", ".".join(parts[1:])]
        cursor = data
        for part in parts[:-1]:
            nxt = cursor.get(part)
            if nxt is None:
                nxt = cursor[part] = {}
            if not isinstance(nxt, dict):
                raise SweepSpecError(f"{part!r} is not a mapping (set with --set)", key=str(dotted), source=ctx.source)
            cursor = nxt
        cursor[parts[-1]] = value
        ctx.overridden.add(tuple(parts))
    return data


def parse_spec(text: str, source: str | None = None, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Parse and validate sweep YAML text (``source`` names the file in errors).

    ``overrides``: dotted keys of the file set after reading it (the CLI's ``--set base.data.data_dir=...``);
    errors about them say so instead of giving a line.
    """
    data, lines = _read_yaml(text, source)
    ctx = _Ctx(source, lines)
    if data is None:
        raise ctx.error(("<root>",), "empty file; allowed: a mapping with keys " + ", ".join(_TOP_FIELDS))
    if overrides:
        data = _apply_overrides(data, overrides, ctx)
        text = (
            text.rstrip("\n")
            + "\n# command-line overrides (--set):\n"
            + "".join(f"#   {k} = {canonical_json(v)}\n" for k, v in overrides.items())
        )
    top = _check_mapping(ctx, (), data, _TOP_FIELDS)
    if not _NAME_RE.match(top["name"]):
        raise ctx.error(("name",), f"invalid value {top['name']!r}; allowed: letters, digits, '.', '_', '-'")

    plugins = tuple(str(p) for p in top["plugins"])
    try:
        import_plugins(plugins)
    except ImportError as exc:
        raise ctx.error(("plugins",), str(exc)) from exc
    if top["kind"] not in list_trial_kinds():
        raise ctx.error(("kind",), f"invalid value {top['kind']!r}; allowed: one of {', '.join(list_trial_kinds())}")
    base = _check_base(ctx, top["base"])
    grid = _check_grid(ctx, top["grid"])
    points = math.prod(len(a.values) for a in grid)
    if points * int(top["chips"]) > MAX_TRIALS:
        raise ctx.error(
            ("chips",),
            f"{points:,} grid points × {top['chips']:,} chips = {points * int(top['chips']):,} trials; allowed: at "
            f"most {MAX_TRIALS:,} trials per sweep (split the grid into several sweeps sharing one store)",
        )
    _validate_settings(ctx, base, check_model=not any(a.path.startswith("model.") for a in grid))
    report_raw = _check_mapping(ctx, ("report",), top["report"], _REPORT_FIELDS)
    pareto = None
    if report_raw["pareto"] is not None:
        p = _check_mapping(
            ctx,
            ("report", "pareto"),
            report_raw["pareto"],
            {"x": Field("str", required=True), "y": Field("str", required=True), "by": Field("str", optional=True)},
        )
        if p["by"] is not None and p["by"] not in [a.path for a in grid]:
            raise ctx.error(
                ("report", "pareto", "by"),
                f"invalid value {p['by']!r}; allowed: one of the grid keys " + ", ".join(a.path for a in grid),
            )
        pareto = (p["x"], p["y"]) if p["by"] is None else (p["x"], p["y"], p["by"])
    if report_raw["x"] is not None and report_raw["x"] not in [a.path for a in grid]:
        raise ctx.error(
            ("report", "x"),
            f"invalid value {report_raw['x']!r}; allowed: one of the grid keys " + ", ".join(a.path for a in grid),
        )
    spec = SweepSpec(
        name=top["name"],
        description=top["description"],
        kind=top["kind"],
        base=base,
        grid=grid,
        chips=top["chips"],
        seed=top["seed"],
        store=top["store"],
        plugins=plugins,
        report=ReportSpec(report_raw["title"], report_raw["x"], report_raw["log_x"], pareto),
        source=source,
        text=text,
    )
    _validate_points(ctx, spec)
    return spec


def _validate_points(ctx: _Ctx, spec: SweepSpec) -> None:
    """Validate every grid point; an error names the grid key and value that made the settings invalid."""
    hw_cache: dict[str, HardwareConfig] = {}
    base_json = canonical_json(spec.base)
    for axis in spec.grid:
        for value in axis.values:
            settings = json.loads(base_json)
            _apply_path(ctx, settings, axis, value)
            _validate_settings(ctx, settings, blame=("grid", axis.path), value=value, hw_cache=hw_cache)
    for params, settings in spec.points():
        blame_axis = spec.grid[-1]
        _validate_settings(
            ctx, settings, blame=("grid", blame_axis.path), value=params[blame_axis.path], hw_cache=hw_cache
        )


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read and validate a sweep file; a bare name (``p1-r1-read-noise``) selects a built-in sweep.

    ``overrides``: dotted keys set after reading (see :func:`parse_spec`).
    """
    p = Path(path)
    if not p.is_file() and not p.suffix and p.name in list_builtin_sweeps():
        p = builtin_sweep(p.name)
    if not p.is_file():
        raise SweepSpecError(
            f"no such file; allowed: a YAML sweep file or a built-in sweep ({', '.join(list_builtin_sweeps())})",
            key="<file>",
            source=str(path),
        )
    return parse_spec(p.read_text(), source=str(p), overrides=overrides)


def _configs_dir() -> Path:
    return Path(str(resources.files("xbarlab") / "experiments" / "configs"))


def list_builtin_sweeps() -> list[str]:
    """Names of the sweep files shipped in ``xbarlab/experiments/configs``."""
    folder = _configs_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def builtin_sweep(name: str) -> Path:
    """Path of a shipped sweep file."""
    path = _configs_dir() / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(f"unknown built-in sweep {name!r}; allowed: {', '.join(list_builtin_sweeps())}")
    return path


# ------------------------------------------------------------------------------------------------------------
# resolution


def resolve_trials(spec: SweepSpec, *, fingerprint: bool = True) -> list[Trial]:
    """Every trial of the sweep with its resolved configuration and identity hash.

    With ``fingerprint`` the model files are read to add their SHA-256 to the identity (the sweep runner
    needs this); without it (validation only) the hashes are provisional.
    """
    ctx = _Ctx(spec.source, {})
    hw_cache: dict[str, HardwareConfig] = {}
    fp_cache: dict[str, str | None] = {}
    trials: list[Trial] = []
    for index, (params, settings) in enumerate(spec.points()):
        hw = _validate_settings(ctx, settings, hw_cache=hw_cache)
        model = {k: v for k, v in settings["model"].items() if v is not None}
        if "checkpoint" in model:
            model["checkpoint"] = str(Path(model["checkpoint"]).expanduser().resolve())
        key = canonical_json(model)
        if fingerprint and key not in fp_cache:
            fp_cache[key] = model_fingerprint(model)
        model["sha256"] = fp_cache.get(key) if fingerprint else None
        data = dict(settings["data"])
        if data.get("data_dir"):
            data["data_dir"] = str(Path(data["data_dir"]).expanduser().resolve())
        name = settings["mitigation"]
        options = check_options(name, settings["mitigation_options"].get(name, {}))
        base_config = {
            "format": TRIAL_FORMAT,
            "kind": spec.kind,
            "model": model,
            "data": data,
            "hardware": hw.to_dict(),
            "drift_s": settings["drift_s"],
            "mitigation": {"name": name, "options": options},
            "metrics": dict(settings["metrics"]),
            "device": settings["device"],
            "plugins": list(spec.plugins),
        }
        for chip in range(spec.chips):
            seed = spec.seed + chip
            config = {**copy.deepcopy(base_config), "seed": seed}
            trials.append(Trial(trial_hash(config), config, dict(params), chip, seed, index))
    return trials


def check_inputs(spec: SweepSpec) -> None:
    """Read every distinct model and test split of the sweep once and check that they fit, before anything runs.

    Refused with a :class:`SweepSpecError` naming the key: a missing or corrupt checkpoint
    (``base.model.checkpoint``), a missing data folder (``base.data.data_dir``), a data set whose inputs do not
    fit the model (``base.data.dataset``, see :func:`xbarlab.data.check.check_model_input`). Used by
    ``xbarlab sweep`` (also with ``--dry-run``) and the demo, so a sweep never starts (or creates its store) with
    inputs that fail in every trial.
    """

    def fail(key: str, exc: BaseException) -> SweepSpecError:
        return SweepSpecError(" ".join(str(exc).split()), key=key, source=spec.source)

    seen: set[str] = set()
    for _, settings in spec.points():
        model_cfg = {k: v for k, v in settings["model"].items() if v}
        data_cfg = settings["data"]
        key = canonical_json({"model": model_cfg, "dataset": data_cfg.get("dataset"), "dir": data_cfg.get("data_dir")})
        if key in seen:
            continue
        seen.add(key)
        which = "pretrained" if "pretrained" in model_cfg else "checkpoint"
        try:
            if which == "pretrained":
                net, meta = load_pretrained(str(model_cfg["pretrained"]))
            else:
                net, meta = load_checkpoint(str(Path(str(model_cfg["checkpoint"])).expanduser()))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise fail(f"base.model.{which}", exc) from exc
        try:
            test = get_dataset(str(data_cfg["dataset"]), "test", data_cfg.get("data_dir"), augment=False)
        except (DatasetError, OSError, ValueError, KeyError) as exc:
            raise fail("base.data.data_dir" if data_cfg.get("data_dir") else "base.data.dataset", exc) from exc
        try:
            check_model_input(net, test, meta, field="base.data.dataset")
        except DatasetError as exc:
            raise SweepSpecError(
                str(exc).removeprefix("base.data.dataset: "), key="base.data.dataset", source=spec.source
            ) from exc
