"""Frozen, validated hardware description of an analog crossbar accelerator.

Every physical quantity carries its unit in the field name (``_ohm``, ``_uS``, ``_s``) or in the docstring.
Configurations round-trip through plain dicts, JSON and YAML. Invalid input raises :class:`ConfigError` naming
the field path, the offending value and the allowed range; nothing is silently clamped or skipped. A parameter
given for a section that is switched off (``kind: none``, ``enabled: false``, ``bits: null``) is an error too.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

from xbarlab import schema, yamlio
from xbarlab.datafiles import list_data_files, resolve_data_file
from xbarlab.hardware_sections import (  # the sections, re-exported: xbarlab.hardware.ADCConfig etc.
    GAUSSIAN_SAMPLERS as GAUSSIAN_SAMPLERS,
)
from xbarlab.hardware_sections import (
    ADCConfig as ADCConfig,
)
from xbarlab.hardware_sections import (
    CrossbarConfig as CrossbarConfig,
)
from xbarlab.hardware_sections import (
    DACConfig as DACConfig,
)
from xbarlab.hardware_sections import (
    DeviceConfig as DeviceConfig,
)
from xbarlab.hardware_sections import (
    DriftConfig as DriftConfig,
)
from xbarlab.hardware_sections import (
    FaultConfig as FaultConfig,
)
from xbarlab.hardware_sections import (
    ParasiticsConfig as ParasiticsConfig,
)
from xbarlab.hardware_sections import (
    ProgrammingConfig as ProgrammingConfig,
)
from xbarlab.hardware_sections import (
    ReadNoiseConfig as ReadNoiseConfig,
)
from xbarlab.hardware_sections import (
    SamplingConfig as SamplingConfig,
)
from xbarlab.hardware_sections import (
    WeightConfig as WeightConfig,
)
from xbarlab.schema import ConfigError as ConfigError  # re-exported: users catch xbarlab.hardware.ConfigError


@dataclass(frozen=True)
class LayerOverride:
    """Settings for the layers whose dotted name matches ``pattern`` (fnmatch glob), as a partial config dict."""

    pattern: str
    settings: Mapping[str, Any] = field(default_factory=dict)


SECTIONS: dict[str, type] = {
    "crossbar": CrossbarConfig,
    "weights": WeightConfig,
    "device": DeviceConfig,
    "programming": ProgrammingConfig,
    "read_noise": ReadNoiseConfig,
    "drift": DriftConfig,
    "faults": FaultConfig,
    "dac": DACConfig,
    "adc": ADCConfig,
    "parasitics": ParasiticsConfig,
    "sampling": SamplingConfig,
}

OMITTED_AT_DEFAULT: frozenset[str] = frozenset({"sampling"})
"""Sections that :meth:`HardwareConfig.to_dict` / ``to_yaml`` leave out while they equal their defaults. They
were added after presets and sweep trials were hashed (the hash covers ``to_dict``): leaving them out keeps
every stored hash valid, and a config that sets one hashes differently."""

SWITCHES: dict[str, tuple[str, Any, str]] = {
    "programming": ("kind", "none", "one of " + ", ".join(repr(k) for k in ProgrammingConfig.KINDS[1:])),
    "read_noise": ("kind", "none", "one of " + ", ".join(repr(k) for k in ReadNoiseConfig.KINDS[1:])),
    "drift": ("kind", "none", "one of " + ", ".join(repr(k) for k in DriftConfig.KINDS[1:])),
    "parasitics": ("enabled", False, "true"),
    "dac": ("bits", None, "an integer in [2, 16]"),
    "adc": ("bits", None, "an integer in [2, 16]"),
}
"""Sections with an off switch: section → (switch field, its "off" value, the values that turn it on).

