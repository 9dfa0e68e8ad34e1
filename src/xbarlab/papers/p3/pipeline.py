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

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from xbarlab.papers.p3.cache import (
    _STAGE_FILES,
    P3Plan,
    _check_strict,
    _model_fingerprint,
    _plan_stages,
    _read_json,
    _reset_cache,
    _write_json,
)
from xbarlab.papers.p3.config import P3Config, p3_hardware
from xbarlab.papers.p3.data import _Data, load_model
from xbarlab.papers.p3.report import write_table
from xbarlab.papers.p3.stages import _stage_models, _stage_perchip, _stage_placement, _stage_quant, _stage_sweep

__all__ = ["prepare_p3", "run_p3"]


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
