"""Resuming a P3 run: each stage's record (the settings that determine it, the keys of the stages it builds on,
its key), the plan of what a run reuses or recomputes, and the stage files' JSON."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xbarlab.atomic import atomic_write_text
from xbarlab.experiments.identity import canonical_json
from xbarlab.papers.p3.config import STAGES, P3Config, _device

__all__ = ["STAGE_FORMAT", "P3Plan"]


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
        if (
            name == "perchip"
        ):  # 2: a sweep, every chip fine-tuned on the same image order (was: the loader's k-th epoch)
            settings["protocol"] = 2
    kind = _device(cfg).type
    if kind != "cpu":  # CUDA draws other per-MVM noise streams and sums in another order: not the CPU's result
        settings["device"] = kind
    return dict(json.loads(_canonical(settings)))


def _canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace, tuples as lists) of the sweep store's trial identity."""
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
