"""The sweep files the P3 pipeline's stages write and run into the run's store ``<out_dir>/p3.sqlite``, and the
rows they read back from it.

Every test chip of the pipeline is a ``p3_chip`` trial (:mod:`xbarlab.papers.p3.trial`): the σ sweep
(``p3-sweep-plain``, ``p3-sweep-lipschitz``), each placement's test (``p3-placement-<method>``,
``p3-placement-unprotected``), the quantisation test (``p3-quant-reference``, ``p3-quant-best``) and the per-chip
extensions (``p3-perchip-finetune``, ``p3-perchip-bn-adapt``). Each file carries P3's hardware (with the run's
``hardware_overrides``), data choices, chips and seeds.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xbarlab.evaluation import ChipResult, MonteCarloResult
from xbarlab.mitigation.compensation import CompensationConfig
from xbarlab.papers.p3.config import P3_HARDWARE, P3Config, _device
from xbarlab.papers.p3.data import _Data
from xbarlab.papers.p3.quant_search import QuantConfig
from xbarlab.stats import summarize

__all__ = ["P3_STORE", "compensated_model"]


P3_STORE = "p3.sqlite"
"""The run's results store (in ``out_dir``): the σ-sweep trials (``xbarlab report <out_dir>/p3.sqlite``)."""


def _model_settings(spec: str) -> dict[str, str]:
    """A sweep's ``model`` settings of a P3 model spec: a shipped name or a checkpoint path."""
    from xbarlab.checkpoint import list_pretrained

    return {"pretrained": spec} if spec in list_pretrained() else {"checkpoint": spec}


def _p3_sweep(
    cfg: P3Config,
    data: _Data,
    name: str,
    description: str,
    model: dict[str, Any],
    grid: dict[str, Any],
    *,
    test_samples: int,
    mitigation_options: dict[str, Any] | None = None,
    sigma: float = 0.0,
    quant: QuantConfig | None = None,
) -> str:
    """A sweep file of ``p3_chip`` trials with P3's hardware (log-normal σ ``sigma`` unless the grid sets it; the
    bits and per-layer ADC bits of ``quant`` as :meth:`QuantConfig.hardware` sets them), data choices, chips
    and seeds."""
    import yaml

    hardware = {**copy.deepcopy(P3_HARDWARE), "overrides": dict(cfg.hardware_overrides)}
    hardware["programming"] = {**hardware["programming"], "sigma": float(sigma)}
    if quant is not None:  # applied after the overrides, as QuantConfig.hardware does on p3_hardware(...)
        hardware["overrides"].update({"weights.bits": quant.weight_bits, "weights.bits_per_cell": quant.bits_per_cell})
        hardware["layers"] = [{"pattern": n, "settings": {"adc": {"bits": b}}} for n, b in quant.adc_bits]
    doc = {
        "name": name,
        "description": description,
        "kind": "p3_chip",
        "plugins": ["xbarlab.papers.p3.trial"],
        "base": {
            "model": model,
            "data": {
                "dataset": cfg.dataset,
                "data_dir": cfg.data_dir,
                "test_samples": test_samples,
                "batch_size": cfg.batch_size,
                "calib_batches": 4,
                "calib_batch_size": 128,
                "calib_samples": data.n_calib,
                "bn_samples": data.n_bn,
            },
            "hardware": hardware,
            "mitigation_options": mitigation_options or {},
            "device": str(_device(cfg)),
        },
        "grid": grid,
        "chips": cfg.chips,
        "seed": cfg.eval_seed,
        "report": {"title": description, **({"x": next(iter(grid))} if "mitigation" not in grid else {})},
    }
    return str(yaml.safe_dump(doc, sort_keys=False, width=120))


def _test_text(
    cfg: P3Config,
    data: _Data,
    name: str,
    description: str,
    model: dict[str, Any],
    *,
    mitigation: str = "none",
    options: dict[str, Any] | None = None,
    quant: QuantConfig | None = None,
) -> str:
    """The sweep file of one tested configuration of the placement, quantisation or per-chip stage: every test
    chip at ``sigma_max`` on the test images (``test_images``), with ``mitigation``."""
    return _p3_sweep(
        cfg,
        data,
        name,
        f"P3: {description} at sigma {cfg.sigma_max:g}",
        model,
        {"mitigation": [mitigation]},
        test_samples=data.n_test,
        mitigation_options={mitigation: options} if options else None,
        sigma=cfg.sigma_max,
        quant=quant,
    )


def compensated_model(
    checkpoint: str, layers: Sequence[str], branches: Path, config: CompensationConfig
) -> dict[str, Any]:
    """A sweep's ``model`` settings: the checkpoint with trained compensation branches (``model.compensation``)."""
    from xbarlab.checkpoint import sha256_file

    return {
        "checkpoint": checkpoint,
        "compensation": {
            "layers": list(layers),
            "branches": str(branches.resolve()),
            "sha256": sha256_file(branches),
            "config": config.as_dict(),
        },
    }


def _finetune_options(cfg: P3Config, data: _Data) -> dict[str, Any]:
    """The per-chip stage's ``p3_branch_finetune`` options (P3 config fields)."""
    return {
        "steps": cfg.perchip_steps,
        "lr": cfg.perchip_lr,
        "batch_size": cfg.perchip_batch_size,
        "seed": cfg.seed + 2,
        "shuffle_seed": cfg.seed,
        "images": data.n_perchip,
        "loss": cfg.comp_loss,
        "adc_in_training": cfg.adc_in_training,
    }


def _sweep_text(cfg: P3Config, data: _Data, name: str, model: dict[str, str]) -> str:
    """The sweep file of one model's σ sweep (the pipeline's ``sweep`` stage)."""
    return _p3_sweep(
        cfg,
        data,
        f"p3-sweep-{name}",
        f"P3 sweep stage: the {name} model over the log-normal variation sigma",
        model,
        {"hardware.programming.sigma": [float(s) for s in cfg.sigmas]},
        test_samples=data.n_sweep,
    )


def _bn_adapt_text(cfg: P3Config, data: _Data, model: dict[str, str], sigma: float) -> str:
    """The sweep file of the per-chip stage's BN adaptation of the plain model at ``sigma`` (P1 §1.7 A / P2)."""
    options = {"num_batches": max(1, -(-cfg.bn_images // 128)), "batch_size": 128, "augment": False}
    return _p3_sweep(
        cfg,
        data,
        "p3-perchip-bn-adapt",
        f"P3 per-chip stage: the plain model with BN statistics adapted per test chip at sigma {sigma:g}",
        model,
        {"mitigation": ["bn_adapt"]},
        test_samples=data.n_test,
        mitigation_options={"bn_adapt": options},
        sigma=sigma,
    )


def _sweep_row(chips: Sequence[Any]) -> dict[str, Any]:
    """The Monte-Carlo record of one grid point (:meth:`xbarlab.evaluation.MonteCarloResult.to_dict`, without the
    per-chip ``info``) from its stored trials, in chip order."""
    accs = [float(r.metrics["accuracy"]) for r in chips]
    result = MonteCarloResult(
        str(chips[0].config["hardware"]["name"]),
        tuple(ChipResult(r.chip, int(r.seed), a) for r, a in zip(chips, accs, strict=True)),
        summarize(accs, bounds=(0.0, 100.0)),
        float(sum(r.wall_time_s or 0.0 for r in chips)),
    )
    row = result.to_dict()
    row.pop("info")
    return row
