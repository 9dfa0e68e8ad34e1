"""P2's detection / segmentation experiments as sweeps: ``xbarlab p2 evaluate`` and ``xbarlab p2 drift``.

Both commands write sweep files (``kind: p2_task``, :mod:`xbarlab.papers.p2.trial`) from their options, run
them with the generic sweep engine into one results store and render the generic report; there is no P2
results format of its own. A run is resumable (trials already in the store are skipped) and every number can
be re-rendered from the store with ``xbarlab report``.

Per model (``detector``, ``segmenter``: the shipped weights; ``label=path``: a task model file):

* noise (:func:`noise_sweeps`): one sweep ``p2-<label>-noise`` over η (encoded as in
  :func:`xbarlab.papers.p2.noise.p2_noise_hardware`) × the methods (``none``, ``bn_adapt`` = P2 reading A,
  ``bn_online`` = reading B at the test batch), and ``p2-<label>-noise-batch<N>`` with ``bn_online`` at the
  small test batch N (the small-batch risk of reading B);
* drift (:func:`drift_sweeps`): one sweep ``p2-<label>-drift`` over read times × (``none``, global and
  per-column drift compensation, ``bn_adapt``, ``bn_online``) on a drifting preset, every conv on crossbars
  unless layers are named in ``keep_digital``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from xbarlab.experiments import parse_spec, run_sweep
from xbarlab.experiments.spec import SweepSpec, check_inputs
from xbarlab.mitigation.drift_compensation import READOUTS
from xbarlab.papers.p2.noise import check_eta
from xbarlab.papers.p2.train_tasks import SHIPPED_NAMES, load_shipped, load_task_model, metric_name
from xbarlab.papers.p2.trial import task_metric_key
from xbarlab.presets import list_presets
from xbarlab.progress import log
from xbarlab.reports import render_report
from xbarlab.reports.report import Report

__all__ = ["P2Model", "drift_sweeps", "noise_sweeps", "parse_models", "run_p2_sweeps"]

NOISE_METHODS = ("none", "bn_adapt", "bn_online")
DRIFT_METHODS = ("none", "drift_comp_global", "drift_comp_column", "bn_adapt", "bn_online")


@dataclass(frozen=True)
class P2Model:
    """One model of a P2 experiment: its label, its ``model`` settings and its task."""

    label: str
    model: dict[str, str]
    task: str


def parse_models(items: Sequence[str]) -> list[P2Model]:
    """A shipped model (``detector``, ``segmenter``, ``detector-ni``, ``segmenter-ni``) or ``label=path`` (a
    task model file); each is read to find its task."""
    out = []
    for item in items:
        if "=" in item:
            label, _, path = item.partition("=")
            _, meta = load_task_model(path)  # raises naming the missing or corrupt file
            out.append(P2Model(label.strip(), {"checkpoint": str(Path(path).expanduser())}, str(meta["task"])))
        elif item in SHIPPED_NAMES:
            _, meta = load_shipped(item)
            out.append(P2Model(item, {"pretrained": item}, str(meta["task"])))
        else:
            allowed = ", ".join(SHIPPED_NAMES)
            raise ValueError(f"--models: invalid value {item!r}; allowed: {allowed} or label=path/to/model")
    labels = [m.label for m in out]
    if not out or len(set(labels)) != len(labels) or not all(re.fullmatch(r"[A-Za-z0-9._-]+", s) for s in labels):
        raise ValueError(f"--models: invalid labels {labels!r}; allowed: distinct names of letters, digits, . _ -")
    return out


def _data(
    test_count: int, batch: int, calib_batches: int, calib_batch_size: int, calib: int, dataset: str
) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "test_samples": test_count,
        "batch_size": batch,
        "calib_batches": calib_batches,
        "calib_batch_size": calib_batch_size,
        "data_seed": 0,
        "calib_samples": calib,
    }


def _sweep(name: str, description: str, m: P2Model, base: dict[str, Any], grid: dict[str, Any], **top: Any) -> str:
    report = {"title": description, "metric": task_metric_key(m.task), **top.pop("report", {})}
    doc = {
        "name": name,
        "description": description,
        "kind": "p2_task",
        "plugins": ["xbarlab.papers.p2.trial"],
        "base": {"model": m.model, **base},
        "grid": grid,
        **top,
        "report": report,
    }
    return yaml.safe_dump(doc, sort_keys=False, width=120)


def noise_sweeps(
    models: Sequence[P2Model],
    etas: Sequence[float],
    *,
    chips: int = 4,
    seed: int = 0,
    test_count: int = 500,
    calib_batches: int = 20,
    calib_batch_size: int = 64,
    eval_batch_size: int = 64,
    small_batch_size: int | None = 4,
    dataset: str = "fashion-mnist",
    keep_digital: Sequence[str] = (),
    device: str = "cpu",
) -> list[str]:
    """Sweep files of the noise experiment (see the module docstring); η ∈ (0, 0.3] (``--etas``)."""
    for eta in etas:
        try:
            check_eta(eta, positive=True)
        except ValueError as exc:
            raise ValueError(f"--etas: {exc}") from None
    _distinct(etas, "--etas")
    sigmas = [float(eta) / (2.0 * math.sqrt(2.0)) for eta in etas]
    texts = []
    for m in models:
        hardware = {
            "preset": "ideal",
            "name": "p2-gaussian",
            "weights": {"quantize": False},
            "device": {"on_off_ratio": 2.0},
            "read_noise": {"kind": "relative_to_G_on", "sigma": sigmas[0], "mode": "frozen"},
            "keep_digital": list(keep_digital),
        }
        n_calib = calib_batches * calib_batch_size
        data = _data(test_count, eval_batch_size, 1, calib_batch_size, n_calib, dataset)
        base: dict[str, Any] = {
            "data": data,
            "hardware": hardware,
            "mitigation_options": {
                "bn_adapt": {"num_batches": calib_batches, "batch_size": calib_batch_size, "augment": False}
            },
            "device": device,
        }
        what = f"{m.label} ({metric_name(m.task)}) under Gaussian weight noise sigma = eta * max|W|, eta {list(etas)}"
        grid = {"hardware.read_noise.sigma": sigmas, "mitigation": list(NOISE_METHODS)}
        top = {"chips": chips, "seed": seed, "report": {"x": "hardware.read_noise.sigma"}}
        texts.append(_sweep(f"p2-{m.label}-noise", f"P2: {what}", m, base, grid, **top))
        if small_batch_size is not None and small_batch_size != eval_batch_size:
            small = {**base, "data": {**data, "batch_size": small_batch_size}}
            grid_small = {"hardware.read_noise.sigma": sigmas, "mitigation": ["bn_online"]}
            name = f"p2-{m.label}-noise-batch{small_batch_size}"
            texts.append(
                _sweep(name, f"P2: {what}; online BN at test batch {small_batch_size}", m, small, grid_small, **top)
            )
    return texts


def drift_sweeps(
    models: Sequence[P2Model],
    times_s: Sequence[float],
    *,
    preset: str = "fefet",
    chips: int = 3,
    seed: int = 0,
    test_count: int = 500,
    calib_batches: int = 20,
    calib_batch_size: int = 64,
    eval_batch_size: int = 64,
    converter_batches: int = 4,
    readout: str = "forward",
    dataset: str = "fashion-mnist",
    keep_digital: Sequence[str] = (),
    device: str = "cpu",
) -> list[str]:
    """Sweep files of the drift experiment (see the module docstring); read times t > 0 s.

    Option errors name the command-line option (``--readout``, ``--preset``, ``--times``).
    """
    if readout not in READOUTS:
        raise ValueError(f"--readout: invalid value {readout!r}; allowed: {', '.join(READOUTS)}")
    if preset not in list_presets():
        raise ValueError(f"--preset: invalid value {preset!r}; allowed: {', '.join(list_presets())}")
    for t in times_s:
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"--times: invalid value {t!r}; allowed: read times > 0 s")
    _distinct(times_s, "--times")
    texts = []
    for m in models:
        base = {
            "data": _data(
                test_count,
                eval_batch_size,
                converter_batches,
                calib_batch_size,
                calib_batches * calib_batch_size,
                dataset,
            ),
            "hardware": {"preset": preset, "keep_digital": list(keep_digital)},
            "mitigation_options": {
                "bn_adapt": {"num_batches": calib_batches, "batch_size": calib_batch_size, "augment": False},
                "drift_comp_global": {"readout": readout},
                "drift_comp_column": {"readout": readout},
            },
            "device": device,
        }
        grid = {"drift_s": [float(t) for t in times_s], "mitigation": list(DRIFT_METHODS)}
        what = f"P2 tasks, drift: {m.label} ({metric_name(m.task)}) on {preset}, t = {list(times_s)} s"
        top = {"chips": chips, "seed": seed, "report": {"x": "drift_s", "log_x": True}}
        texts.append(_sweep(f"p2-{m.label}-drift", what, m, base, grid, **top))
    return texts


def run_p2_sweeps(
    texts: Sequence[str], store: str | Path, out: str | Path, *, progress: bool = True, threads: int | None = None
) -> Report:
    """Validate every sweep (inputs read once) before any runs, run them into ``store``, render ``out``.

    A failed trial is not a number: the first failure is raised (``RuntimeError`` with the trial's error) after
    the other trials have run and been stored. ``threads``: torch threads of the trials (default: all cores).
    """
    specs: list[SweepSpec] = [
        parse_spec(text, source=f"<{name}>") for text, name in zip(texts, _names(texts), strict=True)
    ]
    for spec in specs:
        check_inputs(spec)
    failures: list[str] = []
    for spec in specs:
        summary = run_sweep(spec, store=store, threads=threads)
        log(progress, summary.line())
        failures += [f"{spec.name}: {error}" for _, error in summary.failures]
    if failures:
        raise RuntimeError(f"{len(failures)} trial(s) failed; first: {failures[0]}")
    return render_report(store, out, title="P2 beyond classification: detection and segmentation")


def _distinct(values: Sequence[float], option: str) -> None:
    """Each value once: a repeated grid value would be refused later, naming the encoded hardware field."""
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ValueError(f"{option}: value {seen[0]!r} listed twice; allowed: distinct values")


def _names(texts: Sequence[str]) -> list[str]:
    return [str(yaml.safe_load(t)["name"]) for t in texts]