While a section is off its other fields have no effect, so a user mapping that sets them is rejected (see
:func:`_check_switched_off`)."""

CLASSIFIER_TOKEN = "@classifier"
"""Entry of ``keep_digital`` meaning "the executed output layer": the last nn.Linear that runs in a forward pass,
or the last conv in a model without Linear (e.g. a segmenter's 1×1 output conv); P1 keeps the classifier
digital (:func:`xbarlab.convert`)."""


@dataclass(frozen=True)
class HardwareConfig:
    """A complete, validated hardware description. Build with :meth:`from_dict`, :meth:`from_yaml` or a preset."""

    name: str = "custom"
    crossbar: CrossbarConfig = field(default_factory=CrossbarConfig)
    weights: WeightConfig = field(default_factory=WeightConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    programming: ProgrammingConfig = field(default_factory=ProgrammingConfig)
    read_noise: ReadNoiseConfig = field(default_factory=ReadNoiseConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    faults: FaultConfig = field(default_factory=FaultConfig)
    dac: DACConfig = field(default_factory=DACConfig)
    adc: ADCConfig = field(default_factory=ADCConfig)
    parasitics: ParasiticsConfig = field(default_factory=ParasiticsConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    keep_digital: tuple[str, ...] = ()
    layers: tuple[LayerOverride, ...] = ()

    def __post_init__(self) -> None:
        self.validate()

    # ---------------------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        """Check every field; raise :class:`ConfigError` on the first invalid one."""
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", self.name, "a non-empty string")
        for section in SECTIONS:
            getattr(self, section).validate(section)
        if self.weights.mapping == "offset" and self.crossbar.cols < 2:
            raise ConfigError(
                "crossbar.cols",
                self.crossbar.cols,
                "an integer in [2, 4096] with weights.mapping 'offset' (each tile's last column is the reference)",
            )
        for i, pattern in enumerate(self.keep_digital):
            if not isinstance(pattern, str) or not pattern:
                raise ConfigError(f"keep_digital[{i}]", pattern, "a non-empty module-name glob or '@classifier'")
        for i, override in enumerate(self.layers):
            if not isinstance(override.pattern, str) or not override.pattern:
                raise ConfigError(f"layers[{i}].pattern", override.pattern, "a non-empty module-name glob")
            bad = set(override.settings) - set(SECTIONS)
            if bad:
                key = sorted(bad)[0]
                raise ConfigError(
                    f"layers[{i}].settings.{key}",
                    override.settings[key],
                    "a section among " + ", ".join(SECTIONS),
                )
            # validate by applying to this config without overrides (errors name the override path)
            dataclasses.replace(self, layers=())._apply_sections(override.settings, root=f"layers[{i}].settings")

    # ---------------------------------------------------------------------------------------------- dicts, YAML
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, valid JSON: infinite floats are written as the strings ``"inf"`` / ``"-inf"``.

        :meth:`from_dict` reads those strings back, so ``from_dict(json.loads(json.dumps(hw.to_dict()))) == hw``.
        """
        return dict(_json_safe(self._raw_dict()))

    def _raw_dict(self) -> dict[str, Any]:
        """Plain nested dict with float values as they are (``inf`` included); what YAML is written from."""
        out: dict[str, Any] = {"name": self.name}
        for section in SECTIONS:
            if section in OMITTED_AT_DEFAULT and getattr(self, section) == SECTIONS[section]():
                continue  # a section added after configs were hashed: absent while at its default
            out[section] = dataclasses.asdict(getattr(self, section))
        out["keep_digital"] = list(self.keep_digital)
        out["layers"] = [{"pattern": o.pattern, "settings": schema.plain(o.settings)} for o in self.layers]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str = "") -> HardwareConfig:
        """Build from a nested dict; unknown keys and wrong types raise :class:`ConfigError`.

        Errors name the full field path below ``path``. A float field also accepts the strings ``"inf"``,
        ``"+inf"`` and ``"-inf"`` (how :meth:`to_dict` writes infinities). A section mapping that sets fields of a
        switched-off section (e.g. ``read_noise: {sigma: 0.1}`` while ``read_noise.kind`` is ``'none'``) is
        rejected unless it lists every field of the section (a complete description, as :meth:`to_dict` writes).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(path or "<root>", data, "a mapping of hardware sections")
        allowed = {"name", "keep_digital", "layers", "preset", *SECTIONS}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(
                schema.join(path, unknown[0]), data[unknown[0]], "a key among " + ", ".join(sorted(allowed))
            )
        base: HardwareConfig
        if "preset" in data:
            try:
                base = preset_config(str(data["preset"]))
            except ConfigError as exc:
                raise exc.prefixed(path) from None
        else:
            base = cls()
        kwargs: dict[str, Any] = {}
        if "name" in data:
            kwargs["name"] = data["name"]
        elif "preset" in data:
            kwargs["name"] = base.name
        for section, section_cls in SECTIONS.items():
            if section in data:
                kwargs[section] = _section_from_dict(
                    section_cls, data[section], schema.join(path, section), getattr(base, section)
                )
        if "keep_digital" in data:
            value = data["keep_digital"]
            if not isinstance(value, (list, tuple)):
                raise ConfigError(schema.join(path, "keep_digital"), value, "a list of module-name globs")
            kwargs["keep_digital"] = tuple(value)
        if "layers" in data:
            kwargs["layers"] = _overrides_from(data["layers"], schema.join(path, "layers"))
        try:
            config = dataclasses.replace(base, **kwargs)
        except ConfigError as exc:  # validate() names paths relative to this config
            raise exc.prefixed(path) from None
        for section in SECTIONS:
            if section in data:
                _check_switched_off(section, data[section], getattr(config, section), schema.join(path, section))
        return config

    def to_yaml(self) -> str:
        """YAML text that :meth:`from_yaml` reads back to an equal config (infinities as ``.inf``)."""
        return yaml.safe_dump(self._raw_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, source: str | Path) -> HardwareConfig:
        """Read a YAML file path or YAML text; ``1e-1`` and ``50e3`` are numbers (YAML 1.2).

        Parsed by :mod:`xbarlab.yamlio` like every YAML of xbarlab: an empty document and a key given twice are
        refused with ``file:line`` (an empty file is not the default hardware).
        """
        what = "a mapping of hardware sections"
        if isinstance(source, Path) or _looks_like_path(source):
            return cls.from_dict(yamlio.load_file(source, what=what))
        return cls.from_dict(yamlio.load_document(source, "<hardware yaml>", what=what))

    # ---------------------------------------------------------------------------------------------- overrides
    def override(self, changes: Mapping[str, Any]) -> HardwareConfig:
        """A new config with dotted-path changes applied, e.g. ``{"read_noise.sigma": 0.1}``; validated.

        Setting a parameter of a switched-off section (``{"read_noise.sigma": 0.1}`` while ``read_noise.kind``
        stays ``'none'``) raises :class:`ConfigError`; switching a section off (``{"read_noise.kind": "none"}``)
        keeps its other, now inactive, values.
        """
        nested: dict[str, Any] = {}
        for dotted, value in changes.items():
            parts = dotted.split(".")
            cursor = nested
            for part in parts[:-1]:
                cursor = cursor.setdefault(part, {})
            cursor[parts[-1]] = value
        return self._apply_sections(nested, root="")

    def _apply_sections(self, settings: Mapping[str, Any], *, root: str) -> HardwareConfig:
        data = self._raw_dict()
        for key, value in settings.items():
            if key in SECTIONS:
                if not isinstance(value, Mapping):
                    raise ConfigError(schema.join(root, key), value, "a mapping of fields")
                merged = dict(data[key]) if key in data else dataclasses.asdict(getattr(self, key))
                unknown = sorted(set(value) - set(merged))
                if unknown:
                    raise ConfigError(
                        schema.join(root, f"{key}.{unknown[0]}"),
                        value[unknown[0]],
                        "a field among " + ", ".join(merged),
                    )
                merged.update(value)
                data[key] = merged
            elif key in ("name", "keep_digital", "layers"):
                data[key] = value
            else:
                raise ConfigError(
                    schema.join(root, key), value, "a key among name, keep_digital, layers, " + ", ".join(SECTIONS)
                )
        config = HardwareConfig.from_dict(data, path=root)
        for key, value in settings.items():
            if key in SECTIONS:
                _check_switched_off(key, value, getattr(config, key), schema.join(root, key))
        return config

    def for_layer(self, layer_name: str) -> HardwareConfig:
        """The configuration that applies to one layer: every matching override, in order."""
        config = dataclasses.replace(self, layers=()) if self.layers else self
        for i, override in enumerate(self.layers):
            if fnmatch.fnmatchcase(layer_name, override.pattern):
                config = config._apply_sections(override.settings, root=f"layers[{i}].settings")
        return config

    # ---------------------------------------------------------------------------------------------- derived
    @property
    def num_slices(self) -> int:
        """Physical devices per weight and polarity (bit slices); 1 for unquantised or per-weight noise."""
        w = self.weights
        if not w.quantize or w.noise_granularity == "weight":
            return 1
        return -(-w.bits // w.bits_per_cell)

    @property
    def is_ideal(self) -> bool:
        """True when no non-ideality and no quantisation is active (outputs equal the digital model)."""
        return (
            not self.weights.quantize
            and self.programming.kind == "none"
            and self.read_noise.kind == "none"
            and self.drift.kind == "none"
            and self.faults.sa0_rate == 0
            and self.faults.sa1_rate == 0
            and self.dac.bits is None
            and self.adc.bits is None
            and not self.parasitics.enabled
        )


# --------------------------------------------------------------------------------------------------------------
# presets: data files shipped with the package (the catalogue API is xbarlab.presets)

PRESET_DIR = Path(__file__).resolve().parent / "assets" / "presets"
"""Folder of the preset files: ``index.yaml`` (the names, in listing order) and one ``NAME.yaml`` per preset."""

_PRESET_KEYS = ("description", "hardware")
_PRESET_SUFFIXES = (".yaml",)
_PRESET_EXCLUDE = ("index",)


def preset_names() -> list[str]:
    """The preset names in the order of ``index.yaml``; the index and the ``NAME.yaml`` files must agree."""
    return list(_preset_index())


def preset_entry(name: str) -> tuple[str, dict[str, Any]]:
    """``(description, hardware settings)`` of preset ``name``, read from ``PRESET_DIR/NAME.yaml`` (a fresh copy).

    The settings are a partial hardware mapping (sections not given keep their defaults). An unknown name raises
    :class:`ConfigError` at ``preset``; a malformed file raises :class:`ConfigError` naming the file and key.
    """
    description, settings = _read_preset_file(preset_file(name).stem)
    return description, schema.plain(settings)


def preset_file(value: str | Path, *, key: str = "preset", accept_paths: bool = False) -> Path:
    """The file of preset ``value`` (``PRESET_DIR/NAME.yaml``), by :func:`xbarlab.datafiles.resolve_data_file`.

    With ``accept_paths`` an existing file path wins and is returned as is (``--hw NAME|FILE``). An unknown name
    raises :class:`xbarlab.datafiles.UnknownDataFileError` (a :class:`ConfigError` at ``key``) listing the presets.
    """
    _preset_index()  # the index and the folder agree
    return resolve_data_file(
        value,
        kind="hardware preset",
        folders=(PRESET_DIR,),
        suffixes=_PRESET_SUFFIXES,
        exclude=_PRESET_EXCLUDE,
        key=key,
        accept_paths=accept_paths,
        file_hint="a hardware YAML file",
    )


def preset_config(name: str) -> HardwareConfig:
    """The validated :class:`HardwareConfig` of preset ``name``; errors in the file name the file and the field."""
    _, settings = preset_entry(name)
    return HardwareConfig.from_dict(settings, path=f"{PRESET_DIR / name}.yaml: hardware")


@functools.lru_cache(maxsize=1)
def _preset_index() -> tuple[str, ...]:
    path = PRESET_DIR / "index.yaml"
    data = yamlio.load_file(path, what="a mapping with the key 'presets'")
    names = data.get("presets") if isinstance(data, Mapping) else None
    if not isinstance(data, Mapping) or set(data) != {"presets"} or not isinstance(names, list):
        raise ConfigError(f"{path}: presets", names, "a mapping with one key 'presets': a list of preset names")
    files = list_data_files((PRESET_DIR,), kind="hardware preset", suffixes=_PRESET_SUFFIXES, exclude=_PRESET_EXCLUDE)
    if sorted(names) != files or len(set(names)) != len(names):
        raise ConfigError(f"{path}: presets", names, "each preset file of the folder listed once: " + ", ".join(files))
    return tuple(str(n) for n in names)


@functools.cache
def _read_preset_file(name: str) -> tuple[str, Mapping[str, Any]]:
    path = PRESET_DIR / f"{name}.yaml"
    data = yamlio.load_file(path, what="a mapping with the keys description and hardware")
    if not isinstance(data, Mapping):
        raise ConfigError(str(path), data, "a mapping with the keys " + ", ".join(_PRESET_KEYS))
    odd = sorted(set(data) ^ set(_PRESET_KEYS))
    if odd:
        what = "unknown key" if odd[0] in data else "missing key"
        raise ConfigError(f"{path}: {odd[0]}", data.get(odd[0]), "the keys " + ", ".join(_PRESET_KEYS), problem=what)
    description, settings = data["description"], data["hardware"]
    if not isinstance(description, str) or not description.strip() or "\n" in description.strip():
        raise ConfigError(f"{path}: description", description, "a one-line description")
    if not isinstance(settings, Mapping):
        raise ConfigError(f"{path}: hardware", settings, "a mapping of hardware sections")
    if "preset" in settings:
        raise ConfigError(f"{path}: hardware.preset", settings["preset"], "no 'preset' key (a preset names no other)")
    if settings.get("name") != name:
        raise ConfigError(f"{path}: hardware.name", settings.get("name"), f"{name!r} (the file's name)")
    return description.strip(), settings


# --------------------------------------------------------------------------------------------------------------
# internal helpers

T = TypeVar("T")


def _looks_like_path(text: str) -> bool:
    return "\n" not in text and (text.endswith((".yaml", ".yml")) or Path(text).is_file())


_INFINITIES = ("inf", "+inf", "-inf")
"""Strings a float field accepts as ±infinity (JSON has no infinity; :meth:`HardwareConfig.to_dict` writes these)."""


def _json_safe(value: Any) -> Any:
    """``value`` with every infinite float replaced by ``"inf"`` / ``"-inf"`` (valid JSON)."""
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _float_fields(section_cls: type) -> set[str]:
    """Fields annotated ``float`` or ``float | None``."""
    hints = get_type_hints(section_cls)
    return {name for name, hint in hints.items() if hint is float or float in get_args(hint)}


def _decode_infinities(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Layer-override settings with ``"inf"`` strings in float fields read as floats (JSON round trip)."""
    out = schema.plain(settings)
    for section, values in out.items():
        if section in SECTIONS and isinstance(values, dict):
            floats = _float_fields(SECTIONS[section])
            for name, value in values.items():
                if name in floats and value in _INFINITIES:
                    values[name] = float(value)
    return dict(out)


