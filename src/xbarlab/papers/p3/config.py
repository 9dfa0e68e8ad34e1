"""The P3 configuration: :class:`P3Config` (every setting of one run), the P3 hardware and the stage names.

:class:`P3Config` is frozen and validated on construction with :mod:`xbarlab.schema` (the one validation module):
each field's type, range and unit are in :data:`P3_FIELDS`; a bad value is one :class:`~xbarlab.schema.ConfigError`
naming the field, the value and what is allowed (with ``file:line`` when read from YAML by
:meth:`P3Config.from_yaml`; ``--set`` for a command-line value). Unknown keys are refused with the list of the
allowed ones. Cross-checks that need the data set or the models (image counts against the splits, a Lipschitz
checkpoint that loads) are made by :func:`xbarlab.papers.p3.prepare_p3`, still before anything is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from xbarlab.datafiles import list_data_files, resolve_data_file
from xbarlab.schema import ConfigError, Field, bounds_text, join, plain

__all__ = ["P3_FIELDS", "P3_HARDWARE", "STAGES", "P3Config", "config_path", "list_configs", "p3_hardware"]

P3_HARDWARE: dict[str, Any] = {
    "preset": "rram",
    "name": "p3-rram-lognormal",
    "weights": {"bits": 8, "bits_per_cell": 2, "noise_granularity": "slice"},
    "read_noise": {"kind": "none", "sigma": 0.0},
    "drift": {"kind": "none"},
    "programming": {"kind": "lognormal", "sigma": 0.0},
    "dac": {"bits": 8},
    "adc": {"bits": 8, "noise_lsb": 0.5},
}
"""P3 hardware (same as the shipped ``p3-correctnet`` sweep): RRAM preset (R_on 50 kΩ, ON/OFF 10, 64×64 arrays,
classifier digital), log-normal programming variation G·e^θ per device, 8-bit weights on 2-bit cells
(4 slices, every device perturbed independently), 8-bit DAC, 8-bit ADC per partial sum with 0.5 LSB noise."""


STAGES = ("models", "sweep", "placement", "quant", "perchip", "table")
"""Pipeline stages in run order (``models`` always runs: every later stage needs its models)."""


@dataclass(frozen=True)
class P3Config:
    """Settings of :func:`~xbarlab.papers.p3.run_p3` (every field is recorded in ``config.json``; types, ranges
    and units in :data:`P3_FIELDS`). Values are checked and normalised on construction (an integer given for a
    real-valued field becomes a float, lists become tuples)."""

    model: str = "lenet5-fmnist"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    out_dir: str = "runs/p3-lenet5-fmnist"
    hardware_overrides: dict[str, Any] = field(default_factory=dict)
    sigmas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    target_sigma: float | None = None
    chips: int = 5
    test_images: int = 10000
    sweep_images: int = 2000
    val_images: int = 2000
    calib_images: int = 512
    batch_size: int = 500
    # Lipschitz
    lipschitz_checkpoint: str | None = None
    lipschitz_kind: str = "parseval_neft"
    lipschitz_beta: float = 5e-4
    lipschitz_epochs: int = 5
    lipschitz_lr: float = 0.01
    # compensation
    comp_steps: int = 600
    comp_lr: float = 3e-3
    comp_batch_size: int = 128
    comp_reduction: int = 4
    comp_affine: bool = True
    comp_loss: str = "ce_normalized"
    comp_pool: int = 64
    adc_in_training: bool = False
    # placement
    budget_pct: float = 10.0
    penalty: float = 0.2
    cost_metric: str = "max"
    rl_episodes: int = 30
    random_samples: int = 5
    greedy_mode: str = "iterative"
    search_chips: int = 3
    # quantisation search
    quant_bits_per_cell: tuple[int, ...] = (1, 2, 4)
    quant_adc_bits: tuple[int, ...] = (4, 5, 6, 7, 8)
    quant_tolerance: float = 1.0
    quant_chips: int = 3
    quant_images: int = 1000
    quant_max_evaluations: int = 60
    adc_fom_fj: float = 5.0
    adc_scaling: str = "walden"
    # per-chip stage (an extension, not in P3): fine-tune the RL branches on each test chip; BN adaptation
    perchip_steps: int = 100
    perchip_images: int = 1000
    perchip_batch_size: int = 64
    perchip_lr: float = 3e-3
    bn_images: int = 2560
    # run
    seed: int = 0
    eval_seed: int = 10_000
    search_seed: int = 20_000
    threads: int = 1
    stages: tuple[str, ...] = ("models", "sweep", "placement", "quant", "perchip", "table")
    force: bool = False
    resume: str = "auto"
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name, value in _checked(self).items():
            object.__setattr__(self, name, value)

    @property
    def sigma_max(self) -> float:
        """The variation level of the placement and quantisation stages and of the table: ``target_sigma``,
        or the highest σ of the sweep."""
        return max(self.sigmas) if self.target_sigma is None else float(self.target_sigma)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ------------------------------------------------------------------------------------------ YAML in and out

    @classmethod
    def from_dict(
        cls,
        data: Any,
        *,
        overrides: Mapping[str, Any] | None = None,
        source: str | None = None,
        lines: Mapping[tuple[str, ...], int] | None = None,
    ) -> P3Config:
        """A config from a mapping of field names (missing fields take their defaults; unknown keys refused).

        ``overrides``: ``{key: value}`` applied on top (the command line's ``--set``): a field name, or
        ``hardware_overrides.<dotted.hardware.key>`` to add one hardware override. ``source``/``lines``: the file
        and its key → line map (:func:`xbarlab.yamlio.load_with_lines`), so that an error names ``file:line``;
        an error in an override names ``--set``.
        """
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError("<root>", data, "a mapping of P3Config fields: " + ", ".join(P3_FIELDS), source=source)
        values = {str(k): v for k, v in data.items()}
        for key in values:
            if key not in P3_FIELDS:
                raise _located(ConfigError(key, values[key], ", ".join(P3_FIELDS), "unknown key"), source, lines or {})
        if overrides and values:  # the file's own values must be valid too: an override does not hide a bad file
            try:
                cls(**values)
            except ConfigError as exc:
                raise _located(exc, source, lines or {}) from None
        given: set[tuple[str, ...]] = set()  # the key paths set by ``overrides``
        for key, value in (overrides or {}).items():
            name, _, sub = key.partition(".")
            if name not in P3_FIELDS or (sub and name != "hardware_overrides"):
                allowed = ", ".join(P3_FIELDS) + " (hardware: hardware_overrides.<section>.<key>)"
                raise ConfigError(key, value, allowed, "unknown key", source="--set")
            if sub:
                hw = dict(values.get("hardware_overrides") or {})
                hw[sub] = value
                values["hardware_overrides"] = hw
                given.add((name, sub))
            else:
                values[name] = value
                given.add((name,))
        try:
            return cls(**values)
        except ConfigError as exc:
            if any(tuple(exc.keys[: len(g)]) == g for g in given):
                raise ConfigError(
                    exc.path, exc.value, exc.allowed, exc.problem, source="--set", keys=exc.keys
                ) from None
            raise _located(exc, source, lines or {}) from None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> P3Config:
        """A config from a YAML file of field names (see :meth:`from_dict`); errors name ``file:line``."""
        from xbarlab.yamlio import load_with_lines

        p = Path(path)
        try:
            text = p.read_text()
        except UnicodeDecodeError as exc:
            raise ConfigError("config", str(p), "a YAML file", "not a text file (not UTF-8)") from exc
        except OSError as exc:
            raise ConfigError("config", str(p), "a readable YAML file", f"cannot read {p} ({exc.strerror})") from exc
        data, lines = load_with_lines(text, str(p))  # invalid YAML, a key twice: YamlInputError with file:line
        if data is None:
            raise ConfigError(
                "config", str(p), "a YAML mapping of P3Config fields", "the file holds no settings", source=str(p)
            )
        return cls.from_dict(data, overrides=overrides, source=str(p), lines=lines)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML (every field, in declaration order; :meth:`from_yaml` reads it back equal).
        Written (atomically) to ``path`` when given."""
        text = yaml.safe_dump(plain(self.as_dict()), sort_keys=False, allow_unicode=True, width=120)
        if path is not None:
            from xbarlab.atomic import atomic_write_text

            atomic_write_text(Path(path), text)
        return text


P3_FIELDS: dict[str, Field] = {
    "model": Field("str", doc="shipped pretrained model name (e.g. lenet5-fmnist) or checkpoint path"),
    "dataset": Field("str", doc="data set of the model (xbarlab.data.list_datasets)"),
    "data_dir": Field("str", optional=True, doc="folder of the data set files (null: the data set's own)"),
    "out_dir": Field("str", doc="output folder (resumable); the command line's --out"),
    "hardware_overrides": Field(
        "mapping", doc="dotted hardware overrides on top of P3_HARDWARE (e.g. adc.bits: 6); not programming.sigma"
    ),
    "sigmas": Field("list", doc="log-normal σ values of the sweep (dimensionless, G·e^θ with θ ~ N(0, σ²))"),
    "target_sigma": Field(
        "float", optional=True, lo=0.0, doc="σ of placement, quantisation and table (null: the largest swept σ)"
    ),
    "chips": Field("int", lo=1, doc="chips per reported point"),
    "test_images": Field("int", lo=1, doc="test images of the final table"),
    "sweep_images": Field("int", lo=1, doc="test images per point of the σ sweep"),
    "val_images": Field("int", lo=1, doc="held-out training images that score the searches"),
    "calib_images": Field("int", lo=1, doc="training images of the DAC/ADC range calibration"),
    "batch_size": Field("int", lo=1, doc="evaluation batch size"),
    "lipschitz_checkpoint": Field("str", optional=True, doc="use this Lipschitz-trained checkpoint (no fine-tuning)"),
    "lipschitz_kind": Field("str", choices=("parseval_neft", "parseval_matrix", "spectral"), doc="Lipschitz penalty"),
    "lipschitz_beta": Field("float", lo=0.0, doc="Lipschitz penalty weight β"),
    "lipschitz_epochs": Field("int", lo=1, doc="fine-tuning epochs with the penalty"),
    "lipschitz_lr": Field("float", lo=0.0, lo_open=True, doc="fine-tuning learning rate (cosine schedule)"),
    "comp_steps": Field("int", lo=1, doc="compensation training steps (batches)"),
    "comp_lr": Field("float", lo=0.0, lo_open=True, doc="compensation learning rate (Adam)"),
    "comp_batch_size": Field("int", lo=1, doc="compensation training batch size"),
    "comp_reduction": Field("int", lo=1, doc="branch width reduction (channels / reduction)"),
    "comp_affine": Field("bool", doc="branches end with a per-channel affine"),
    "comp_loss": Field("str", doc="compensation loss (xbarlab.mitigation.compensation.LOSSES)"),
    "comp_pool": Field("int", lo=0, doc="training chips of the search (0: a fresh chip every batch)"),
    "adc_in_training": Field("bool", doc="train branches with the ADC (default: without)"),
    "budget_pct": Field("float", lo=0.0, doc="compensation overhead budget, % of the base model"),
    "penalty": Field("float", lo=0.0, doc="reward λ: accuracy points per % of overhead"),
    "cost_metric": Field("str", choices=("params", "macs", "max"), doc="overhead measure"),
    "rl_episodes": Field("int", lo=1, doc="RL episode budget"),
    "random_samples": Field("int", lo=1, doc="random feasible placements of the random baseline"),
    "greedy_mode": Field("str", choices=("iterative", "ranked"), doc="greedy baseline (ranked: one pass)"),
    "search_chips": Field("int", lo=1, doc="chips per placement evaluation"),
    "quant_bits_per_cell": Field("list", doc="bits-per-cell options of the quantisation search"),
    "quant_adc_bits": Field("list", doc="ADC resolutions (bits) of the quantisation search"),
    "quant_tolerance": Field("float", lo=0.0, doc="'equal accuracy' tolerance of the ADC search, accuracy points"),
    "quant_chips": Field("int", lo=1, doc="chips per evaluation of the quantisation search"),
    "quant_images": Field("int", lo=1, doc="held-out images per evaluation of the quantisation search"),
    "quant_max_evaluations": Field("int", lo=1, doc="evaluation cap of the quantisation search"),
    "adc_fom_fj": Field("float", lo=0.0, lo_open=True, doc="ADC figure of merit, fJ per conversion step"),
    "adc_scaling": Field("str", choices=("walden", "schreier"), doc="ADC energy scaling: walden 2^B, schreier 4^B"),
    "perchip_steps": Field("int", lo=1, doc="per-chip fine-tuning steps of the RL branches (extension)"),
    "perchip_images": Field("int", lo=1, doc="labelled training images of the per-chip fine-tuning"),
    "perchip_batch_size": Field("int", lo=1, doc="per-chip fine-tuning batch size"),
    "perchip_lr": Field("float", lo=0.0, lo_open=True, doc="per-chip fine-tuning learning rate (Adam)"),
    "bn_images": Field("int", lo=1, doc="unlabelled images of the BN-adaptation row (models with BN)"),
    "seed": Field("int", lo=0, doc="training seed (fine-tuning, branches, RL)"),
    "eval_seed": Field("int", lo=0, doc="evaluation chip k is programmed with eval_seed + k"),
    "search_seed": Field("int", lo=0, doc="search chip k is programmed with search_seed + k"),
    "threads": Field("int", lo=1, doc="torch threads"),
    "stages": Field("list", doc="stages to run, from " + ", ".join(STAGES)),
    "force": Field("bool", doc="recompute every stage run, even when its stored settings match"),
    "resume": Field(
        "str", choices=("auto", "strict"), doc="a stored stage whose settings changed: recompute or refuse"
    ),
    "device": Field("str", doc="torch device of every stage: cpu, cuda or cuda:N"),
}
"""Type, range and meaning (with units) of every :class:`P3Config` field; the defaults are the dataclass's."""

_ITEMS: dict[str, Field] = {
    "sigmas": Field("float", lo=0.0),
    "quant_bits_per_cell": Field("int", lo=1),
    "quant_adc_bits": Field("int", lo=1),
    "stages": Field("str", choices=STAGES),
}
"""Element fields of the list-valued fields (each list non-empty)."""

_ALLOWED: dict[str, str] = {
    "greedy_mode": "'iterative' or 'ranked'",
    "cost_metric": "'params', 'macs' or 'max'",
    "resume": "'auto' (recompute stages whose settings changed) or 'strict' (refuse)",
    "comp_pool": "an integer >= 0 (0: a fresh chip every batch)",
}
"""Messages of fields whose allowed values read better than :meth:`Field.describe` says them."""

_DEVICES_ALLOWED = (
    "'cpu', or 'cuda' / 'cuda:N' when torch.cuda.is_available() (the meta device holds no values to report)"
)


def _device_ok(device: Any) -> bool:
    """``device`` names the CPU, or a CUDA device that exists here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        return False
    if dev.type == "cpu":
        return True
    if dev.type != "cuda" or not torch.cuda.is_available():
        return False
    return dev.index is None or dev.index < torch.cuda.device_count()


def _allowed(name: str, spec: Field) -> str:
    if name in _ALLOWED:
        return _ALLOWED[name]
    if spec.kind == "float":
        bounds = bounds_text(spec.lo, spec.hi, lo_open=spec.lo_open, hi_open=spec.hi_open)
        return "a finite number" + (f" {bounds}" if bounds else "") + (" or null" if spec.optional else "")
    return spec.describe()


_LIST_ALLOWED: dict[str, str] = {
    "sigmas": "a non-empty list of σ values >= 0, e.g. [0, 0.5, 1]",
    "quant_bits_per_cell": "a non-empty list of integers >= 1, e.g. [1, 2, 4]",
    "quant_adc_bits": "a non-empty list of integers >= 1, e.g. [4, 5, 6, 7, 8]",
    "stages": "a non-empty list of stages among " + ", ".join(STAGES),
}


def _check_list(name: str, value: Any) -> tuple[Any, ...]:
    """A non-empty list (or tuple) whose every element fits :data:`_ITEMS` [name], as a tuple."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(name, value, _LIST_ALLOWED[name])
    item = _ITEMS[name]
    out = []
    for i, v in enumerate(value):
        if not item.fits(v):
            raise ConfigError(f"{name}[{i}]", v, _allowed(name, item), keys=(name, str(i)))
        out.append(item.check(f"{name}[{i}]", v))
    return tuple(out)


def _checked(cfg: P3Config) -> dict[str, Any]:
    """Every field of ``cfg`` checked against :data:`P3_FIELDS` and normalised (raises :class:`ConfigError`)."""
    out: dict[str, Any] = {}
    for name, spec in P3_FIELDS.items():
        value = getattr(cfg, name)
        if name in _ITEMS:
            out[name] = _check_list(name, value)
            continue
        if not spec.fits(value):
            raise ConfigError(name, value, _allowed(name, spec))
        out[name] = spec.check(name, value)
    from xbarlab.mitigation.compensation import LOSSES

    if out["comp_loss"] not in LOSSES:
        raise ConfigError("comp_loss", out["comp_loss"], "one of " + ", ".join(repr(x) for x in LOSSES))
    if not _device_ok(out["device"]):
        raise ConfigError("device", out["device"], _DEVICES_ALLOWED)
    overrides = out["hardware_overrides"]
    section = overrides.get("programming")
    if "programming.sigma" in overrides or (isinstance(section, Mapping) and "sigma" in section):
        value = overrides["programming.sigma"] if "programming.sigma" in overrides else section["sigma"]
        raise ConfigError(
            "hardware_overrides.programming.sigma",
            value,
            "no override of it: the σ of every stage is set by sigmas and target_sigma",
            f"invalid value {value!r} (the log-normal σ is not a hardware override)",
        )
    try:
        p3_hardware(0.0, overrides)
    except ConfigError as exc:
        dotted = ".".join(exc.keys)  # the override as written (``adc.bits: 0``) when it was given dotted
        keys = ("hardware_overrides", dotted) if dotted in overrides else ("hardware_overrides", *exc.keys)
        raise ConfigError(
            join("hardware_overrides", exc.path), exc.value, exc.allowed, exc.problem, keys=keys
        ) from None
    return out


def _located(exc: ConfigError, source: str | None, lines: Mapping[tuple[str, ...], int]) -> ConfigError:
    """``exc`` with the file and the line of its key (or of the nearest enclosing key) when known."""
    keys = tuple(exc.keys)
    line = None
    while keys:
        if keys in lines:
            line = lines[keys]
            break
        keys = keys[:-1]
    return ConfigError(exc.path, exc.value, exc.allowed, exc.problem, source=source, line=line, keys=exc.keys)


CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The shipped P3 configs: the settings that made the results in docs/results/p3/ (one YAML file each)."""


def list_configs() -> list[str]:
    """Names of the shipped P3 configs (file stems in :data:`CONFIG_DIR`), sorted."""
    return list_data_files((CONFIG_DIR,), kind="shipped config", suffixes=(".yaml",))


def config_path(name_or_path: str | Path) -> Path:
    """A config file: ``name_or_path`` when it is a file, else the shipped config of that name (as a bare name
    selects a built-in sweep in ``xbarlab sweep``; :func:`xbarlab.datafiles.resolve_data_file`); a
    :class:`ConfigError` at ``config`` naming both choices otherwise."""
    return resolve_data_file(
        name_or_path,
        kind="shipped config",
        folders=(CONFIG_DIR,),
        suffixes=(".yaml",),  # what pyproject.toml ships (papers/*/configs/*.yaml)
        key="config",
        file_hint="a YAML file of P3Config fields",
    )


def _device(cfg: P3Config) -> torch.device:
    """The torch device every stage computes on (models, chips, chip pools, batches)."""
    return torch.device(cfg.device)


def p3_hardware(sigma: float, overrides: dict[str, Any] | None = None) -> Any:
    """The P3 hardware (:data:`P3_HARDWARE`) at log-normal σ, with dotted-path ``overrides`` applied last."""
    from xbarlab.hardware import HardwareConfig

    hw = HardwareConfig.from_dict(P3_HARDWARE).override({"programming.sigma": float(sigma)})
    if overrides:
        hw = hw.override(overrides)
    return hw
