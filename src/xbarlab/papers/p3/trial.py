"""The ``p3_chip`` trial kind: one chip of the P3 σ sweep, run by the generic sweep engine.

The P3 pipeline's ``sweep`` stage (``xbarlab.papers.p3.stages._stage_sweep``) writes one sweep per model
(``p3-sweep-plain``, ``p3-sweep-lipschitz``) into the run's results store ``<out_dir>/p3.sqlite``: one trial
per (σ, chip). The stage's table rows are read back from the store, and ``xbarlab report <out_dir>/p3.sqlite``
renders them with the generic report.

A trial uses P3's own data choices (:class:`xbarlab.papers.p3.data._Data`), so its accuracy equals the
pipeline's Monte-Carlo evaluation of the same chip seed (tests/test_p3_trial.py checks this bit for bit):

* ``data.test_samples``: the first N test images (P3's ``sweep_images``), in batches of ``data.batch_size``;
* ``data.calib_samples``: the first N training images without augmentation (P3's ``calib_images``, at most the
  images left after ``val_images``), read in batches of ``data.calib_batch_size`` (128) for the converter
  calibration, ``data.calib_batches`` batches (4);
* the model as loaded (no channels-last conversion), the chip seed ``eval_seed + k``;
* ``mitigation``: ``none``, or a registered method that needs at most unlabelled images (``bn_adapt`` with
  ``augment: false``, ``bn_online``, ``drift_comp_*``); ``bn_adapt`` reads the first ``data.bn_samples``
  training images in order (P3's ``bn_images``), as the pipeline's per-chip stage does.

Metrics: ``accuracy`` (%), ``test_samples`` and what the mitigation reports.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xbarlab.data import get_dataset, make_loader
from xbarlab.evaluation import ChipResult, MonteCarloResult, accuracy
from xbarlab.experiments.registry import register_trial_kind
from xbarlab.hardware import HardwareConfig
from xbarlab.mitigation.registry import get_mitigation
from xbarlab.papers.p3.config import P3_HARDWARE, P3Config, _device
from xbarlab.papers.p3.data import _Data
from xbarlab.runner import RegisteredMitigation, run_chip
from xbarlab.schema import Field
from xbarlab.stats import summarize

__all__ = ["P3_CHIP_MITIGATIONS", "P3_STORE", "p3_chip_trial"]

_CACHE: dict[str, Any] = {}
"""Per-process cache: models and data subsets (a worker reads each once)."""


def _model(model: Mapping[str, Any]) -> nn.Module:
    from xbarlab.papers.p3.data import load_model

    spec = str(model.get("pretrained") or model.get("checkpoint"))
    key = f"model:{spec}:{model.get('sha256')}"
    if key not in _CACHE:
        _CACHE[key] = load_model(spec)[0]
    net: nn.Module = _CACHE[key]
    return net


def _subset(data: Mapping[str, Any], split: str, count: int) -> Any:
    key = f"data:{data['dataset']}:{data.get('data_dir')}:{split}:{count}"
    if key not in _CACHE:
        ds = get_dataset(str(data["dataset"]), split, data_dir=data.get("data_dir"), augment=False)
        _CACHE[key] = ds.subset(range(min(count, len(ds))))
    return _CACHE[key]


P3_CHIP_MITIGATIONS = ("none", "bn_adapt", "bn_online", "drift_comp_global", "drift_comp_column")
"""Mitigations a ``p3_chip`` trial accepts: those that need no labelled, shuffled or augmented batches."""


@dataclass
class _P3Context:
    """The mitigation context of a P3 chip: the chip seed, the device and P3's BN-adaptation images."""

    config: Mapping[str, Any]
    seed: int
    device: torch.device
    bn_set: Any

    def train_loader(self, batch_size: int, *, augment: bool, purpose: str) -> Any:
        """The first ``data.bn_samples`` training images, in order (P3's BN-adaptation loader)."""
        if augment:
            raise ValueError(f"{purpose}: augment: invalid value true; allowed: false (P3 adapts on plain images)")
        if len(self.bn_set) == 0:
            raise ValueError(f"{purpose}: data.bn_samples: invalid value 0; allowed: >= 1 for this mitigation")
        return make_loader(self.bn_set, batch_size, device=self.device)


def p3_chip_trial(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``p3_chip`` trial kind (see the module docstring); returns ``{"metrics", "timings"}``."""
    seed = int(config["seed"])
    device = torch.device(str(config.get("device", "cpu")))
    data = config["data"]
    net = _model(config["model"])
    test = _subset(data, "test", int(data["test_samples"]))
    calib_set = _subset(data, "train", int(data["calib_samples"]))
    test_loader = make_loader(test, int(data["batch_size"]), device=device)
    calib = make_loader(calib_set, int(data["calib_batch_size"]), device=device)
    mitigation = config.get("mitigation", {"name": "none", "options": {}})
    name = str(mitigation["name"])
    if name not in P3_CHIP_MITIGATIONS:
        raise ValueError(f"mitigation: invalid value {name!r}; allowed: {', '.join(P3_CHIP_MITIGATIONS)}")
    bn_set = _subset(data, "train", int(data["bn_samples"]))
    registered = RegisteredMitigation(
        get_mitigation(name),
        dict(mitigation.get("options", {})),
        lambda s: _P3Context({**config, "seed": s}, s, device, bn_set),
    )
    run = run_chip(
        net,
        HardwareConfig.from_dict(config["hardware"]),
        lambda chip: accuracy(chip, test_loader, device=device),
        seed=seed,
        calibration=calib,
        calib_batches=int(data["calib_batches"]),
        mitigation=registered,
        device=device,
    )
    return {"metrics": {"accuracy": run.value, "test_samples": len(test), **run.info}, "timings": dict(run.timings)}


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
    model: dict[str, str],
    grid: dict[str, Any],
    *,
    test_samples: int,
    mitigation_options: dict[str, Any] | None = None,
    sigma: float = 0.0,
) -> str:
    """A sweep file of ``p3_chip`` trials with P3's hardware (log-normal σ ``sigma`` unless the grid sets it), data
    choices, chips and seeds."""
    import yaml

    hardware = {**copy.deepcopy(P3_HARDWARE), "overrides": dict(cfg.hardware_overrides)}
    hardware["programming"] = {**hardware["programming"], "sigma": float(sigma)}
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


register_trial_kind(
    "p3_chip",
    p3_chip_trial,
    data_fields={
        "calib_samples": Field("int", 512, lo=1, doc="first training images of the converter calibration"),
        "bn_samples": Field("int", 0, lo=0, doc="first training images of BN adaptation (bn_adapt)"),
    },
)