def _is_off(value: Any, off: Any) -> bool:
    return value is off if off is None or isinstance(off, bool) else bool(value == off)


UNUSED_BY_KIND: dict[str, dict[str, tuple[str, ...]]] = {
    "drift": {"power_law": ("scale",), "pcm_nandakumar": ("nu_mean", "nu_std")},
    "read_noise": {"pcm_1f": ("offset_us",)},
}
"""Fields a section's ``kind`` does not use (``scale`` multiplies the PCM drift exponents only; the power law
draws ν from ``nu_mean``/``nu_std``; the 1/f read noise has no offset): setting them is an error too."""


def _check_unused_by_kind(section: str, user: Mapping[str, Any], result: Any, path: str) -> None:
    kind = getattr(result, "kind", None)
    for name in UNUSED_BY_KIND.get(section, {}).get(str(kind), ()):
        default = next(f.default for f in fields(result) if f.name == name)
        if name in user and getattr(result, name) != default:
            unused = UNUSED_BY_KIND[section]
            users = [k for k in type(result).KINDS if k != "none" and name not in unused.get(k, ())]
            raise ConfigError(
                f"{path}.{name}",
                user[name],
                f"remove {path}.{name}, or use it with {section}.kind " + " / ".join(repr(k) for k in users),
                problem=f"{user[name]!r} has no effect with {section}.kind {kind!r}",
            )


