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
from typing import Any, ClassVar, TypeVar, get_args, get_origin, get_type_hints

import yaml

from xbarlab import schema, yamlio
from xbarlab.datafiles import list_data_files, resolve_data_file
from xbarlab.schema import ConfigError as ConfigError  # re-exported: users catch xbarlab.hardware.ConfigError

# --------------------------------------------------------------------------------------------------------------
# sections


@dataclass(frozen=True)
class CrossbarConfig:
    """Physical array size: ``rows`` word lines (inputs) × ``cols`` bit lines (outputs) per crossbar tile."""

    rows: int = 64
    cols: int = 64

    def validate(self, path: str) -> None:
        schema.integer(f"{path}.rows", self.rows, lo=1, hi=4096)
        schema.integer(f"{path}.cols", self.cols, lo=1, hi=4096)


@dataclass(frozen=True)
class WeightConfig:
    """How weights become conductances.

    ``bits``: magnitude bits of the per-layer symmetric quantiser (levels 0 … 2^bits−1, the sign is carried by
    the mapping). ``bits_per_cell``: bits stored per device; a weight uses ceil(bits / bits_per_cell) slices,
    combined by shift-and-add. ``mapping``: ``differential`` (G+/G− pair, idle device at G_off) or ``offset``
    (offset-binary weights, one reference column per tile subtracted per slice). ``quantize``: when false, weights
    keep full precision on one analog device pair (no slicing). ``noise_granularity``: ``slice`` (every physical
    device is perturbed independently) or ``weight`` (P1's reading: one device pair holds the full ``bits``-bit
    magnitude, docs/papers.md §1.10). With ``weight`` there is one cell per weight, so ``bits_per_cell`` must equal
    ``bits``: any other value would be a field that does nothing, and is refused (docs/hardware.md, "Bit slices").
    """

    bits: int = 8
    bits_per_cell: int = 4
    mapping: str = "differential"
    quantize: bool = True
    noise_granularity: str = "slice"

    def validate(self, path: str) -> None:
        schema.integer(f"{path}.bits", self.bits, lo=1, hi=16)
        schema.choice(f"{path}.noise_granularity", self.noise_granularity, ("slice", "weight"))
        if self.quantize is True and self.noise_granularity == "weight" and self.bits_per_cell != self.bits:
            slices = -(-self.bits // self.bits_per_cell) if isinstance(self.bits_per_cell, int) else "?"
            raise ConfigError(
                f"{path}.bits_per_cell",
                self.bits_per_cell,
                f"{self.bits} (= {path}.bits) with {path}.noise_granularity 'weight', or noise_granularity "
                f"'slice' to store the weight in {slices} cells of {self.bits_per_cell} bits",
                problem=f"{self.bits_per_cell!r} has no effect with noise_granularity 'weight' (one device pair "
                f"holds all {self.bits} bits of a weight)",
            )
        schema.integer(f"{path}.bits_per_cell", self.bits_per_cell, lo=1, hi=max(1, self.bits))
        schema.choice(f"{path}.mapping", self.mapping, ("differential", "offset"))
        schema.boolean(f"{path}.quantize", self.quantize)
        schema.choice(f"{path}.noise_granularity", self.noise_granularity, ("slice", "weight"))
        if self.mapping == "offset" and self.quantize and self.bits < 2:
            raise ConfigError(f"{path}.bits", self.bits, ">= 2 with the offset mapping (one bit is the sign)")


@dataclass(frozen=True)
class DeviceConfig:
    """Memory device. ``r_on_ohm``: low-resistance state (Ω); ``on_off_ratio``: R_off/R_on (> 1, may be inf).

    G_on = 1/R_on and G_off = G_on / on_off_ratio (siemens). A cell stores 2^bits_per_cell equally spaced
    conductance levels between G_off and G_on.
    """

    name: str = "generic"
    r_on_ohm: float = 50e3
    on_off_ratio: float = 10.0

    def validate(self, path: str) -> None:
        if not isinstance(self.name, str):
            raise ConfigError(f"{path}.name", self.name, "a string")
        schema.number(f"{path}.r_on_ohm", self.r_on_ohm, lo=0.0, lo_open=True)
        schema.number(f"{path}.on_off_ratio", self.on_off_ratio, lo=1.0, lo_open=True, allow_inf=True)

    @property
    def g_on_s(self) -> float:
        """Conductance of the ON state, siemens."""
        return 1.0 / self.r_on_ohm

    @property
    def g_off_s(self) -> float:
        """Conductance of the OFF state, siemens (0 for an infinite ON/OFF ratio)."""
        return 0.0 if math.isinf(self.on_off_ratio) else self.g_on_s / self.on_off_ratio

    @property
    def g_on_us(self) -> float:
        """Conductance of the ON state, µS."""
        return self.g_on_s * 1e6

    @property
    def g_off_us(self) -> float:
        """Conductance of the OFF state, µS."""
        return self.g_off_s * 1e6


@dataclass(frozen=True)
class ProgrammingConfig:
    """Static programming variation, sampled once per chip instance.

    ``kind``: ``none``; ``gaussian_abs`` (G + N(0, sigma²), sigma in µS); ``gaussian_rel`` (G·(1 + sigma·ξ));
    ``lognormal`` (G·e^θ, θ ~ N(0, sigma²), CorrectNet); ``pcm_nandakumar`` (aihwkit's PCM polynomial
    σ_prog(g), sigma = prog_noise_scale). Conductances are floored at 0 S (a device cannot be negative).
    """

    KINDS: ClassVar[tuple[str, ...]] = ("none", "gaussian_abs", "gaussian_rel", "lognormal", "pcm_nandakumar")

    kind: str = "none"
    sigma: float = 0.0

    def validate(self, path: str) -> None:
        schema.choice(f"{path}.kind", self.kind, self.KINDS)
        schema.number(f"{path}.sigma", self.sigma, lo=0.0)


@dataclass(frozen=True)
class ReadNoiseConfig:
    """Stochastic read noise G' = G + N(0, σ²) (P1 Eq. 1).

    ``kind`` fixes the unit of σ: ``absolute_uS`` (σ = sigma µS), ``relative_to_G`` (σ = sigma·G + offset_uS,
    the P1 default for FeFET/RRAM; PCM-i/ii use sigma 0.03 and offset 0.13 µS), ``relative_to_G_on``
    (σ = sigma·G_on), ``pcm_1f`` (aihwkit's accumulated 1/f noise, sigma = read_noise_scale) or ``none``.
    ``mode``: ``frozen`` (sampled once per chip instance) or ``per_mvm`` (an independent draw for every sample
    of every matrix-vector multiplication, simulated exactly through the output variance Σ x_i² σ_ij²).
    """

    KINDS: ClassVar[tuple[str, ...]] = ("none", "absolute_uS", "relative_to_G", "relative_to_G_on", "pcm_1f")

    kind: str = "none"
    sigma: float = 0.0
    offset_us: float = 0.0
    mode: str = "frozen"

    def validate(self, path: str) -> None:
        schema.choice(f"{path}.kind", self.kind, self.KINDS)
        schema.number(f"{path}.sigma", self.sigma, lo=0.0)
        schema.number(f"{path}.offset_us", self.offset_us, lo=0.0)
        schema.choice(f"{path}.mode", self.mode, ("frozen", "per_mvm"))
        if self.kind == "pcm_1f" and self.mode != "frozen":
            raise ConfigError(f"{path}.mode", self.mode, "'frozen' with kind 'pcm_1f' (noise accumulated over time)")


@dataclass(frozen=True)
class DriftConfig:
    """Temporal conductance drift G(t) = G0·(t/t0)^−ν (P1 Eq. 2).

    ``kind``: ``none``, ``power_law`` (ν ~ N(nu_mean, nu_std²) per device) or ``pcm_nandakumar`` (aihwkit's
    conductance-dependent ν(g), multiplied by ``scale``). ``t0_s``: reference time in seconds (P1: 1 s; aihwkit:
    20 s). A chip is read at t0 until :func:`xbarlab.drift` moves it.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("none", "power_law", "pcm_nandakumar")

    kind: str = "none"
    nu_mean: float = 0.0
    nu_std: float = 0.0
    t0_s: float = 1.0
    scale: float = 1.0

    def validate(self, path: str) -> None:
        schema.choice(f"{path}.kind", self.kind, self.KINDS)
        schema.number(f"{path}.nu_mean", self.nu_mean, lo=0.0, hi=2.0)
        schema.number(f"{path}.nu_std", self.nu_std, lo=0.0, hi=2.0)
        schema.number(f"{path}.t0_s", self.t0_s, lo=0.0, lo_open=True)
        schema.number(f"{path}.scale", self.scale, lo=0.0)


@dataclass(frozen=True)
class FaultConfig:
    """Stuck-at faults: a fraction ``sa0_rate`` of devices stuck at G_off, ``sa1_rate`` stuck at G_on."""

    sa0_rate: float = 0.0
    sa1_rate: float = 0.0

    def validate(self, path: str) -> None:
        schema.number(f"{path}.sa0_rate", self.sa0_rate, lo=0.0, hi=1.0)
        schema.number(f"{path}.sa1_rate", self.sa1_rate, lo=0.0, hi=1.0)
        if self.sa0_rate + self.sa1_rate > 1.0:
            raise ConfigError(f"{path}.sa1_rate", self.sa1_rate, f"<= {1.0 - self.sa0_rate} (sa0 + sa1 <= 1)")


@dataclass(frozen=True)
class DACConfig:
    """Input DAC: inputs quantised to ``bits`` bits over a range calibrated on data (None = ideal inputs).

    ``range_mode``: ``max`` (largest |x| seen) or ``percentile`` (that percentile of |x|). Non-negative inputs
    use the unsigned range [0, r]; signed inputs a symmetric range [−r, r] with zero exactly representable.
    """

    bits: int | None = None
    range_mode: str = "max"
    percentile: float = 99.99

    def validate(self, path: str) -> None:
        if self.bits is not None:
            schema.integer(f"{path}.bits", self.bits, lo=2, hi=16)
        schema.choice(f"{path}.range_mode", self.range_mode, ("max", "percentile"))
        schema.number(f"{path}.percentile", self.percentile, lo=50.0, hi=100.0, lo_open=True)


@dataclass(frozen=True)
class ADCConfig:
    """Column ADC: each tile column's partial sum (per slice and row tile) quantised to ``bits`` bits.

    The symmetric range [−r, r] is calibrated per layer and slice (``max`` or ``percentile`` of |partial sum|).
    ``noise_lsb``: Gaussian ADC input noise, standard deviation in LSB. None bits = ideal readout.
    """

    bits: int | None = None
    range_mode: str = "max"
    percentile: float = 99.99
    noise_lsb: float = 0.0

    def validate(self, path: str) -> None:
        if self.bits is not None:
            schema.integer(f"{path}.bits", self.bits, lo=2, hi=16)
        schema.choice(f"{path}.range_mode", self.range_mode, ("max", "percentile"))
        schema.number(f"{path}.percentile", self.percentile, lo=50.0, hi=100.0, lo_open=True)
        schema.number(f"{path}.noise_lsb", self.noise_lsb, lo=0.0)
        if self.noise_lsb > 0 and self.bits is None:
            raise ConfigError(f"{path}.noise_lsb", self.noise_lsb, "0 when the ADC is off (bits: null)")


@dataclass(frozen=True)
class ParasiticsConfig:
    """Resistive parasitics (IR drop), solved exactly per physical array. Resistances in Ω.

    P1's values (refs [3, 4] of the paper): driver 1 kΩ, row wire 5 Ω and column wire 10 Ω per cell segment,
    sense 1 kΩ.
    """

    enabled: bool = False
    r_driver_ohm: float = 1000.0
    r_wire_row_ohm: float = 5.0
    r_wire_col_ohm: float = 10.0
    r_sense_ohm: float = 1000.0

    def validate(self, path: str) -> None:
        schema.boolean(f"{path}.enabled", self.enabled)
        for name in ("r_driver_ohm", "r_wire_row_ohm", "r_wire_col_ohm", "r_sense_ohm"):
            schema.number(f"{path}.{name}", getattr(self, name), lo=0.0)


GAUSSIAN_SAMPLERS: tuple[str, ...] = ("exact", "pooled")
"""Samplers of the per-MVM N(0, 1) draws (:class:`SamplingConfig`, implemented in :mod:`xbarlab.sampling`)."""


@dataclass(frozen=True)
class SamplingConfig:
    """How the per-MVM Gaussian draws are made: per-MVM read noise and ADC input noise (both unit-free N(0, 1)).

    ``gaussian``: ``exact`` (default; ``torch.randn``, every draw independent) or ``pooled`` (approximate and
    faster: each call draws n/16 exact values and reads them in 64-long blocks at random offsets with random signs;
    every draw is exactly N(0, 1) and any two are uncorrelated, so sums of k draws have variance k, but within one
    call each value is reused about 16 times. Do not use it where the statistics of one forward's noise matter
    (e.g. measuring the noise itself); docs/sampling.md). Static noise (programming, frozen read noise) is always
    exact. Left out of :meth:`HardwareConfig.to_dict` while at its default, so configuration hashes that predate
    this section are unchanged.
    """

    gaussian: str = "exact"

    def validate(self, path: str) -> None:
        schema.choice(f"{path}.gaussian", self.gaussian, GAUSSIAN_SAMPLERS)


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
"""Entry of ``keep_digital`` meaning "the last nn.Linear of the model" (P1 keeps the classifier digital)."""


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
