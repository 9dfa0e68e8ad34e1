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
from xbarlab.checkpoint import load_checkpoint, load_pretrained
from xbarlab.data import DatasetError, get_dataset
from xbarlab.data.check import check_model_input
from xbarlab.datafiles import UnknownDataFileError, list_data_files, resolve_data_file
from xbarlab.experiments.grid import GridAxis, _apply_path, _check_grid
from xbarlab.experiments.identity import TRIAL_FORMAT, canonical_json, format_value, trial_hash
from xbarlab.experiments.registry import check_options, get_trial_kind_def, import_plugins, list_trial_kinds
from xbarlab.experiments.settings import (
    Path_,
    SweepSpecError,
    _check_base,
    _check_mapping,
    _Ctx,
    _validate_settings,
    build_hardware,
)
from xbarlab.experiments.trial import model_fingerprint
from xbarlab.hardware import HardwareConfig
from xbarlab.schema import ConfigError, Field

__all__ = [
    "TRIAL_FORMAT",
    "GridAxis",
    "ReportSpec",
    "SweepSpec",
    "SweepSpecError",
    "Trial",
    "build_hardware",
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


MAX_TRIALS = 100_000
"""Largest sweep planned at once: the plan (one row per trial) is built in memory and stored in one transaction;
five million trials took minutes and 2 GB just to plan."""


def _read_yaml(text: str, source: str | None) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML text; returns the data and a map from key paths to 1-based line numbers."""
    try:
        return yamlio.load_with_lines(text, source)
    except yamlio.YamlInputError as exc:
        raise SweepSpecError(exc.problem, key=exc.key or "<yaml>", line=exc.line, source=source) from exc


_REPORT_FIELDS: dict[str, Field] = {
    "title": Field("str", optional=True),
    "metric": Field("str", optional=True, doc="metric the tables and plots lead with (default: accuracy)"),
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


@dataclass(frozen=True)
class ReportSpec:
    """Report hints: title, the leading metric, the x-axis key and its scale, and Pareto fronts
    ``(x metric, y metric[, by key])``."""

    title: str | None = None
    metric: str | None = None
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
        raise ctx.error(
            ("kind",),
            f"invalid value {top['kind']!r}; allowed: one of {', '.join(list_trial_kinds())}, or a kind registered "
            "by a module listed under plugins (e.g. p2_task: plugins: [xbarlab.papers.p2.trial])",
        )
    kind = get_trial_kind_def(top["kind"])
    base = _check_base(ctx, top["base"], kind)
    grid = _check_grid(ctx, top["grid"])
    points = math.prod(len(a.values) for a in grid)
    if points * int(top["chips"]) > MAX_TRIALS:
        raise ctx.error(
            ("chips",),
            f"{points:,} grid points × {top['chips']:,} chips = {points * int(top['chips']):,} trials; allowed: at "
            f"most {MAX_TRIALS:,} trials per sweep (split the grid into several sweeps sharing one store)",
        )
    _validate_settings(ctx, base, check_model=not any(a.path.startswith("model.") for a in grid), kind=kind)
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
        report=ReportSpec(report_raw["title"], report_raw["metric"], report_raw["x"], report_raw["log_x"], pareto),
        source=source,
        text=text,
    )
    _validate_points(ctx, spec)
    return spec


def _validate_points(ctx: _Ctx, spec: SweepSpec) -> None:
    """Validate every grid point; an error names the grid key and value that made the settings invalid."""
    hw_cache: dict[str, HardwareConfig] = {}
    kind = get_trial_kind_def(spec.kind)
    base_json = canonical_json(spec.base)
    for axis in spec.grid:
        for value in axis.values:
            settings = json.loads(base_json)
            _apply_path(ctx, settings, axis, value)
            _validate_settings(ctx, settings, blame=("grid", axis.path), value=value, hw_cache=hw_cache, kind=kind)
    for params, settings in spec.points():
        blame_axis = spec.grid[-1]
        _validate_settings(
            ctx,
            settings,
            blame=("grid", blame_axis.path),
            value=params[blame_axis.path],
            hw_cache=hw_cache,
            kind=kind,
        )


def load_spec(path: str | Path, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read and validate a sweep file: an existing file path, else a built-in sweep name (``p1-r1-read-noise``),
    resolved by :func:`xbarlab.datafiles.resolve_data_file`.

    ``overrides``: dotted keys set after reading (see :func:`parse_spec`).
    """
    try:
        p = resolve_data_file(
            path,
            kind="built-in sweep",
            folders=_sweep_dirs(),
            suffixes=_SWEEP_SUFFIXES,
            key="<file>",
            file_hint="a YAML sweep file",
        )
    except UnknownDataFileError as exc:
        raise SweepSpecError(exc.detail, key="<file>", source=str(path)) from None
    return parse_spec(p.read_text(), source=str(p), overrides=overrides)


_SWEEP_SUFFIXES = (".yaml",)
"""Endings of the shipped sweep files (what pyproject.toml ships: ``experiments/configs/*.yaml`` and
``papers/*/sweeps/*.yaml``)."""


def _sweep_dirs() -> list[Path]:
    """Folders of the shipped sweep files: the core's examples, then every paper's ``sweeps/`` folder.

    Paper folders are found as data on disk (``xbarlab/papers/<paper>/sweeps/*.yaml``), not imported: the sweep
    engine stays independent of paper code (tests/test_import_graph.py).
    """
    root = Path(str(resources.files("xbarlab")))
    return [root / "experiments" / "configs", *sorted((root / "papers").glob("*/sweeps"))]


def list_builtin_sweeps() -> list[str]:
    """Names of the shipped sweep files (``xbarlab/experiments/configs`` and ``xbarlab/papers/*/sweeps``), sorted;
    a name shipped twice is a packaging error (``RuntimeError``)."""
    return list_data_files(_sweep_dirs(), kind="built-in sweep", suffixes=_SWEEP_SUFFIXES)


def builtin_sweep(name: str) -> Path:
    """Path of a shipped sweep file; an unknown name raises :class:`xbarlab.datafiles.UnknownDataFileError` (a
    ``KeyError`` and a :class:`xbarlab.schema.ConfigError`) listing the built-in sweeps."""
    return resolve_data_file(
        name, kind="built-in sweep", folders=_sweep_dirs(), suffixes=_SWEEP_SUFFIXES, key="sweep", accept_paths=False
    )


def resolve_trials(spec: SweepSpec, *, fingerprint: bool = True) -> list[Trial]:
    """Every trial of the sweep with its resolved configuration and identity hash.

    With ``fingerprint`` the model files are read to add their SHA-256 to the identity (the sweep runner
    needs this); without it (validation only) the hashes are provisional.
    """
    ctx = _Ctx(spec.source, {})
    hw_cache: dict[str, HardwareConfig] = {}
    fp_cache: dict[str, str | None] = {}
    trials: list[Trial] = []
    kind = get_trial_kind_def(spec.kind)
    fingerprint_of = kind.fingerprint or model_fingerprint
    for index, (params, settings) in enumerate(spec.points()):
        hw = _validate_settings(ctx, settings, hw_cache=hw_cache, kind=kind)
        model = {k: v for k, v in settings["model"].items() if v is not None}
        if "checkpoint" in model:
            model["checkpoint"] = str(Path(model["checkpoint"]).expanduser().resolve())
        key = canonical_json(model)
        if fingerprint and key not in fp_cache:
            fp_cache[key] = fingerprint_of(model)
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
    kind = get_trial_kind_def(spec.kind)
    for _, settings in spec.points():
        model_cfg = {k: v for k, v in settings["model"].items() if v}
        data_cfg = settings["data"]
        which = "pretrained" if "pretrained" in model_cfg else "checkpoint"
        if kind.check_inputs is not None:  # the kind reads its own models and data
            key = canonical_json({k: settings[k] for k in ("model", "data", "mitigation", "mitigation_options")})
            if key not in seen:
                seen.add(key)
                try:
                    kind.check_inputs(settings)
                except ConfigError as exc:  # names its own key of the base settings
                    raise SweepSpecError(exc.detail, key=f"base.{exc.path}", source=spec.source) from exc
                except (OSError, ValueError, KeyError, RuntimeError) as exc:
                    raise fail(f"base.model.{which}", exc) from exc
            continue
        key = canonical_json({"model": model_cfg, "dataset": data_cfg.get("dataset"), "dir": data_cfg.get("data_dir")})
        if key in seen:
            continue
        seen.add(key)
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