def _check_switched_off(section: str, user: Any, result: Any, path: str) -> None:
    """Reject fields of a user's section mapping that have no effect because the section is switched off.

    ``user`` is the mapping the user wrote for the section (``path``), ``result`` the section after merging it.
    Accepted: the switch alone (``{kind: none}`` keeps inherited values, they are inert), fields restated at
    their default value (``{kind: none, sigma: 0.0}``), and a mapping listing every field of the section (a
    complete description, as :meth:`HardwareConfig.to_dict` writes it).
    """
    if section not in SWITCHES or not isinstance(user, Mapping):
        return
    section_fields = fields(result)
    if set(user) >= {f.name for f in section_fields}:
        return
    _check_unused_by_kind(section, user, result, path)
    switch, off, on_values = SWITCHES[section]
    if not _is_off(getattr(result, switch), off):
        return
    off_text = "null" if off is None else "false" if off is False else repr(off)
    for f in section_fields:
        if f.name == switch or f.name not in user or getattr(result, f.name) == f.default:
            continue
        raise ConfigError(
            f"{path}.{f.name}",
            user[f.name],
            f"set {section}.{switch} to {on_values}, or remove {path}.{f.name}",
            problem=f"{user[f.name]!r} has no effect while {section}.{switch} is {off_text}",
        )


