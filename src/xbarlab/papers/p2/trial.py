"""The ``p2_task`` trial kind: one chip of P2's detector or segmenter, run by the generic sweep engine.

A sweep file with ``kind: p2_task`` and ``plugins: [xbarlab.papers.p2.trial]`` (``papers/p2/sweeps/p2-*.yaml``)
plans, runs, stores and reports the P2 detection and segmentation experiments like every other sweep:

* ``model``: ``{pretrained: detector}`` / ``{pretrained: segmenter}`` (the shipped task models; ``detector-ni``
  / ``segmenter-ni``: the shipped noise-injection baselines) or
  ``{checkpoint: PATH}`` (a task model saved by ``xbarlab p2 train-*``, e.g. a noise-injection-trained one);
* ``data``: the canvases (:mod:`xbarlab.papers.p2.canvas`) built from ``data.dataset``: the first
  ``test_samples`` test canvases (seed ``data_seed + 1``; default 500) and ``calib_samples`` training canvases
  (seed ``data_seed``) for BN adaptation and the converter calibration (``calib_batches`` × ``calib_batch_size``);
  ``batch_size`` is the test batch, which online BN depends on;
* ``hardware``, ``drift_s``, ``mitigation``: as in every sweep. The mitigations that need only unlabelled
  images apply (``none``, ``bn_adapt``, ``bn_online``, ``drift_comp_global``, ``drift_comp_column``); the
  classification fine-tuning methods are refused when the sweep is planned.

Per trial: the per-chip runner (:func:`xbarlab.runner.run_chip`, chip seed s) programs the chip, drifts and
calibrates it, verifies that every analog layer runs on it, records ``weight_noise_rel_std`` (the pooled std of
(W_eff − W)/max|W_l| over the analog layers: η for the P2 noise encoding), applies the mitigation (BN adaptation
reads the calibration canvases in an order seeded by s) and measures the task metric in %: ``mAP50_pct``
(detector, mAP at IoU 0.5) or ``mIoU_pct`` (segmenter), with the digital model's value as ``clean_mAP50_pct`` /
``clean_mIoU_pct``. A trial per method programs the same chip again from its seed, so the numbers equal those
of the earlier P2 code, which ran every method on one programmed chip (tests/test_p2_trial.py checks this
against a hand-written reference).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xbarlab.experiments.registry import register_trial_kind
from xbarlab.hardware import HardwareConfig
from xbarlab.layers import analog_layers
from xbarlab.mitigation.registry import get_mitigation
from xbarlab.papers.p2.canvas import CanvasLoader, CanvasSet
from xbarlab.papers.p2.train_tasks import (
    SHIPPED_NAMES,
    evaluate_task,
    load_shipped,
    load_task_model,
    make_canvases,
    metric_name,
    shipped_path,
)
from xbarlab.runner import RegisteredMitigation, run_chip
from xbarlab.schema import ConfigError, Field

__all__ = ["P2_TASK_MITIGATIONS", "p2_task_trial", "task_metric_key", "weight_noise_rel_std"]

P2_TASK_MITIGATIONS = ("none", "bn_adapt", "bn_online", "drift_comp_global", "drift_comp_column")
"""Mitigations a task trial accepts: those that need no labels and no classification loss."""

DEFAULT_TEST_CANVASES = 500
"""Test canvases when ``data.test_samples`` is not given (the default of ``xbarlab p2 evaluate``)."""

_CACHE: dict[str, Any] = {}
"""Per-process cache: task models and canvas sets (a worker builds each once)."""


def task_metric_key(task: str) -> str:
    """The stored metric of ``task``: ``mAP50_pct`` (detector) or ``mIoU_pct`` (segmenter)."""
    return f"{metric_name(task)}_pct"


def weight_noise_rel_std(chip: nn.Module) -> float:
    """Pooled std of (W_eff − W)/max|W_l| over all analog layers (dimensionless; η under P2's noise model)."""
    parts = []
    for layer in analog_layers(chip):
        w = layer.weight.detach().double()
        parts.append(((layer.effective_weight().double() - w) / w.abs().max()).reshape(-1))
    return float(torch.cat(parts).std()) if parts else 0.0


def _model(model: Mapping[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The task model of a ``{pretrained: task}`` / ``{checkpoint: path}`` mapping (cached per process)."""
    key = "model:" + str(model.get("pretrained") or model.get("checkpoint"))
    if key not in _CACHE:
        pretrained = model.get("pretrained")
        _CACHE[key] = load_shipped(str(pretrained)) if pretrained else load_task_model(str(model["checkpoint"]))
    net, meta = _CACHE[key]
    return net.eval(), meta


def _fingerprint(model: Mapping[str, Any]) -> str:
    """SHA-256 of the task model's weights file (checked against its JSON when the model is read)."""
    _, meta = _model(model)
    return str(meta["sha256"])


def _canvases(dataset: str, split: str, count: int, seed: int) -> CanvasSet:
    key = f"canvases:{dataset}:{split}:{count}:{seed}"
    if key not in _CACHE:
        _CACHE[key] = make_canvases(split, count, seed, dataset=dataset)
    canvases: CanvasSet = _CACHE[key]
    return canvases


def _data(data: Mapping[str, Any]) -> tuple[CanvasSet, CanvasSet]:
    """(test canvases, calibration canvases) of a ``data`` mapping."""
    dataset, seed = str(data["dataset"]), int(data["data_seed"])
    n_test = int(data["test_samples"] or DEFAULT_TEST_CANVASES)
    return _canvases(dataset, "test", n_test, seed + 1), _canvases(dataset, "train", int(data["calib_samples"]), seed)


def _check_inputs(settings: Mapping[str, Any]) -> None:
    """Refuse what cannot work before a sweep starts: an unknown model file, a mitigation needing labels."""
    mitigation = str(settings["mitigation"])
    if mitigation not in P2_TASK_MITIGATIONS:
        raise ConfigError(
            "mitigation",
            mitigation,
            ", ".join(P2_TASK_MITIGATIONS),
            f"{mitigation!r} needs labelled classification batches, which detection and segmentation canvases "
            "do not give",
        )
    options = settings["mitigation_options"].get("bn_adapt", {})
    if mitigation == "bn_adapt" and options.get("augment", True):
        raise ConfigError("mitigation_options.bn_adapt.augment", True, "false (canvases have no training augmentation)")
    _model(settings["model"])


@dataclass
class _CanvasContext:
    """The mitigation context of a task trial: the chip seed, the device and the calibration canvases."""

    config: Mapping[str, Any]
    seed: int
    device: torch.device
    calib: CanvasSet

    def train_loader(self, batch_size: int, *, augment: bool, purpose: str) -> CanvasLoader:
        """The calibration canvases, shuffled with the chip seed (the order of the earlier P2 code)."""
        if augment:
            raise ValueError(f"{purpose}: augment: invalid value true; allowed: false (canvases are not augmented)")
        return CanvasLoader(self.calib, batch_size, shuffle=True, seed=self.seed)


def p2_task_trial(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``p2_task`` trial kind (see the module docstring); returns ``{"metrics", "timings"}``."""
    seed = int(config["seed"])
    device = torch.device(str(config.get("device", "cpu")))
    data = config["data"]
    model, meta = _model(config["model"])
    task = str(meta["task"])
    test, calib = _data(data)
    hw = HardwareConfig.from_dict(config["hardware"])
    mitigation = config.get("mitigation", {"name": "none", "options": {}})
    name = str(mitigation["name"])
    if name not in P2_TASK_MITIGATIONS:
        raise ValueError(f"mitigation: invalid value {name!r}; allowed: {', '.join(P2_TASK_MITIGATIONS)}")
    registered = RegisteredMitigation(
        get_mitigation(name),
        dict(mitigation.get("options", {})),
        lambda s: _CanvasContext({**config, "seed": s}, s, device, calib),
    )
    batch = int(data["batch_size"])
    t = config.get("drift_s")
    run = run_chip(
        model,
        hw,
        lambda chip: evaluate_task(task, chip, test, batch_size=batch, device=device),
        seed=seed,
        t_seconds=None if t is None else float(t),
        calibration=CanvasLoader(calib, int(data["calib_batch_size"])),
        calib_batches=int(data["calib_batches"]),
        verify=True,
        probe=lambda chip: {"weight_noise_rel_std": weight_noise_rel_std(chip)},
        mitigation=registered,
        device=device,
    )
    key = task_metric_key(task)
    metrics: dict[str, Any] = {**run.probe, key: 100.0 * run.value, "test_samples": len(test), **run.info}
    clean_key = f"clean:{_fingerprint(config['model'])}:{len(test)}:{batch}:{data['dataset']}:{data['data_seed']}"
    if clean_key not in _CACHE:
        _CACHE[clean_key] = evaluate_task(task, model.to(device), test, batch_size=batch, device=device)
    metrics["clean_" + key] = 100.0 * _CACHE[clean_key]
    return {"metrics": metrics, "timings": dict(run.timings)}


def _pretrained() -> list[str]:
    return [name for name in SHIPPED_NAMES if shipped_path(name).with_suffix(".json").is_file()]


register_trial_kind(
    "p2_task",
    p2_task_trial,
    pretrained=_pretrained,
    fingerprint=_fingerprint,
    check_inputs=_check_inputs,
    data_fields={
        "data_seed": Field("int", 0, lo=0, doc="canvas seed: test canvases use data_seed + 1, training data_seed"),
        "calib_samples": Field("int", 1280, lo=1, doc="training canvases for BN adaptation and calibration"),
    },
)
