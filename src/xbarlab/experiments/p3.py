"""The P3 (CorrectNet / CorrectNet+) pipeline: plain → Lipschitz → + compensation (RL placement) → + quantisation.

One call of :func:`run_p3` (CLI: ``xbarlab correctnet run``) does, for one model and data set:

1. **models**: load the plain model (a shipped pretrained name such as ``lenet5-fmnist`` or a checkpoint path);
   load or fine-tune a Lipschitz-regularised copy (:mod:`xbarlab.mitigation.lipschitz`) and record whether the
   two clean accuracies match within ±1 point;
2. **sweep**: accuracy over chips of both models for every σ of the log-normal variation (full hardware:
   limited cell levels, DAC, noisy ADC);
3. **placement** (at the highest σ, on the Lipschitz model): the RL agent, greedy, all layers, none and random
   placements of digital compensation branches under an overhead budget; the search trains branches with a chip
   pool and scores them on held-out training images; the chosen placements are then retrained with a fresh chip
   every batch and tested on the test set;
4. **quant**: greedy search over bits per cell and per-layer ADC bits for accuracy under variation and ADC
   energy, on the Lipschitz + RL-compensated model; saving at equal accuracy against uniform 8-bit ADCs;
5. **perchip** (extensions, not in P3, on the same test chips): the RL branches fine-tuned on each test chip
   with a few labelled images; and, for models with BN, the plain model with its BN statistics adapted per chip
   (P1/P2);
6. **table**: ``results.json``, ``results.md`` (with the quantisation search's Pareto front) and the figures
   ``sweep.png`` and ``quant_pareto.png`` in the output folder.

Every stage writes its result to the output folder together with the settings that determine it and their
key (``"_stage"``: the SHA-256 of the canonical JSON of those settings, the keys of the stages it builds on and
:data:`STAGE_FORMAT`). On a rerun a stage whose stored key equals the current one is reused; when it differs the
stage is recomputed, with one line saying which settings changed, and so is every stage downstream of it
(``resume="strict"`` refuses instead, before anything is written). ``force`` recomputes every stage run. The
expensive searches cache every evaluation on disk (the cache is dropped when its stage's key changes), so an
interrupted run resumes where it stopped. Printed tables take their labels (model, σ, chips, image counts) from
the stored stage settings, never from the current command.

Seeds: evaluation chip k is programmed with ``eval_seed + k``; search chips with ``search_seed + k``;
training chips with :func:`xbarlab.mitigation.compensation.training_chip_seed` (derived 31-bit seeds), so test
chips are never training chips. Images: compensation trains on the training split minus its last
``val_images`` images, which score the searches; the test split is only used for the reported numbers.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from xbarlab.atomic import atomic_write_text

__all__ = [
    "P3_HARDWARE",
    "STAGE_FORMAT",
    "P3Config",
    "P3Plan",
    "load_model",
    "p3_hardware",
    "prepare_p3",
    "run_p3",
    "write_figures",
    "write_table",
]

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
    """Settings of :func:`run_p3` (every field is recorded in ``config.json``)."""

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
        checks: list[tuple[str, bool, str]] = [
            ("sigmas", len(self.sigmas) > 0 and all(_finite(s, 0) for s in self.sigmas), "non-empty, every σ >= 0"),
            ("target_sigma", self.target_sigma is None or _finite(self.target_sigma, 0), "None or >= 0"),
            ("calib_images", self.calib_images >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lipschitz_beta", _finite(self.lipschitz_beta, 0), "finite, >= 0"),
            ("lipschitz_epochs", self.lipschitz_epochs >= 1, ">= 1"),
            ("lipschitz_lr", _finite(self.lipschitz_lr, 0, strict=True), "finite, > 0"),
            ("comp_lr", _finite(self.comp_lr, 0, strict=True), "finite, > 0"),
            ("comp_reduction", self.comp_reduction >= 1, ">= 1"),
            ("penalty", _finite(self.penalty, 0), "finite, >= 0"),
            (
                "quant_bits_per_cell",
                len(self.quant_bits_per_cell) > 0 and min(self.quant_bits_per_cell) >= 1,
                "non-empty, every value >= 1",
            ),
            (
                "quant_adc_bits",
                len(self.quant_adc_bits) > 0 and min(self.quant_adc_bits) >= 1,
                "non-empty, every value >= 1",
            ),
            ("quant_tolerance", _finite(self.quant_tolerance, 0), "finite, >= 0 (accuracy points)"),
            ("quant_max_evaluations", self.quant_max_evaluations >= 1, ">= 1"),
            ("adc_fom_fj", _finite(self.adc_fom_fj, 0, strict=True), "finite, > 0 (fJ per conversion step)"),
            ("seed", self.seed >= 0, ">= 0"),
            ("eval_seed", self.eval_seed >= 0, ">= 0"),
            ("search_seed", self.search_seed >= 0, ">= 0"),
            (
                "resume",
                self.resume in ("auto", "strict"),
                "'auto' (recompute stages whose settings changed) or 'strict' (refuse)",
            ),
            ("device", _device_ok(self.device), _DEVICES_ALLOWED),
            ("chips", self.chips >= 1, ">= 1"),
            ("test_images", self.test_images >= 1, ">= 1"),
            ("sweep_images", self.sweep_images >= 1, ">= 1"),
            ("val_images", self.val_images >= 1, ">= 1"),
            ("comp_steps", self.comp_steps >= 1, ">= 1"),
            ("budget_pct", _finite(self.budget_pct, 0), "finite, >= 0 (%)"),
            ("cost_metric", self.cost_metric in ("params", "macs", "max"), "'params', 'macs' or 'max'"),
            ("rl_episodes", self.rl_episodes >= 1, ">= 1"),
            ("greedy_mode", self.greedy_mode in ("iterative", "ranked"), "'iterative' or 'ranked'"),
            ("random_samples", self.random_samples >= 1, ">= 1"),
            ("comp_pool", self.comp_pool >= 0, ">= 0 (0: a fresh chip every batch)"),
            ("comp_batch_size", self.comp_batch_size >= 1, ">= 1"),
            ("quant_images", self.quant_images >= 1, ">= 1"),
            ("perchip_steps", self.perchip_steps >= 1, ">= 1"),
            ("perchip_images", self.perchip_images >= 1, ">= 1"),
            ("perchip_batch_size", self.perchip_batch_size >= 1, ">= 1"),
            ("perchip_lr", self.perchip_lr > 0 and math.isfinite(self.perchip_lr), "finite, > 0"),
            ("bn_images", self.bn_images >= 1, ">= 1"),
            ("search_chips", self.search_chips >= 1, ">= 1"),
            ("quant_chips", self.quant_chips >= 1, ">= 1"),
            ("threads", self.threads >= 1, ">= 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name}: invalid value {getattr(self, name)!r}; allowed: {allowed}")
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"stages: invalid value {sorted(unknown)}; allowed: {', '.join(STAGES)}")
        from xbarlab.mitigation.compensation import LOSSES

        if self.comp_loss not in LOSSES:
            raise ValueError(f"comp_loss: invalid value {self.comp_loss!r}; allowed: {', '.join(LOSSES)}")

    @property
    def sigma_max(self) -> float:
        """The variation level of the placement and quantisation stages and of the table: ``target_sigma``,
        or the highest σ of the sweep."""
        return max(self.sigmas) if self.target_sigma is None else float(self.target_sigma)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------ helpers


_DEVICES_ALLOWED = (
    "'cpu', or 'cuda' / 'cuda:N' when torch.cuda.is_available() (the meta device holds no values to report)"
)


def _device_ok(device: str) -> bool:
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


def _device(cfg: P3Config) -> torch.device:
    """The torch device every stage computes on (models, chips, chip pools, batches)."""
    return torch.device(cfg.device)


def _finite(value: float, lo: float, *, strict: bool = False) -> bool:
    """``value`` is a finite number >= ``lo`` (> ``lo`` with ``strict``)."""
    return math.isfinite(value) and (value > lo if strict else value >= lo)


def p3_hardware(sigma: float, overrides: dict[str, Any] | None = None) -> Any:
    """The P3 hardware (:data:`P3_HARDWARE`) at log-normal σ, with dotted-path ``overrides`` applied last."""
    from xbarlab.hardware import HardwareConfig

    hw = HardwareConfig.from_dict(P3_HARDWARE).override({"programming.sigma": float(sigma)})
    if overrides:
        hw = hw.override(overrides)
    return hw


def load_model(spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """A shipped pretrained name (``lenet5-fmnist``) or a checkpoint path (without suffix)."""
    from xbarlab.checkpoint import checkpoint_paths, list_pretrained, load_checkpoint, load_pretrained

    if spec in list_pretrained():
        return load_pretrained(spec)
    if checkpoint_paths(spec)[1].is_file():
        try:
            return load_checkpoint(spec)
        except Exception as exc:  # a damaged or foreign file: one line naming it, not a traceback
            raise ValueError(f"model: cannot read checkpoint {spec!r}: {' '.join(str(exc).split())}") from exc
    raise FileNotFoundError(
        f"model: invalid value {spec!r}; allowed: a shipped pretrained model "
        f"({', '.join(list_pretrained()) or 'none shipped yet'}) or a checkpoint path written by `xbarlab train`"
    )


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class _Data:
    """Loaders of the pipeline: training (augmented, minus the held-out tail), validation, calibration, test."""

    def __init__(self, cfg: P3Config) -> None:
        from functools import partial

        from xbarlab.data import get_dataset
        from xbarlab.data import make_loader as _make_loader

        make_loader = partial(_make_loader, device=_device(cfg))  # pinned host memory when the device is CUDA
        train_aug = get_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, augment=True)
        train_plain = get_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, augment=False)
        test = get_dataset(cfg.dataset, "test", data_dir=cfg.data_dir, augment=False)
        n_train = len(train_plain)
        if cfg.val_images >= n_train:
            raise ValueError(f"val_images: invalid value {cfg.val_images}; allowed: < {n_train} (training images)")
        split = n_train - cfg.val_images
        n_test = len(test)
        for name, n, limit, what in (
            ("test_images", cfg.test_images, n_test, "the test set"),
            ("sweep_images", cfg.sweep_images, n_test, "the test set"),
            ("quant_images", cfg.quant_images, cfg.val_images, "the held-out training images (val_images)"),
            ("perchip_images", cfg.perchip_images, split, "the training images left after val_images"),
            ("bn_images", cfg.bn_images, split, "the training images left after val_images"),
        ):
            if n > limit:
                raise ValueError(f"{name}: {n} exceeds {what} ({limit} images); allowed: <= {limit}")
        self.train_set = train_aug
        self.comp_train = make_loader(
            train_aug.subset(range(split)), cfg.comp_batch_size, shuffle=True, seed=cfg.seed, drop_last=True
        )
        self.val = make_loader(train_plain.subset(range(split, n_train)), cfg.batch_size)
        self.quant_val = make_loader(
            train_plain.subset(range(split, min(n_train, split + cfg.quant_images))), cfg.batch_size
        )
        self.calib = make_loader(train_plain.subset(range(min(cfg.calib_images, split))), 128)
        self.perchip = make_loader(
            train_aug.subset(range(min(cfg.perchip_images, split))), cfg.perchip_batch_size, shuffle=True, seed=cfg.seed
        )
        self.bn = make_loader(train_plain.subset(range(min(cfg.bn_images, split))), 128)
        self.n_perchip = min(cfg.perchip_images, split)
        self.n_bn = min(cfg.bn_images, split)
        self.test_set = test
        self.test = make_loader(test.subset(range(min(cfg.test_images, len(test)))), cfg.batch_size)
        self.sweep = make_loader(test.subset(range(min(cfg.sweep_images, len(test)))), cfg.batch_size)
        x, _ = test[0]
        self.example = x.unsqueeze(0)
        self.n_test = min(cfg.test_images, len(test))
        self.n_sweep = min(cfg.sweep_images, len(test))


def _mc(
    model: nn.Module,
    hw: Any,
    loader: Any,
    chips: int,
    seed: int,
    calib: Any,
    mitigation: Callable[[nn.Module], Any] | None = None,
    *,
    device: torch.device,
) -> dict[str, Any]:
    """Monte-Carlo accuracy over chips on ``device`` (``hw`` None: ``model`` is already converted; it is moved
    to ``device`` in place); ``mitigation`` runs on each programmed, calibrated chip before its test (its info
    dicts are kept under ``info``)."""
    from xbarlab.evaluation import evaluate_chips

    res = evaluate_chips(
        model,
        hw,
        loader,
        chips=chips,
        seed=seed,
        calib_loader=calib,
        progress=False,
        mitigation=mitigation,
        device=device,
    )
    out = res.to_dict()
    info = out.pop("info", None)
    if mitigation is not None:
        out["info"] = info
    return out


def _clean_accuracy(model: nn.Module, loader: Any, device: torch.device) -> float:
    """Digital top-1 accuracy (%) of a copy of ``model`` on ``device`` (``model`` itself is not moved)."""
    from xbarlab.evaluation import accuracy

    return accuracy(copy.deepcopy(model).to(device), loader, device=device)


# ------------------------------------------------------------------------------------------------ stage keys

STAGE_FORMAT = 1
"""Version of the stage records (``"_stage"`` in each stage file); part of every stage key."""

_STAGE_FILES = {name: f"{name}.json" for name in STAGES if name != "table"}
_UPSTREAM: dict[str, tuple[str, ...]] = {
    "models": (),
    "sweep": ("models",),
    "placement": ("models",),
    "quant": ("models", "placement"),
    "perchip": ("models", "placement"),
}
_CACHE_DIRS = {"models": "lipschitz_train", "placement": "placement", "quant": "quant"}
"""Folders of on-disk caches and partial work of a stage (dropped when the stage's key changes)."""

_EVAL_FIELDS = ("hardware_overrides", "chips", "test_images", "eval_seed", "calib_images", "batch_size")
_STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "sweep": ("hardware_overrides", "chips", "sweep_images", "eval_seed", "calib_images", "batch_size"),
    "placement": (
        *_EVAL_FIELDS,
        *("adc_in_training", "comp_steps", "comp_lr", "comp_batch_size", "comp_reduction", "comp_affine"),
        *("comp_loss", "comp_pool", "budget_pct", "penalty", "cost_metric", "rl_episodes", "random_samples"),
        *("greedy_mode", "search_chips", "val_images", "seed", "search_seed"),
    ),
    "quant": (
        *_EVAL_FIELDS,
        *("quant_bits_per_cell", "quant_adc_bits", "quant_tolerance", "quant_chips", "quant_images"),
        *("quant_max_evaluations", "adc_fom_fj", "adc_scaling", "val_images", "search_seed"),
    ),
    "perchip": (
        *_EVAL_FIELDS,
        *("adc_in_training", "perchip_steps", "perchip_images", "perchip_batch_size", "perchip_lr"),
        *("bn_images", "comp_loss", "val_images", "seed"),
    ),
}
"""The settings (P3Config fields) that determine each stage's result besides its upstream stages; the σ of the
placement, quantisation and per-chip stages (``sigma``: ``cfg.sigma_max``) is added. The sweep's σ values are
not part of its key: its rows are stored per σ and a new σ adds a row."""