def _section_from_dict(section_cls: type[T], data: Any, path: str, base: T) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(path, data, "a mapping of fields")
    hints = get_type_hints(section_cls)
    names = [f.name for f in fields(section_cls)]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}", data[unknown[0]], "a field among " + ", ".join(names))
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _coerce(f"{path}.{name}", value, hints[name])
    section = dataclasses.replace(base, **kwargs)  # type: ignore[type-var]
    return section


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """Type check one YAML value against its annotation; ints are accepted where floats are expected."""
    origin = get_origin(hint)
    args = get_args(hint)
    if origin is not None and type(None) in args:
        if value is None:
            return None
        inner = next(a for a in args if a is not type(None))
        return _coerce(path, value, inner)
    if hint is float:
        if isinstance(value, str) and value in _INFINITIES:
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, value, "a number")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, value, "an integer")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, value, "true or false")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, value, "a string")
        return value
    return value


def _overrides_from(value: Any, path: str) -> tuple[LayerOverride, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(path, value, "a list of {pattern, settings} mappings")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, LayerOverride):
            out.append(item)
            continue
        if not isinstance(item, Mapping) or set(item) - {"pattern", "settings"} or "pattern" not in item:
            raise ConfigError(f"{path}[{i}]", item, "a mapping with keys 'pattern' and 'settings'")
        settings = item.get("settings", {}) or {}
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{path}[{i}].settings", settings, "a mapping of hardware sections")
        out.append(LayerOverride(pattern=item["pattern"], settings=_decode_infinities(settings)))
    return tuple(out)
