"""``xbarlab demo``: the whole workflow in a few minutes on a laptop CPU.

The shipped ResNet-20 (``load_pretrained("resnet20-fmnist")``; when it is not installed, a small VGG-style
network trained here in seconds on the subset, and the report says so) is tested on the built-in
Fashion-MNIST subset (1,000 training images for converter calibration, BN adaptation and BN fine-tuning;
the first 1,000 of its 2,000 test images, so that the demo stays under three minutes on a slow 2-core VM):
digitally, and on chips of the ``rram``, ``fefet`` and ``pcm-i`` presets (P1 Table 1) read one day after
programming (conductance drift), several chip instances each, without mitigation, with BN adaptation, with BN
fine-tuning and with the digital drift-compensation baselines (global and per column).

It runs as a sweep (:mod:`xbarlab.experiments`) into ``<out>/demo.sqlite`` (so an interrupted demo resumes)
and writes a report (:mod:`xbarlab.reports`): ``report.md``, a self-contained ``report.html`` and the PNG
plots, with the settings and the measured runtime.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xbarlab.checkpoint import CheckpointError, list_pretrained, load_pretrained
from xbarlab.experiments.executors import check_executor
from xbarlab.experiments.spec import check_inputs, parse_spec
from xbarlab.experiments.store import Store
from xbarlab.experiments.sweep import run_sweep
from xbarlab.experiments.toy import save_small_checkpoint
from xbarlab.progress import log
from xbarlab.reports import render_report

__all__ = ["DemoResult", "DemoSettings", "demo_settings", "run_demo"]

PRETRAINED = "resnet20-fmnist"
DATASET = "fashion-mnist-mini"
PRESETS = ("rram", "fefet", "pcm-i")
MITIGATIONS = ("none", "bn_adapt", "bn_finetune", "drift_comp_global", "drift_comp_column")
"""The BN methods next to the digital drift-compensation baselines (aihwkit-style global and per-column)."""
DEMO_TEST_IMAGES = 1000
"""Test images per chip: evaluating 45 chips dominates the demo's time; all 2,000 took 185–227 s on this 2-core VM
on slow days (the ≤ 3 min target), 1,000 halve that part (each chip's accuracy ± about 0.8 points)."""
DRIFT_S = 86_400.0
"""Chips are read one day after programming: the presets' drift (P1 Table 1) then degrades the accuracy, and
the BN methods have something to recover (read at t0, ResNet-20 loses almost nothing on these presets)."""


@dataclass(frozen=True)
class DemoSettings:
    """Everything the demo's runtime depends on (stated in the report)."""

    chips: int
    test_samples: int | None
    adapt_batches: int
    finetune_epochs: int
    finetune_samples: int | None
    batch_size: int
    fallback_epochs: int
    fallback_train: int | None
    calib_batches: int = 2
    drift_s: float | None = DRIFT_S


@dataclass(frozen=True)
class DemoResult:
    """Where the demo wrote its report, and how long it took."""

    out_dir: Path
    markdown: Path
    html: Path
    store: Path
    wall_s: float
    model: str
    settings: DemoSettings


def demo_settings(*, chips: int | None = None, quick: bool = False) -> DemoSettings:
    """Default settings (``quick``: a tiny setting for tests, about 20 s after start-up)."""
    if quick:
        return DemoSettings(
            chips=chips or 2,
            test_samples=100,
            adapt_batches=1,
            finetune_epochs=1,
            finetune_samples=128,
            batch_size=100,
            fallback_epochs=2,
            fallback_train=500,
            calib_batches=1,
        )
    return DemoSettings(
        chips=chips or 3,
        test_samples=DEMO_TEST_IMAGES,
        adapt_batches=4,
        finetune_epochs=1,
        finetune_samples=None,
        batch_size=500,
        fallback_epochs=10,
        fallback_train=None,
    )


def _model_source(out: Path, s: DemoSettings) -> tuple[dict[str, str], str, list[str]]:
    """The sweep's model entry, a description and report notes (pre-trained, or a fallback trained now)."""
    if PRETRAINED in list_pretrained():
        try:
            _, shipped = load_pretrained(PRETRAINED)
            acc = shipped.get("test_accuracy")
            if isinstance(acc, (int, float)) and acc <= 1.0:  # stored as a fraction
                acc = 100.0 * acc
            where = f" (clean test accuracy on the full Fashion-MNIST test set: {acc:.2f} %)" if acc else ""
            return {"pretrained": PRETRAINED}, f"shipped pre-trained ResNet-20 `{PRETRAINED}`{where}", []
        except CheckpointError as exc:  # pragma: no cover - a damaged installation
            reason = f"The shipped model could not be loaded ({exc})"
    else:
        reason = f"The shipped pre-trained model `{PRETRAINED}` is not installed"
    import json

    import torch

    t0 = time.perf_counter()
    path = out / "fallback-model"
    meta_path = path.with_name(path.name + ".json")
    meta: dict[str, Any] = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    wanted = {"epochs": s.fallback_epochs, "max_train": s.fallback_train}
    if {k: meta.get(k) for k in wanted} != wanted:  # train (again) unless this setting's model is there
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # deterministic weights, hence a stable trial identity
        try:
            _, meta = save_small_checkpoint(
                path,
                DATASET,
                model="vgg-small",
                width=0.5,
                epochs=s.fallback_epochs,
                batch_size=64,
                lr=3e-3,
                seed=0,
                max_train=s.fallback_train,
                extra={"max_train": s.fallback_train},
            )
        finally:
            torch.set_num_threads(threads)
    took = time.perf_counter() - t0
    desc = (
        f"fallback: a small VGG-style network (vgg-small, width 0.5, with BatchNorm) trained here for "
        f"{s.fallback_epochs} epochs on {meta['train_samples']} subset images ({took:.0f} s in this run)"
    )
    note = (
        f"**Fallback model.** {reason}, so this demo trained a small stand-in network instead "
        f"(`{path}`, clean subset test accuracy {meta['test_accuracy']:.2f} %). Its numbers are not the "
        "ResNet-20 results; install the pre-trained model and run the demo again."
    )
    return {"checkpoint": str(path)}, desc, [note]


def _sweep_yaml(model: dict[str, str], s: DemoSettings, device: str = "cpu") -> str:
    import yaml

    finetune: dict[str, Any] = {
        "epochs": s.finetune_epochs,
        "batch_size": 128,
        "adapt_batches": s.adapt_batches,
        "lr": 0.01,
        "lr_step_epochs": 2,
        "lr_gamma": 0.2,
    }
    if s.finetune_samples is not None:
        finetune["max_samples"] = s.finetune_samples
    data: dict[str, Any] = {"dataset": DATASET, "batch_size": s.batch_size, "calib_batches": s.calib_batches}
    if s.test_samples is not None:
        data["test_samples"] = s.test_samples
    doc = {
        "name": "demo",
        "description": "xbarlab demo: three P1 device presets read one day after programming, no mitigation vs "
        "BN adaptation vs BN fine-tuning vs global / per-column drift compensation, on the built-in Fashion-MNIST "
        "subset.",
        "base": {
            "model": model,
            "data": data,
            "hardware": {"preset": PRESETS[0]},
            "drift_s": s.drift_s,
            "device": device,
            "mitigation": "none",
            "mitigation_options": {
                "bn_adapt": {"num_batches": s.adapt_batches, "batch_size": 128},
                "bn_finetune": finetune,
            },
            "metrics": {"clean_accuracy": True},
        },
        "grid": {"hardware.preset": list(PRESETS), "mitigation": list(MITIGATIONS)},
        "chips": s.chips,
        "seed": 0,
        "report": {"title": "xbarlab demo: ResNet-20 on analog crossbars (Fashion-MNIST subset)"},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def run_demo(
    out_dir: str | Path = "reports/demo",
    *,
    chips: int | None = None,
    quick: bool = False,
    executor: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> DemoResult:
    """Run the demo and write its report; returns the paths and the runtime.

    ``executor``: ``local`` or ``process`` (default: ``process`` with 2 workers on machines with at least two
    cores, ``local`` for ``quick``). ``device``: torch device of the chip evaluations (``cpu``, ``cuda``).
    Options are checked before anything is written (an unknown executor, ``chips`` < 1).
    """
    t0 = time.perf_counter()
    if executor is not None:
        check_executor(executor, allowed=("local", "process"))
    if chips is not None and chips < 1:
        raise ValueError(f"--chips: invalid value {chips}; allowed: >= 1")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers: invalid value {workers}; allowed: >= 1")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"-o: {out} is a file; allowed: a folder (created when missing)")
    s = demo_settings(chips=chips, quick=quick)
    out.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if executor is None:
        executor = "local" if quick or cores < 2 else "process"
    if executor == "process" and workers is None:
        workers = min(2, cores)
    model, model_desc, notes = _model_source(out, s)
    text = _sweep_yaml(model, s, device)
    (out / "demo.yaml").write_text(text)
    spec = parse_spec(text, source=str(out / "demo.yaml"))
    check_inputs(spec)  # the model and the data fit (the same check as `xbarlab sweep`)
    store = out / "demo.sqlite"

    def show(p: Any) -> None:
        if p.ran or p.failed:
            eta = f", ETA {p.eta_s:.0f} s" if p.eta_s is not None else ""
            log(progress, f"demo: {p.done}/{p.total} chip evaluations{eta}")

    # one torch thread per worker: on a shared or busy machine more threads per process cost far more in
    # synchronisation than they gain (measured 8x slower with 2 threads under load)
    summary = run_sweep(spec, store=store, executor=executor, workers=workers, threads=1, on_progress=show)
    if summary.failed:
        raise RuntimeError(f"demo: {summary.failed} trial(s) failed: {summary.failures[0][1]}")
    sweep_s = time.perf_counter() - t0
    settings = [
        f"Model: {model_desc}.",
        f"Data: built-in Fashion-MNIST subset `{DATASET}`: "
        f"{'all 2,000' if s.test_samples is None else f'the first {s.test_samples:,} of the 2,000'} test images; "
        "the 1,000 training images "
        f"serve converter calibration ({s.calib_batches} batch(es) of 128), BN adaptation and BN fine-tuning.",
        f"Hardware: presets {', '.join(PRESETS)} (P1 Table 1: 64×64 crossbars, 8-bit weights on one device pair "
        "each, 8-bit inputs, read noise once per weight, classifier digital), "
        + (
            f"read {s.drift_s:,.0f} s ({s.drift_s / 86400:g} day) after programming: conductance drift "
            "G0·(t/1 s)^−ν with ν = 0.1 (FeFET) and 0.04 (RRAM, PCM-i), read noise drawn at programming."
            if s.drift_s
            else "read at t0 (no drift)."
        ),
        f"Chips: {s.chips} instances per preset (seeds 0–{s.chips - 1}); the mitigations run on the same chips.",
        f"BN adaptation: {s.adapt_batches} batches of 128 augmented training images, cumulative average.",
        f"BN fine-tuning: γ/β only, {s.finetune_epochs} epoch(s), SGD 0.9, LR 0.01, batch 128, "
        f"{'all 1,000' if s.finetune_samples is None else s.finetune_samples} training images, starting from "
        "BN adaptation (P1 §1.7 B, shortened).",
        "Drift compensation (baselines, aihwkit-style): each analog layer's output scaled digitally by "
        "reference/current of a one-hot read-out (reference at programming time), one factor per layer (global) "
        "or per output column.",
        f"Run: {summary.executor}; {summary.ran} chip evaluation(s) now, {summary.already_done} reused from "
        f"the store; {sweep_s:.0f} s until the report (model, sweep); results store `{store}`.",
    ]
    head = ["## Demo settings", "\n".join(f"- {line}" for line in settings)]
    with Store(store, readonly=True) as db:
        report = render_report(db, out, sweep="demo", notes=[*notes, *head])
    wall = time.perf_counter() - t0
    return DemoResult(out, report.markdown, report.html, store, wall, model_desc, s)