def _model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of a model's state: parameter names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _stage_settings(cfg: P3Config, name: str, fingerprints: dict[str, str | None]) -> dict[str, Any]:
    """The settings that determine stage ``name`` (JSON values)."""
    if name == "models":
        settings: dict[str, Any] = {
            "model": cfg.model,
            "model_sha256": fingerprints["model"],
            "dataset": cfg.dataset,
            "lipschitz_kind": cfg.lipschitz_kind,
            "lipschitz_beta": cfg.lipschitz_beta,
            "batch_size": cfg.batch_size,
            "lipschitz_checkpoint": cfg.lipschitz_checkpoint,
        }
        if cfg.lipschitz_checkpoint is not None:
            settings["lipschitz_sha256"] = fingerprints["lipschitz"]
        else:
            settings.update(lipschitz_epochs=cfg.lipschitz_epochs, lipschitz_lr=cfg.lipschitz_lr, seed=cfg.seed)
    else:
        settings = {f: getattr(cfg, f) for f in _STAGE_FIELDS[name]}
        if name != "sweep":
            settings["sigma"] = cfg.sigma_max
    kind = _device(cfg).type
    if kind != "cpu":  # CUDA draws other per-MVM noise streams and sums in another order: not the CPU's result
        settings["device"] = kind
    return dict(json.loads(_canonical(settings)))


