"""Base settings of a sweep file: the error type, the key tables, and the checks of one settings mapping.

``base`` (model, data, hardware, mitigation, metrics, drift time, device) is checked with the
:class:`xbarlab.schema.Field` tables below; :func:`validate_settings` runs the cross-field checks of one resolved
settings mapping (model given once, data set and mitigation known, mitigation options valid, hardware buildable)
and returns its :class:`xbarlab.hardware.HardwareConfig`. Errors are :class:`SweepSpecError` naming the file, the
line, the key, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xbarlab import yamlio
from xbarlab.checkpoint import list_pretrained
from xbarlab.data.registry import dataset_info, list_datasets
from xbarlab.experiments.identity import canonical_json, plain
from xbarlab.experiments.registry import TrialKindDef, check_options, list_mitigations
from xbarlab.hardware import SECTIONS, HardwareConfig
from xbarlab.mitigation.registry import check_trial_kind
from xbarlab.presets import load_preset
from xbarlab.schema import ConfigError, Field, check_mapping

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


Path_ = tuple[str, ...]


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


def _check_base(ctx: _Ctx, data: Any, kind: TrialKindDef | None = None) -> dict[str, Any]:
    """The checked ``base`` mapping (defaults filled in); ``kind`` adds its own ``model`` and ``data`` keys."""
    path: Path_ = ("base",)
    base = _check_mapping(ctx, path, data, _BASE_FIELDS)
    model_fields = {**_MODEL_FIELDS, **(kind.model_fields if kind is not None else {})}
    model = _check_mapping(ctx, (*path, "model"), base["model"], model_fields)
    base["model"] = model
    data_fields = {**_DATA_FIELDS, **(kind.data_fields if kind is not None else {})}
    base["data"] = _check_mapping(ctx, (*path, "data"), base["data"], data_fields)
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
    kind: TrialKindDef | None = None,
) -> HardwareConfig:
    """Cross-field checks of one resolved settings mapping; returns its hardware config.

    ``blame``: the grid key that produced these settings (errors then name it and the value). ``kind``: the
    trial kind, whose ``pretrained`` hook names the models allowed (default: :func:`list_pretrained`).
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
    models = kind.pretrained() if kind is not None and kind.pretrained is not None else list_pretrained()
    if check_model and model.get("pretrained") and model["pretrained"] not in models:
        raise fail(
            ("base", "model", "pretrained"),
            f"invalid value {model['pretrained']!r}; allowed: one of {', '.join(models)}",
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
    try:
        check_trial_kind(name, kind.name if kind is not None else "accuracy")
    except ValueError as exc:
        raise fail(("base", "mitigation"), str(exc)) from exc
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