def _canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace, tuples as lists) of the sweep store's trial identity."""
    from xbarlab.experiments.spec import canonical_json

    return canonical_json(value)


@dataclass
class _StagePlan:
    """One stage of a run: its record (settings, upstream keys, key) and what the run does with it."""

    name: str
    record: dict[str, Any]
    status: str  # "new" (no stored result), "reuse" (same key) or "recompute" (key differs, or --force)
    reason: str = ""

    @property
    def key(self) -> str:
        return str(self.record["key"])


@dataclass
class P3Plan:
    """What :func:`run_p3` will do, decided by :func:`prepare_p3` before anything is written."""

    data: Any
    stages: dict[str, _StagePlan]


def _stage_record(name: str, settings: dict[str, Any], upstream: dict[str, str]) -> dict[str, Any]:
    ident = {"format": STAGE_FORMAT, "stage": name, "settings": settings, "upstream": upstream}
    key = hashlib.sha256(_canonical(ident).encode()).hexdigest()[:16]
    return {"format": STAGE_FORMAT, "key": key, "settings": settings, "upstream": upstream}


def _show(value: Any) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        return _canonical(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _change_reason(stored: dict[str, Any] | None, current: dict[str, Any], file: str) -> str:
    """Why a stored stage record does not match the current one (``""`` when the keys are equal)."""
    if not isinstance(stored, dict) or "key" not in stored:
        return f"{file} has no settings record (written by an older version)"
    if stored["key"] == current["key"]:
        return ""
    if stored.get("format") != current["format"]:
        return f"record format {stored.get('format')} → {current['format']}"
    old, new = stored.get("settings", {}), current["settings"]
    keys = sorted({*old, *new})
    changed = [f"{k} {_show(old.get(k))} → {_show(new.get(k))}" for k in keys if old.get(k) != new.get(k)]
    if changed:
        return f"settings changed ({', '.join(changed)})"
    ups = [u for u in current["upstream"] if stored.get("upstream", {}).get(u) != current["upstream"][u]]
    if ups:
        return f"upstream stage {', '.join(ups)} changed"
    return "stage key changed"


def _plan_stages(cfg: P3Config, out: Path, fingerprints: dict[str, str | None]) -> dict[str, _StagePlan]:
    """Each stage's current record and whether its stored result (if any) is reused or recomputed."""
    plans: dict[str, _StagePlan] = {}
    for name in _STAGE_FILES:
        upstream = {u: plans[u].key for u in _UPSTREAM[name]}
        record = _stage_record(name, _stage_settings(cfg, name, fingerprints), upstream)
        path = out / _STAGE_FILES[name]
        if not path.is_file():
            plans[name] = _StagePlan(name, record, "new")
            continue
        try:
            content = _read_json(path)
        except (OSError, ValueError) as exc:  # a damaged file (e.g. a disk full mid-write) is recomputed
            reason = f"{path.name} is unreadable ({' '.join(str(exc).split())})"
        else:
            stored = content.get("_stage") if isinstance(content, dict) else None
            reason = _change_reason(stored, record, path.name)
        runs = name == "models" or name in cfg.stages
        if runs and cfg.force:
            reason = reason or "--force"
        plans[name] = _StagePlan(name, record, "recompute" if reason else "reuse", reason)
    return plans


def _check_strict(cfg: P3Config, plans: dict[str, _StagePlan]) -> None:
    """With ``resume="strict"``: refuse a run that would recompute a stored stage (``force`` excepted)."""
    if cfg.resume != "strict" or cfg.force:
        return
    stale = [p for p in plans.values() if p.status == "recompute" and (p.name == "models" or p.name in cfg.stages)]
    if stale:
        first, rest = stale[0], [p.name for p in stale[1:]]
        also = f"; downstream stage {', '.join(rest)} would be recomputed too" if rest else ""
        raise ValueError(
            f"stage {first.name}: {first.reason}{also}; allowed with --resume strict: the stored settings "
            "(rerun with --resume auto to recompute, or write to another --out)"
        )


def _reset_cache(out: Path, plan: _StagePlan, force: bool) -> None:
    """Drop a stage's cache folder when it was filled under another key (or with ``force``); record the key."""
    folder = _CACHE_DIRS.get(plan.name)
    if folder is None:
        return
    cache, key_file = out / folder, out / f"{folder}.key"
    stored = key_file.read_text().strip() if key_file.is_file() else None
    if cache.exists() and (force or stored != plan.key):
        shutil.rmtree(cache)
    key_file.write_text(plan.key + "\n")


# ------------------------------------------------------------------------------------------------ stages


def _stage_models(cfg: P3Config, data: _Data, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from xbarlab.mitigation.lipschitz import lipschitz_regularizer, lipschitz_upper_bound
    from xbarlab.training import TrainConfig, train

    plain, plain_meta = load_model(cfg.model)
    reg = lipschitz_regularizer(cfg.lipschitz_kind, cfg.lipschitz_beta)
    if cfg.lipschitz_checkpoint is not None:
        lip_path = cfg.lipschitz_checkpoint
        lip_info: dict[str, Any] = {"source": "checkpoint", "path": lip_path}
    else:
        lip_dir = out / "lipschitz_train"
        lip_path = str(lip_dir / "model")
        lip_model = copy.deepcopy(plain)
        log(f"fine-tuning {cfg.model} with the {cfg.lipschitz_kind} penalty (β={cfg.lipschitz_beta}) ...")
        tcfg = TrainConfig(epochs=cfg.lipschitz_epochs, lr=cfg.lipschitz_lr, seed=cfg.seed)
        meta = {
            "model": plain_meta.get("model"),
            "model_kwargs": plain_meta.get("model_kwargs"),
            "dataset": cfg.dataset,
            "lipschitz": reg.describe(),
            "finetuned_from": cfg.model,
        }
        train(
            lip_model,
            data.train_set,
            data.test_set,
            tcfg,
            out_dir=lip_dir,
            regularizer=reg,
            progress=False,
            metadata=meta,
            device=_device(cfg),
        )
        lip_info = {"source": "fine-tuned", "path": lip_path, "train": tcfg.as_dict()}
    lip, _ = load_model(lip_path)
    full_test = _full_test_loader(cfg, data)
    clean_plain = _clean_accuracy(plain, full_test, _device(cfg))
    clean_lip = _clean_accuracy(lip, full_test, _device(cfg))
    result = {
        "plain": {
            "spec": cfg.model,
            "clean_accuracy": clean_plain,
            "lipschitz_bound": lipschitz_upper_bound(plain),
            "penalty": float(reg.penalty(plain).detach()),
        },
        "lipschitz": {
            **lip_info,
            "regularizer": reg.describe(),
            "clean_accuracy": clean_lip,
            "lipschitz_bound": lipschitz_upper_bound(lip),
            "penalty": float(reg.penalty(lip).detach()),
        },
        "clean_gap": clean_lip - clean_plain,
        "matched_within_1pt": abs(clean_lip - clean_plain) <= 1.0,
    }
    log(
        f"clean accuracy: plain {clean_plain:.2f} %, Lipschitz {clean_lip:.2f} % "
        f"(gap {clean_lip - clean_plain:+.2f} pt, matched: {result['matched_within_1pt']})"
    )
    return result


def _full_test_loader(cfg: P3Config, data: _Data) -> Any:
    from xbarlab.data import make_loader

    return make_loader(data.test_set, cfg.batch_size, device=_device(cfg))


def _lipschitz_model(cfg: P3Config, models: dict[str, Any]) -> nn.Module:
    model, _ = load_model(models["lipschitz"]["path"])
    return model


def _stage_sweep(
    cfg: P3Config, plan: P3Plan, data: _Data, out: Path, models: dict[str, Any], log: Callable[[str], None]
) -> dict[str, Any]:
    """Accuracy over chips of both models at every σ; rows are stored per σ, so a rerun with the same settings
    (stage key) and new σ values adds rows, and other settings start the sweep afresh."""
    stage = plan.stages["sweep"]
    path = out / "sweep.json"
    done: dict[str, Any] = {}
    if stage.status == "reuse":
        log(f"stage sweep: same settings, reusing the rows of {path.name}")
        done = dict(_read_json(path))
    elif stage.status == "recompute":
        log(f"stage sweep: recomputing: {stage.reason}")
    done["_stage"] = stage.record
    nets = {"plain": load_model(cfg.model)[0], "lipschitz": _lipschitz_model(cfg, models)}
    for name, net in nets.items():
        rows = done.setdefault(name, {})
        for sigma in cfg.sigmas:
            key = f"{sigma:g}"
            if key in rows:
                continue
            t0 = time.perf_counter()
            rows[key] = _mc(
                net,
                p3_hardware(sigma, cfg.hardware_overrides),
                data.sweep,
                cfg.chips,
                cfg.eval_seed,
                data.calib,
                device=_device(cfg),
            )
            log(
                f"sweep {name} σ={key}: {rows[key]['mean']:.2f} % ± {rows[key]['std']:.2f} "
                f"({time.perf_counter() - t0:.0f} s)"
            )
            done["images"] = data.n_sweep
            done["chips"] = cfg.chips
            _write_json(path, done)
    return done


def _placement_key(placement: Sequence[str] | frozenset[str]) -> str:
    return ",".join(sorted(placement)) or "<none>"


def _stage_placement(
    cfg: P3Config, data: _Data, out: Path, models: dict[str, Any], log: Callable[[str], None]
) -> dict[str, Any]:
    from xbarlab.conversion import convert
    from xbarlab.layers import analog_layers
    from xbarlab.mitigation.compensation import (
        ChipPool,
        CompensationConfig,
        attach_compensation,
        compensation_overhead,
        compensation_state,
        train_compensation,
    )
    from xbarlab.mitigation.placement import (
        CachedEvaluator,
        PlacementProblem,
        all_layers_placement,
        greedy_placement,
        layer_features,
        none_placement,
        random_placement,
        reinforce_placement,
    )

    pdir = out / "placement"
    pdir.mkdir(parents=True, exist_ok=True)
    dev = _device(cfg)
    lip = _lipschitz_model(cfg, models)  # on the CPU: chips are converted from it, then moved to dev
    teacher = copy.deepcopy(lip).to(dev)
    example = data.example.to(dev)
    sigma = cfg.sigma_max
    hw, train_hw = _hardware_pair(cfg)
    comp_cfg = CompensationConfig(reduction=cfg.comp_reduction, affine=cfg.comp_affine)
    base = convert(lip, train_hw).to(dev)
    layers = tuple(la.layer_name for la in analog_layers(base))

    # per-layer overhead (branches are independent, so costs add up)
    probe = copy.deepcopy(base)
    attach_compensation(probe, layers, comp_cfg)
    from xbarlab.chip import calibrate, program

    program(probe, 0)
    calibrate(probe, data.calib, num_batches=1, device=dev)
    overhead = compensation_overhead(probe, example)
    costs = []
    for name in layers:
        pl = overhead.per_layer[name]
        p_pct = 100.0 * pl["params"] / max(1, overhead.base_params)
        m_pct = 100.0 * pl["macs"] / max(1, overhead.base_macs)
        costs.append({"params": p_pct, "macs": m_pct, "max": max(p_pct, m_pct)}[cfg.cost_metric])
    del probe

    # the search's evaluation: train the branches of a placement (chip pool), score on held-out images
    cache_path = pdir / "search_cache.json"
    cache: dict[str, float] = dict(_read_json(cache_path)) if cache_path.is_file() else {}
    pool: ChipPool | None = None

    def evaluate(placement: frozenset[str]) -> float:
        nonlocal pool
        key = _placement_key(placement)
        if key in cache:
            return cache[key]
        t0 = time.perf_counter()
        chip = copy.deepcopy(base)
        if placement:
            if pool is None and cfg.comp_pool > 0:
                pool = ChipPool(copy.deepcopy(base), cfg.comp_pool, seed=cfg.seed)
            attach_compensation(chip, [n for n in layers if n in placement], comp_cfg)
            train_compensation(
                chip,
                data.comp_train,
                steps=cfg.comp_steps,
                lr=cfg.comp_lr,
                seed=cfg.seed,
                chip_pool=pool,
                calib_loader=data.calib,
                loss=cfg.comp_loss,
                teacher=teacher,
                device=dev,
            )
        acc = _mc(chip, None, data.val, cfg.search_chips, cfg.search_seed, data.calib, device=dev)["mean"]
        cache[key] = acc
        _write_json(cache_path, cache)
        log(f"search: placement [{key}] → {acc:.2f} % on held-out images ({time.perf_counter() - t0:.0f} s)")
        return acc

    params = [int(la.weight.numel()) for la in analog_layers(base)]
    macs_all = overhead.per_layer
    del macs_all
    problem = PlacementProblem(
        layers=layers,
        costs=tuple(costs),
        budget=cfg.budget_pct,
        evaluate=evaluate,
        penalty=cfg.penalty,
        features=layer_features(params, _layer_macs(base, example)),
    )
    results = {
        "none": none_placement(problem, CachedEvaluator(problem)),
        "all": all_layers_placement(problem, CachedEvaluator(problem)),
        "greedy": greedy_placement(problem, mode=cfg.greedy_mode, evaluator=CachedEvaluator(problem)),
        "rl": reinforce_placement(problem, episodes=cfg.rl_episodes, seed=cfg.seed, evaluator=CachedEvaluator(problem)),
        "random": random_placement(
            problem, samples=cfg.random_samples, seed=cfg.seed, evaluator=CachedEvaluator(problem)
        ),
    }

    # final: retrain each chosen placement with a fresh chip every batch, test with the full hardware
    final: dict[str, Any] = {}
    final_cache_path = pdir / "final_cache.json"
    final_cache: dict[str, Any] = dict(_read_json(final_cache_path)) if final_cache_path.is_file() else {}
    for method, res in results.items():
        key = _placement_key(res.placement)
        if key not in final_cache:
            t0 = time.perf_counter()
            chip = copy.deepcopy(base)
            info: dict[str, Any] = {}
            if res.placement:
                attach_compensation(chip, res.placement, comp_cfg)
                tr = train_compensation(
                    chip,
                    data.comp_train,
                    steps=cfg.comp_steps,
                    lr=cfg.comp_lr,
                    seed=cfg.seed + 1,
                    calib_loader=data.calib,
                    loss=cfg.comp_loss,
                    teacher=teacher,
                    device=dev,
                )
                state = compensation_state(chip)
                branches = _branches_path(out, res.placement)
                save_file({k: v.cpu() for k, v in state.items()}, str(branches))
                info["branches_sha256"] = _file_sha256(branches)
                info["train_wall_time_s"] = tr.wall_time_s
                info["final_loss"] = sum(tr.losses[-20:]) / len(tr.losses[-20:])
            test_chip = convert(lip, hw).to(dev)
            if res.placement:
                attach_compensation(test_chip, res.placement, comp_cfg, state=compensation_state(chip))
            mc = _mc(test_chip, None, data.test, cfg.chips, cfg.eval_seed, data.calib, device=dev)
            program(test_chip, 0)
            calibrate(test_chip, data.calib, num_batches=1, device=dev)
            ov = compensation_overhead(test_chip, example)
            final_cache[key] = {"test": mc, "overhead": ov.to_dict(), **info}
            _write_json(final_cache_path, final_cache)
            log(
                f"final {method}: [{key}] → {mc['mean']:.2f} % on the test set "
                f"(params +{ov.params_pct:.2f} %, MACs +{ov.macs_pct:.2f} %; {time.perf_counter() - t0:.0f} s)"
            )
        final[method] = {**res.to_dict(with_history=method == "rl"), **final_cache[key]}
    # the unprotected (plain) network under the same test protocol, for the table
    if "__plain__" not in final_cache:
        plain, _ = load_model(cfg.model)
        final_cache["__plain__"] = {"test": _mc(plain, hw, data.test, cfg.chips, cfg.eval_seed, data.calib, device=dev)}
        _write_json(final_cache_path, final_cache)
        log(f"final unprotected (plain) at σ={sigma:g}: {final_cache['__plain__']['test']['mean']:.2f} %")
    summary = {
        "sigma": sigma,
        "layers": list(layers),
        "costs_pct": dict(zip(layers, costs, strict=True)),
        "cost_metric": cfg.cost_metric,
        "budget_pct": cfg.budget_pct,
        "penalty": cfg.penalty,
        "search": {
            "distinct_placements_trained": len(cache),
            "steps": cfg.comp_steps,
            "pool": cfg.comp_pool,
            "chips": cfg.search_chips,
            "images": cfg.val_images,
            "adc_in_training": cfg.adc_in_training,
        },
        "methods": final,
        "unprotected": final_cache["__plain__"],
        "compensation": comp_cfg.as_dict(),
    }
    return summary


def _hardware_pair(cfg: P3Config) -> tuple[Any, Any]:
    """The test hardware at ``sigma_max`` and the hardware branches are trained on (no ADC unless
    ``adc_in_training``)."""
    hw = p3_hardware(cfg.sigma_max, cfg.hardware_overrides)
    train_hw = hw if cfg.adc_in_training else hw.override({"adc.bits": None, "adc.noise_lsb": 0.0})
    return hw, train_hw


def _branches_path(out: Path, layers: Sequence[str]) -> Path:
    """Where the placement stage stores the trained branches of a placement."""
    return out / "placement" / f"branches_{_safe(_placement_key(layers))}.safetensors"


def _rl_branches(out: Path, placement: dict[str, Any]) -> tuple[list[str], Any, dict[str, torch.Tensor] | None]:
    """The RL placement's layers, branch config and trained branch weights (None for an empty placement)."""
    from xbarlab.mitigation.compensation import CompensationConfig

    rl = placement["methods"]["rl"]
    layers = list(rl["placement"])
    state = None
    if layers:
        path = _branches_path(out, layers)
        recorded = rl.get("branches_sha256")
        if not isinstance(recorded, str):
            raise ValueError(
                f"{path}: no branches_sha256 in the placement results; the branch weights cannot be verified "
                "(written by an older xbarlab): re-run the placement stage (--force)"
            )
        if not path.is_file():
            raise ValueError(f"{path}: missing; re-run the placement stage (--force)")
        actual = _file_sha256(path)
        if actual != recorded:
            raise ValueError(
                f"{path}: sha256 {actual} does not match the placement results' branches_sha256 {recorded} "
                "(file corrupt or replaced); re-run the placement stage (--force)"
            )
        state = load_file(str(path))
    return layers, CompensationConfig(**placement["compensation"]), state


def _file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes (the checkpoints' hash)."""
    from xbarlab.checkpoint import _sha256

    return _sha256(path)


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)[:120]


def _layer_macs(base: nn.Module, example: torch.Tensor) -> list[int]:
    from xbarlab.chip import program
    from xbarlab.mitigation.compensation import count_macs

    probe = copy.deepcopy(base)
    program(probe, 0)
    hw = getattr(probe, "xbarlab_hw", None)
    if hw is not None and (hw.dac.bits is not None or hw.adc.bits is not None):
        from xbarlab.chip import calibrate

        calibrate(probe, [(example, torch.zeros(1, dtype=torch.long, device=example.device))], num_batches=1)
    macs = count_macs(probe, example)
    from xbarlab.layers import analog_layers

    paths = {id(m): p for p, m in probe.named_modules()}
    return [int(macs.get(paths[id(la)], 0)) for la in analog_layers(probe)]


def _stage_quant(
    cfg: P3Config,
    data: _Data,
    out: Path,
    models: dict[str, Any],
    placement: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    from xbarlab.adc_power import ADCPowerModel, adc_energy_report, output_positions
    from xbarlab.conversion import convert
    from xbarlab.mitigation.compensation import attach_compensation
    from xbarlab.quant_search import QuantConfig, quant_search

    qdir = out / "quant"
    qdir.mkdir(parents=True, exist_ok=True)
    dev = _device(cfg)  # chips are converted on the CPU and moved; ADC energies are exact counts on the CPU
    lip = _lipschitz_model(cfg, models)
    hw = p3_hardware(cfg.sigma_max, cfg.hardware_overrides)
    rl_layers, comp_cfg, state = _rl_branches(out, placement)
    power = ADCPowerModel(scaling=cfg.adc_scaling, fom_fj_per_step=cfg.adc_fom_fj)
    positions = output_positions(lip, data.example)
    from xbarlab.layers import analog_layers

    layers = [la.layer_name for la in analog_layers(convert(lip, hw))]

    def chip_for(qc: QuantConfig) -> nn.Module:
        chip = convert(lip, qc.hardware(hw))
        if rl_layers:
            attach_compensation(chip, rl_layers, comp_cfg, state=state)
        return chip

    cache_path = qdir / "search_cache.json"
    cache: dict[str, float] = dict(_read_json(cache_path)) if cache_path.is_file() else {}

    def evaluate(qc: QuantConfig) -> float:
        key = qc.label()
        if key not in cache:
            chip = chip_for(qc)
            cache[key] = _mc(chip, None, data.quant_val, cfg.quant_chips, cfg.search_seed, data.calib, device=dev)[
                "mean"
            ]
            _write_json(cache_path, cache)
        return cache[key]

    def energy(qc: QuantConfig) -> float:
        return adc_energy_report(lip, qc.hardware(hw), data.example, power, positions=positions).total_pj

    result = quant_search(
        layers,
        evaluate,
        energy,
        bits_per_cell_options=cfg.quant_bits_per_cell,
        adc_bits_options=cfg.quant_adc_bits,
        tolerance=cfg.quant_tolerance,
        max_evaluations=cfg.quant_max_evaluations,
        log=log,
    )
    # test-set numbers of the reference (uniform 8-bit) and of the chosen configuration
    tests = {}
    for name, point in (("reference", result.reference), ("best", result.best)):
        tests[name] = _mc(chip_for(point.config), None, data.test, cfg.chips, cfg.eval_seed, data.calib, device=dev)
        log(
            f"quant {name} {point.config.label()}: {tests[name]['mean']:.2f} % on the test set, "
            f"ADC energy {point.energy_pj:.1f} pJ/inference"
        )
    ref_report = adc_energy_report(lip, result.reference.config.hardware(hw), data.example, power, positions=positions)
    best_report = adc_energy_report(lip, result.best.config.hardware(hw), data.example, power, positions=positions)
    summary = {
        "sigma": cfg.sigma_max,
        "placement": rl_layers,
        "search": result.to_dict(),
        "test": tests,
        "power_model": power.as_dict(),
        "reference_energy": ref_report.to_dict(),
        "best_energy": best_report.to_dict(),
        "saving_pct": result.saving_pct,
        "search_images": cfg.quant_images,
        "search_chips": cfg.quant_chips,
    }
    return summary


def _copy_dac_ranges(src: nn.Module, dst: nn.Module) -> None:
    """Give ``dst``'s analog layers the DAC ranges of the same-named layers of ``src``."""
    from xbarlab.layers import analog_layers

    ranges = {la.layer_name: (la.dac_range, la.dac_signed) for la in analog_layers(src)}
    for la in analog_layers(dst):
        dac_range, dac_signed = ranges[la.layer_name]
        la.dac_range = None if dac_range is None else dac_range.clone()
        la.dac_signed = None if dac_signed is None else dac_signed.clone()


def _stage_perchip(
    cfg: P3Config,
    data: _Data,
    out: Path,
    models: dict[str, Any],
    placement: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Extensions measured on the table's test chips (not part of P3; see docs/correctnet.md §8).

    * per-chip compensation: the RL branches (trained over random chips) are fine-tuned on each test chip with
      ``perchip_images`` labelled training images for ``perchip_steps`` steps, the chip's own static error
      fixed (the chip-in-the-loop counterpart of P1's BN fine-tuning), then tested on that chip;
    * BN adaptation (P1 §1.7 A / P2), for models with BN: the unprotected plain model's BN statistics
      re-estimated on each test chip from ``bn_images`` unlabelled images.

    Fine-tuning runs on a copy of the chip converted without the ADC (like the search's training, unless
    ``adc_in_training``), programmed with the same seed — its weights are checked to be identical to the test
    chip's — and with the test chip's DAC ranges.
    """
    from xbarlab.chip import program
    from xbarlab.conversion import convert
    from xbarlab.layers import analog_layers
    from xbarlab.mitigation.bn import adapt_bn, bn_modules
    from xbarlab.mitigation.compensation import (
        attach_compensation,
        compensation_state,
        load_compensation_state,
        train_compensation,
    )

    sigma = cfg.sigma_max
    dev = _device(cfg)
    hw, train_hw = _hardware_pair(cfg)
    lip = _lipschitz_model(cfg, models)
    teacher = copy.deepcopy(lip).to(dev)
    rl_layers, comp_cfg, state = _rl_branches(out, placement)
    summary: dict[str, Any] = {
        "sigma": sigma,
        "placement": rl_layers,
        "steps": cfg.perchip_steps,
        "images": data.n_perchip,
        "batch_size": cfg.perchip_batch_size,
        "lr": cfg.perchip_lr,
        "adc_in_training": cfg.adc_in_training,
    }
    if rl_layers:
        assert state is not None
        test_chip = convert(lip, hw)
        attach_compensation(test_chip, rl_layers, comp_cfg, state=state)
        trainer = convert(lip, train_hw)
        attach_compensation(trainer, rl_layers, comp_cfg, state=state)
        trainer.to(dev)

        def fine_tune(chip: nn.Module) -> dict[str, Any]:
            layers = analog_layers(chip)
            seed = int(layers[0].chip_seed) if layers[0].chip_seed is not None else 0
            load_compensation_state(trainer, state)
            program(trainer, seed)
            for a, b in zip(analog_layers(trainer), layers, strict=True):
                if not torch.equal(a.effective_weight(), b.effective_weight()):
                    raise RuntimeError(f"per-chip training copy differs from test chip {seed} in {a.layer_name}")
            _copy_dac_ranges(chip, trainer)
            t0 = time.perf_counter()
            tr = train_compensation(
                trainer,
                data.perchip,
                steps=cfg.perchip_steps,
                lr=cfg.perchip_lr,
                seed=cfg.seed + 2,
                resample=False,
                calib_loader=data.calib,
                loss=cfg.comp_loss,
                teacher=teacher,
                device=dev,
            )
            load_compensation_state(chip, compensation_state(trainer))
            tail = tr.losses[-10:]
            final_loss = sum(tail) / len(tail)
            log(f"per-chip: chip {seed} fine-tuned in {time.perf_counter() - t0:.0f} s (loss {final_loss:.4f})")
            return {"chip_seed": seed, "train_wall_time_s": tr.wall_time_s, "final_loss": final_loss}

        t0 = time.perf_counter()
        summary["finetuned"] = _mc(
            test_chip, None, data.test, cfg.chips, cfg.eval_seed, data.calib, fine_tune, device=dev
        )
        log(
            f"per-chip compensation [{_placement_key(rl_layers)}] at σ={sigma:g}: "
            f"{summary['finetuned']['mean']:.2f} % on the test set ({time.perf_counter() - t0:.0f} s)"
        )
    plain, _ = load_model(cfg.model)
    if bn_modules(plain):
        n_batches = max(1, -(-cfg.bn_images // 128))

        def adapt(chip: nn.Module) -> dict[str, Any]:
            return dataclasses.asdict(adapt_bn(chip, data.bn, num_batches=n_batches))

        t0 = time.perf_counter()
        summary["bn_adapt"] = _mc(plain, hw, data.test, cfg.chips, cfg.eval_seed, data.calib, adapt, device=dev)
        summary["bn_images"] = data.n_bn
        log(
            f"BN adaptation (plain model) at σ={sigma:g}: {summary['bn_adapt']['mean']:.2f} % on the test set "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    return summary


# ------------------------------------------------------------------------------------------------ table


def _fmt(mc: dict[str, Any] | None) -> str:
    if mc is None:
        return "—"
    half = (mc["ci95_high"] - mc["ci95_low"]) / 2
    return f"{mc['mean']:.2f} ± {half:.2f}"


def _settings_of(results: dict[str, Any], name: str) -> dict[str, Any]:
    """The stored settings of a stage result (empty when the stage did not run or has no record)."""
    return dict(((results.get(name) or {}).get("_stage") or {}).get("settings") or {})


def _labels(cfg: P3Config, results: dict[str, Any]) -> dict[str, Any]:
    """Model, data set, σ_max, chips and test images of the table, from the stored stage settings (``cfg``
    only for a stage result without a record)."""
    models = _settings_of(results, "models")
    main = next((st for st in (_settings_of(results, n) for n in ("placement", "quant", "perchip")) if st), {})
    sweep = results.get("sweep") or {}
    sweep_sigmas = [float(k) for k in (sweep.get("plain") or {})]
    if main:
        sigma_max = float(main["sigma"])
    elif sweep_sigmas:
        sigma_max = max(sweep_sigmas)
    else:
        sigma_max = cfg.sigma_max
    return {
        "model": models.get("model", cfg.model),
        "dataset": models.get("dataset", cfg.dataset),
        "sigma_max": sigma_max,
        "chips": main.get("chips"),
        "test_images": main.get("test_images"),
        "sweep_images": sweep.get("images"),
        "sweep_chips": sweep.get("chips"),
        "sweep_sigmas": sorted(sweep_sigmas),
    }


def write_table(cfg: P3Config, out: Path, results: dict[str, Any]) -> str:
    """The results table (Markdown) from the stage results; also written to ``results.md``.

    Every label (model, σ_max, chips, image counts) comes from the stored settings of the stage results shown."""
    models = results.get("models", {})
    sweep = results.get("sweep") or {}
    placement = results.get("placement")
    quant = results.get("quant")
    clean = models.get("plain", {}).get("clean_accuracy")
    labels = _labels(cfg, results)
    smax = f"{labels['sigma_max']:g}"

    def pct(mc: dict[str, Any] | None) -> str:
        if mc is None or clean is None:
            return "—"
        return f"{100.0 * mc['mean'] / clean:.1f} %"

    protocol = []
    if labels["chips"] is not None:
        protocol.append(f"over {labels['chips']} chips, {labels['test_images']} test images")
    if labels["sweep_images"] is not None:
        protocol.append(f"sweep rows: {labels['sweep_chips']} chips, {labels['sweep_images']} images")
    lines = [
        f"P3 pipeline: `{labels['model']}` on {labels['dataset']}, log-normal σ_max = {smax}; accuracy in % "
        f"(mean ± 95 % CI{' ' if protocol else ''}{'; '.join(protocol)}).",
        "",
        "| stage | accuracy | % of original | compensation overhead (params / MACs) | ADC energy / inference |",
        "|---|---:|---:|---:|---:|",
    ]
    if clean is not None:
        lines.append(f"| clean (digital, plain) | {clean:.2f} | 100.0 % | — | — |")
    lip_clean = models.get("lipschitz", {}).get("clean_accuracy")
    if lip_clean is not None:
        lines.append(f"| clean (digital, Lipschitz) | {lip_clean:.2f} | {100 * lip_clean / clean:.1f} % | — | — |")
    for name, label in (("plain", "unprotected"), ("lipschitz", "Lipschitz")):
        mc = sweep.get(name, {}).get(f"{0.0:g}")
        if mc is not None:
            lines.append(f"| {label}, σ = 0 (quantised, ADC) † | {_fmt(mc)} | {pct(mc)} | — | — |")
        mc = sweep.get(name, {}).get(smax)
        if mc is not None:
            lines.append(f"| {label}, σ = {smax} † | {_fmt(mc)} | {pct(mc)} | — | — |")
    if placement is not None and "unprotected" in placement:
        mc = placement["unprotected"]["test"]
        lines.append(f"| unprotected, σ = {smax} | {_fmt(mc)} | {pct(mc)} | — | — |")
    placements: dict[str, str] = {}  # long placements get a short label and a footnote
    if placement is not None:
        for method in ("none", "rl", "greedy", "all", "random"):
            m = placement["methods"].get(method)
            if m is None:
                continue
            ov = m["overhead"]
            budget = "" if m["within_budget"] else " (over budget)"
            lines.append(
                f"| Lipschitz + compensation ({method}: {_placement_label(m['placement'], placements)}), σ = {smax} "
                f"| {_fmt(m['test'])} | {pct(m['test'])} | {ov['params_pct']:.2f} % / {ov['macs_pct']:.2f} %{budget} "
                "| — |"
            )
    if quant is not None:
        ref = quant["test"]["reference"]
        best = quant["test"]["best"]
        e_ref = quant["search"]["reference"]["energy_pj"]
        e_best = quant["search"]["best"]["energy_pj"]
        lines.append(
            f"| + quantisation: uniform 8-bit ADC, 2-bit cells (reference), σ = {smax} | {_fmt(ref)} | {pct(ref)} "
            f"| as RL | {e_ref:.0f} pJ (100 %) |"
        )
        lines.append(
            f"| + quantisation search: {quant['search']['best']['label']}, σ = {smax} | {_fmt(best)} | {pct(best)} "
            f"| as RL | {e_best:.0f} pJ ({100 * e_best / e_ref:.1f} %, saving {quant['saving_pct']:.1f} %) |"
        )
    perchip = results.get("perchip")
    if perchip is not None and perchip.get("finetuned") is not None:
        mc = perchip["finetuned"]
        lines.append(
            f"| extension (not in P3): RL branches fine-tuned per chip ({perchip['images']} labelled images, "
            f"{perchip['steps']} steps), σ = {smax} | {_fmt(mc)} | {pct(mc)} | as RL | — |"
        )
    if perchip is not None and perchip.get("bn_adapt") is not None:
        mc = perchip["bn_adapt"]
        lines.append(
            f"| extension (P1/P2): unprotected + BN adaptation ({perchip['bn_images']} unlabelled images), "
            f"σ = {smax} | {_fmt(mc)} | {pct(mc)} | — | — |"
        )
    if labels["sweep_images"] is not None:
        lines += ["", f"† σ sweep: {labels['sweep_chips']} chips, {labels['sweep_images']} test images."]
    for label, layers in placements.items():
        lines.append(f"{label}: {layers}.")
    if sweep.get("plain"):
        lines += [
            "",
            f"σ sweep ({labels['sweep_images']} test images, {labels['sweep_chips']} chips, mean ± 95 % CI):",
            "",
            "| σ | unprotected | Lipschitz |",
            "|---:|---:|---:|",
        ]
        for sigma in labels["sweep_sigmas"]:
            key = f"{sigma:g}"
            lines.append(f"| {key} | {_fmt(sweep['plain'].get(key))} | {_fmt(sweep.get('lipschitz', {}).get(key))} |")
    if quant is not None:
        lines += _pareto_lines(quant)
    figures = write_figures(cfg, out, results)
    if figures:
        lines += ["", "Figures: " + ", ".join(f"[{p.name}]({p.name})" for p in figures)]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def _placement_label(layers: Sequence[str], footnotes: dict[str, str]) -> str:
    """Up to four layer names inline; a longer placement becomes ``placement A (n layers)`` with a footnote."""
    if len(layers) <= 4:
        return ", ".join(layers) or "none"
    text = ", ".join(layers)
    for label, known in footnotes.items():
        if known == text:
            return f"{label} ({len(layers)} layers)"
    label = f"placement {chr(ord('A') + len(footnotes))}"
    footnotes[label] = text
    return f"{label} ({len(layers)} layers)"


def _pareto_lines(quant: dict[str, Any]) -> list[str]:
    """The quantisation search's Pareto front (search chips and images) as a Markdown table."""
    ref_e = quant["search"]["reference"]["energy_pj"]
    lines = [
        "",
        f"Pareto front of the quantisation search ({quant['search_chips']} search chips, {quant['search_images']} "
        "held-out images; accuracy ↑, ADC energy ↓):",
        "",
        "| setting | accuracy (%) | ADC energy (pJ / inference) | of uniform 8-bit |",
        "|---|---:|---:|---:|",
    ]
    for p in sorted(quant["search"]["front"], key=lambda p: p["energy_pj"]):
        lines.append(
            f"| {p['label']} | {p['accuracy']:.2f} | {p['energy_pj']:.0f} | {100 * p['energy_pj'] / ref_e:.1f} % |"
        )
    return lines


def write_figures(cfg: P3Config, out: Path, results: dict[str, Any]) -> list[Path]:
    """``sweep.png`` (accuracy vs σ, plain and Lipschitz, 95 % CI) and ``quant_pareto.png`` (every evaluated
    quantisation setting, its Pareto front, the reference and the chosen setting) in ``out``."""
    from xbarlab.reports.plots import curve_plot, points_pareto_plot

    written: list[Path] = []
    sweep = results.get("sweep") or {}
    clean = results.get("models", {}).get("plain", {}).get("clean_accuracy")
    model = _labels(cfg, results)["model"]
    curves = {
        label: [
            (float(k), mc["mean"], mc["ci95_low"], mc["ci95_high"])
            for k, mc in sweep.get(name, {}).items()
            if isinstance(mc, dict)
        ]
        for name, label in (("plain", "unprotected"), ("lipschitz", "Lipschitz"))
    }
    path = curve_plot(
        curves,
        out / "sweep.png",
        xlabel="log-normal σ",
        ylabel="accuracy (%)",
        title=f"{model}: accuracy vs variation ({sweep.get('chips')} chips, 95 % CI)",
        hline=(clean, "clean (digital)") if clean is not None else None,
    )
    if path is not None:
        written.append(path)
    quant = results.get("quant")
    if quant is not None:
        pts = [(p["energy_pj"], p["accuracy"], p["label"]) for p in quant["search"]["points"]]
        path = points_pareto_plot(
            pts,
            out / "quant_pareto.png",
            xlabel="ADC energy per inference (pJ)",
            ylabel="accuracy on the search chips (%)",
            title=f"{model}, σ = {quant['sigma']:g}: quantisation search",
            highlight=(quant["search"]["reference"]["label"], quant["search"]["best"]["label"]),
        )
        if path is not None:
            written.append(path)
    return written


# ------------------------------------------------------------------------------------------------ driver


def prepare_p3(cfg: P3Config) -> P3Plan:
    """Check everything a run needs and decide each stage's fate, writing nothing.

    Refuses (``ValueError`` naming the field, or ``FileNotFoundError`` for a missing model): hardware overrides,
    the Lipschitz penalty kind, the ADC energy model, a bits-per-cell search the hardware cannot express, an
    unknown or unreadable model or Lipschitz checkpoint, image counts larger than their split, stages whose
    inputs are missing or stale, and (``resume="strict"``) any stored stage whose settings changed.
    """
    from xbarlab.adc_power import ADCPowerModel
    from xbarlab.mitigation.lipschitz import lipschitz_regularizer

    hw = p3_hardware(cfg.sigma_max, cfg.hardware_overrides)
    if (
        "quant" in cfg.stages
        and len(cfg.quant_bits_per_cell) > 1
        and not (hw.weights.quantize and hw.weights.noise_granularity == "slice")
    ):
        raise ValueError(
            f"quant_bits_per_cell: invalid value {list(cfg.quant_bits_per_cell)}; allowed: a single value when "
            "weights.noise_granularity is 'weight' or weights.quantize is false (one device per weight: the bits "
            "per cell do not change the hardware)"
        )
    lipschitz_regularizer(cfg.lipschitz_kind, cfg.lipschitz_beta)
    ADCPowerModel(scaling=cfg.adc_scaling, fom_fj_per_step=cfg.adc_fom_fj)
    fingerprints: dict[str, str | None] = {"model": _model_fingerprint(load_model(cfg.model)[0]), "lipschitz": None}
    if cfg.lipschitz_checkpoint is not None:
        try:
            lip, _ = load_model(cfg.lipschitz_checkpoint)
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"lipschitz_checkpoint: {str(exc).partition(': ')[2]}") from exc
        fingerprints["lipschitz"] = _model_fingerprint(lip)
    data = _Data(cfg)
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: {out} exists and is not a folder; allowed: a folder or a new path")
    plans = _plan_stages(cfg, out, fingerprints)
    for stage in ("quant", "perchip"):
        if stage in cfg.stages and "placement" not in cfg.stages and plans["placement"].status != "reuse":
            why = plans["placement"].reason or "placement.json does not exist"
            raise ValueError(
                f"stages: {stage!r} needs the 'placement' stage (its RL placement) and the stored one cannot be "
                f"used ({why}); allowed: add 'placement' to the stages"
            )
    _check_strict(cfg, plans)
    return P3Plan(data=data, stages=plans)


def _run_stage(
    cfg: P3Config, plan: P3Plan, name: str, out: Path, log: Callable[[str], None], compute: Callable[[], Any]
) -> dict[str, Any]:
    """Stage ``name``: the stored result when its key matches, else ``compute()`` stored with its record."""
    stage = plan.stages[name]
    path = out / _STAGE_FILES[name]
    if stage.status == "reuse":
        log(f"stage {name}: same settings, reusing {path.name}")
        return dict(_read_json(path))
    if stage.status == "recompute":
        log(f"stage {name}: recomputing: {stage.reason}")
    _reset_cache(out, stage, cfg.force)
    result = dict(compute())
    result["_stage"] = stage.record
    _write_json(path, result)
    return result


def _stored_stage(plan: P3Plan, name: str, out: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
    """A stage not run this time: its stored result when it matches the current settings, else None."""
    stage = plan.stages[name]
    if stage.status == "new":
        return None
    if stage.status == "recompute":
        log(f"stage {name}: not run (not in stages) and {stage.reason}; left out of the results")
        return None
    return dict(_read_json(out / _STAGE_FILES[name]))


def run_p3(cfg: P3Config, log: Callable[[str], None] | None = None, plan: P3Plan | None = None) -> dict[str, Any]:
    """Run the pipeline (module docstring); returns every stage's result and writes them to ``cfg.out_dir``.

    ``plan``: the result of :func:`prepare_p3` for ``cfg`` (made here when None). Nothing is written before
    the checks of :func:`prepare_p3` have passed.
    """
    log = log or (lambda msg: print(msg, flush=True))
    torch.set_num_threads(cfg.threads)
    plan = plan or prepare_p3(cfg)
    data = plan.data
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", cfg.as_dict())  # the last command; the stage files hold their own settings
    results: dict[str, Any] = {"config": cfg.as_dict()}
    t0 = time.perf_counter()
    models = _run_stage(cfg, plan, "models", out, log, lambda: _stage_models(cfg, data, out, log))
    results["models"] = models
    if "sweep" in cfg.stages:
        results["sweep"] = _stage_sweep(cfg, plan, data, out, models, log)
    else:
        results["sweep"] = _stored_stage(plan, "sweep", out, log)
    if "placement" in cfg.stages:
        results["placement"] = _run_stage(
            cfg, plan, "placement", out, log, lambda: _stage_placement(cfg, data, out, models, log)
        )
    else:
        results["placement"] = _stored_stage(plan, "placement", out, log)
    placement = results["placement"]
    if "quant" in cfg.stages:
        results["quant"] = _run_stage(
            cfg, plan, "quant", out, log, lambda: _stage_quant(cfg, data, out, models, placement, log)
        )
    else:
        results["quant"] = _stored_stage(plan, "quant", out, log)
    if "perchip" in cfg.stages:
        results["perchip"] = _run_stage(
            cfg, plan, "perchip", out, log, lambda: _stage_perchip(cfg, data, out, models, placement, log)
        )
    else:
        results["perchip"] = _stored_stage(plan, "perchip", out, log)
    results = {k: v for k, v in results.items() if v is not None}
    results["wall_time_s"] = time.perf_counter() - t0
    if "table" in cfg.stages:
        results["table"] = write_table(cfg, out, results)
        log(results["table"])
    _write_json(out / "results.json", results)
    return results
