"""P2 beyond classification: detection and segmentation under weight noise, with and without noise-aware BN.

Noise model (docs/papers.md §2.5 default): additive Gaussian noise on every conv weight, σ_l = η·max|W_l| per layer,
one frozen instance per chip. On xbarlab crossbars (:func:`p2_noise_hardware`) this is the ``ideal`` preset
with unquantised weights on one differential device pair with ON/OFF ratio 2 (G_on = 20 µS, G_off = 10 µS,
ΔG = 10 µS) and frozen read noise relative to G_on with ``sigma = η/(2√2)``: each device carries
σ_G = sigma·G_on = η·ΔG/√2 µS, so the pair's difference has σ = η·ΔG µS, i.e. σ_w = η·max|W| in weight units.
The idle device sits at 10 µS, ≥ 7σ_G above 0 up to η = 0.2, so the clamp at 0 µS never biases the noise.
This is the encoding of the ``p2-noise-aware-bn`` sweep; :func:`measured_noise_ratio` checks it numerically on
every evaluated chip (measured std of W_eff − W divided by η·max|W|).

Every chip runs through the per-chip runner (:func:`xbarlab.runner.run_chip`, chip seed s = seed + k); its
metric is the task metric under each method below, each method starting from the same programmed chip.

Methods, per chip instance (docs/papers.md §2.6):

* ``none``: the noisy chip with the pre-trained BN statistics;
* ``bn_adapt`` (reading A, offline calibrated BN): reset the running statistics and re-estimate them with a
  cumulative average over ``calib_batches`` batches of training canvases (:func:`xbarlab.mitigation.adapt_bn`);
* ``bn_online`` (reading B): normalise each test batch with its own statistics
  (:func:`xbarlab.mitigation.online_bn`), at the evaluation batch size and at a small batch size.

:func:`drift_experiment` adds the drift baselines: the trained models on a P1 device (FeFET by default) read at
times t, without mitigation, with global or per-column drift compensation
(:mod:`xbarlab.mitigation.drift_compensation`) and with BN adaptation / online BN.

Results are stored as JSON after every completed (model, setting) cell, so an interrupted run continues where
it stopped; the Markdown table and the PNG plot are written at the end.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xbarlab.conversion import convert
from xbarlab.data.registry import dataset_info, list_datasets
from xbarlab.hardware import HardwareConfig
from xbarlab.layers import analog_layers
from xbarlab.mitigation.bn import adapt_bn, online_bn, restore_bn_state, snapshot_bn_state
from xbarlab.mitigation.drift_compensation import READOUTS, compensate, remove_compensation
from xbarlab.papers.p2.canvas import CanvasLoader, CanvasSet
from xbarlab.papers.p2.train_tasks import evaluate_task, load_shipped, load_task_model, make_canvases, metric_name
from xbarlab.presets import list_presets, load_preset
from xbarlab.progress import log
from xbarlab.runner import run_chip
from xbarlab.stats import summarize

__all__ = [
    "DriftConfig",
    "P2Config",
    "drift_experiment",
    "measured_noise_ratio",
    "p2_experiment",
    "p2_noise_hardware",
    "render_table",
]

P2_METHODS = ("none", "bn_adapt", "bn_online", "bn_online_small")
DRIFT_METHODS = ("none", "drift_comp_global", "drift_comp_column", "bn_adapt", "bn_online")


def p2_noise_hardware(eta: float) -> HardwareConfig:
    """Crossbar config giving additive Gaussian weight noise σ = η·max|W| per layer (see the module docstring)."""
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 0.3:
        raise ValueError(f"eta: invalid value {eta!r}; allowed: a number in [0, 0.3]")
    kind = "relative_to_G_on" if eta > 0 else "none"
    return load_preset("ideal").override(
        {
            "name": f"p2-gaussian-eta{eta:g}",
            "weights.quantize": False,
            "device.on_off_ratio": 2.0,
            "read_noise.kind": kind,
            "read_noise.sigma": float(eta) / (2.0 * math.sqrt(2.0)),
            "read_noise.mode": "frozen",
        }
    )


def measured_noise_ratio(chip: nn.Module, eta: float) -> float:
    """Pooled std of (W_eff − W)/(max|W_l|) over all analog layers, divided by η (≈ 1 when the encoding holds)."""
    parts = []
    for layer in analog_layers(chip):
        w = layer.weight.detach().double()
        parts.append(((layer.effective_weight().double() - w) / w.abs().max()).reshape(-1))
    return float(torch.cat(parts).std() / eta) if eta > 0 else 0.0


def _noise_probe(chip: nn.Module, eta: float) -> dict[str, float]:
    """The measured noise ratio of a programmed chip (:func:`measured_noise_ratio`), for the per-chip runner."""
    return {"ratio": measured_noise_ratio(chip, eta)}


def _stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, std and 95 % CI of a task metric over chips (mAP / mIoU: fractions, CI within [0, 1])."""
    s = summarize(list(values), bounds=(0.0, 1.0))
    return {"mean": s.mean, "std": s.std, "ci95_low": s.ci95_low, "ci95_high": s.ci95_high, "ci95_bounded": s.bounded}


def _load_results(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _save_results(path: Path, results: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


def _models(spec: Sequence[str]) -> list[tuple[str, str, nn.Module, dict[str, Any]]]:
    """``task`` (shipped) or ``label=path`` → (label, task, model, meta)."""
    out = []
    for item in spec:
        if "=" in item:
            label, _, path = item.partition("=")
            model, meta = load_task_model(path)
        else:
            label = item
            model, meta = load_shipped(item)
        out.append((label, str(meta["task"]), model, meta))
    return out


@dataclass(frozen=True)
class P2Config:
    """Settings of :func:`p2_experiment`."""

    models: tuple[str, ...] = ("detector", "segmenter")
    """``detector``/``segmenter`` (shipped weights) or ``label=path/to/model`` (e.g. a noise-injected model)."""
    etas: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
    chips: int = 4
    seed: int = 0
    test_count: int = 500
    data_seed: int = 0
    calib_batches: int = 20
    calib_batch_size: int = 64
    eval_batch_size: int = 64
    small_batch_size: int = 4
    methods: tuple[str, ...] = P2_METHODS
    dataset: str = "fashion-mnist"
    keep_digital: tuple[str, ...] = ()
    """Layer-name patterns kept digital (e.g. ``("head",)``: the detector's output conv, which has no BN after it)."""

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in P2_METHODS]
        if bad:
            raise ValueError(f"methods: invalid value {bad[0]!r}; allowed: {', '.join(P2_METHODS)}")
        for eta in self.etas:
            p2_noise_hardware(eta)
        _check_counts(
            self,
            ("chips", "test_count", "calib_batches", "calib_batch_size", "eval_batch_size", "small_batch_size"),
        )
        if self.seed < 0:
            raise ValueError(f"seed: invalid value {self.seed}; allowed: >= 0")
        _check_dataset(self.dataset)


def _check_counts(config: Any, names: Sequence[str]) -> None:
    """Every named integer field of ``config`` must be >= 1 (``--chips``: invalid value 0; allowed: >= 1)."""
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')}: invalid value {value}; allowed: >= 1")


def _check_dataset(name: str) -> None:
    try:
        dataset_info(name)
    except KeyError:
        names = ", ".join(d.name for d in list_datasets())
        raise ValueError(f"--dataset: invalid value {name!r}; allowed: one of {names}") from None


def _drift_hardware(config: DriftConfig) -> Any:
    """The hardware of a drift experiment: ``config.preset`` with ``config.overrides``."""
    hw = load_preset(config.preset)
    return hw.override(config.overrides) if config.overrides else hw


def _data(dataset: str, data_seed: int, test_count: int, calib_count: int) -> tuple[CanvasSet, CanvasSet]:
    test = make_canvases("test", test_count, data_seed + 1, dataset=dataset)
    calib = make_canvases("train", calib_count, data_seed, dataset=dataset)
    return test, calib


def _run_methods(
    task: str,
    chip: nn.Module,
    methods: Sequence[str],
    test: CanvasSet,
    calib: CanvasSet,
    *,
    calib_batches: int,
    calib_batch_size: int,
    eval_batch_size: int,
    small_batch_size: int,
    calib_seed: int,
    extra: dict[str, Callable[[nn.Module], Any]] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Metric of one programmed chip under each method (each method starts from the same chip state)."""
    out: dict[str, float] = {}
    snap = snapshot_bn_state(chip)
    for method in methods:
        restore_bn_state(chip, snap)
        if method == "none":
            out[method] = evaluate_task(task, chip, test, batch_size=eval_batch_size, device=device)
        elif method in ("bn_online", "bn_online_small"):
            bs = eval_batch_size if method == "bn_online" else small_batch_size
            with online_bn(chip):
                out[method] = evaluate_task(task, chip, test, batch_size=bs, set_eval=False, device=device)
        elif method == "bn_adapt":
            loader = CanvasLoader(calib, calib_batch_size, shuffle=True, seed=calib_seed)
            adapt_bn(chip, loader, num_batches=calib_batches, device=device)
            out[method] = evaluate_task(task, chip, test, batch_size=eval_batch_size, device=device)
        elif extra is not None and method in extra:
            extra[method](chip)
            out[method] = evaluate_task(task, chip, test, batch_size=eval_batch_size, device=device)
            remove_compensation(chip)
        else:  # pragma: no cover - guarded by the configs
            raise ValueError(f"method: invalid value {method!r}")
    restore_bn_state(chip, snap)
    return out


def p2_experiment(
    config: P2Config, out_dir: str | Path, *, progress: bool = True, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Clean / noisy / BN-adapted (offline, online) metric of each model over noise levels and chips.

    Writes ``<out>/p2_results.json`` (after every (model, η) cell; reruns skip finished cells),
    ``<out>/p2_results.md`` and ``<out>/p2_results.png``. Returns the results dict.
    """
    models = _models(config.models)  # every model file read before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "p2_results.json"
    results = _load_results(path)
    cfg_dict = asdict(config)
    if results and results.get("config") != json.loads(json.dumps(cfg_dict)):
        raise ValueError(f"{path}: was written with another configuration; use another --out or delete it")
    results.setdefault("config", cfg_dict)
    results.setdefault("cells", {})
    t_all = time.perf_counter()
    log(progress, "generating test and calibration canvases")
    n_calib = config.calib_batches * config.calib_batch_size
    test, calib = _data(config.dataset, config.data_seed, config.test_count, n_calib)
    for label, task, model, _ in models:
        key0 = f"{label}|clean"
        if key0 not in results["cells"]:
            clean = evaluate_task(task, model.to(device), test, batch_size=config.eval_batch_size, device=device)
            results["cells"][key0] = {"model": label, "task": task, "metric": metric_name(task), "clean": clean}
            _save_results(path, results)
        log(progress, f"{label}: clean {metric_name(task)} {results['cells'][key0]['clean']:.4f}")
        for eta in config.etas:
            key = f"{label}|eta={eta:g}"
            if key in results["cells"]:
                continue
            t0 = time.perf_counter()
            hw = p2_noise_hardware(eta)
            if config.keep_digital:
                hw = hw.override({"keep_digital": list(config.keep_digital)})
            base = convert(model, hw).to(device)
            per_chip: dict[str, list[float]] = {m: [] for m in config.methods}
            ratios = []
            for k in range(config.chips):
                s = config.seed + k

                def methods(chip: nn.Module, s: int = s, task: str = task) -> dict[str, float]:
                    return _run_methods(
                        task,
                        chip,
                        config.methods,
                        test,
                        calib,
                        calib_batches=config.calib_batches,
                        calib_batch_size=config.calib_batch_size,
                        eval_batch_size=config.eval_batch_size,
                        small_batch_size=config.small_batch_size,
                        calib_seed=s,
                        device=device,
                    )

                # no converters to calibrate: one calibration batch verifies that every analog layer runs on the chip
                run = run_chip(
                    base,
                    None,
                    methods,
                    seed=s,
                    calibration=CanvasLoader(calib, config.calib_batch_size),
                    calib_batches=1,
                    verify=True,
                    probe=functools.partial(_noise_probe, eta=eta),
                    device=device,
                )
                ratios.append(run.probe["ratio"])
                for m, v in run.value.items():
                    per_chip[m].append(v)
            cell: dict[str, Any] = {
                "model": label,
                "task": task,
                "eta": eta,
                "metric": metric_name(task),
                "noise_std_over_eta_maxw": sum(ratios) / len(ratios),
                "seconds": round(time.perf_counter() - t0, 1),
                "values": per_chip,
                "summary": {m: _stats(v) for m, v in per_chip.items()},
            }
            results["cells"][key] = cell
            _save_results(path, results)
            summary = ", ".join(f"{m} {s['mean']:.3f}" for m, s in cell["summary"].items())
            log(progress, f"{label} η={eta:g}: {summary} ({cell['seconds']:.0f} s)")
    results["wall_time_s"] = round(time.perf_counter() - t_all, 1)
    _save_results(path, results)
    (out / "p2_results.md").write_text(render_table(results, x_key="eta", x_label="η") + "\n")
    plot_results(results, out / "p2_results.png", x_key="eta", x_label="noise level η (σ = η·max|W|)")
    return results


# ------------------------------------------------------------------------------------------------ drift


@dataclass(frozen=True)
class DriftConfig:
    """Settings of :func:`drift_experiment`."""

    models: tuple[str, ...] = ("segmenter", "detector")
    preset: str = "fefet"
    times_s: tuple[float, ...] = (1.0, 1e2, 1e4, 1e6, 1e8, 1e10)
    chips: int = 3
    seed: int = 0
    test_count: int = 500
    data_seed: int = 0
    calib_batches: int = 20
    calib_batch_size: int = 64
    eval_batch_size: int = 64
    converter_batches: int = 4
    methods: tuple[str, ...] = DRIFT_METHODS
    readout: str = "forward"
    dataset: str = "fashion-mnist"
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in DRIFT_METHODS]
        if bad:
            raise ValueError(f"methods: invalid value {bad[0]!r}; allowed: {', '.join(DRIFT_METHODS)}")
        if self.readout not in READOUTS:
            raise ValueError(f"--readout: invalid value {self.readout!r}; allowed: {', '.join(READOUTS)}")
        if self.preset not in list_presets():
            raise ValueError(f"--preset: invalid value {self.preset!r}; allowed: {', '.join(list_presets())}")
        for t in self.times_s:
            if not (math.isfinite(t) and t >= 0):
                raise ValueError(f"--times: invalid value {t!r}; allowed: read times >= 0 s")
        _check_counts(self, ("chips", "test_count", "calib_batches", "calib_batch_size", "eval_batch_size"))
        _check_dataset(self.dataset)
        _drift_hardware(self)  # the preset with the overrides: a bad override fails here, before any work


def drift_experiment(
    config: DriftConfig, out_dir: str | Path, *, progress: bool = True, device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Metric of each model on a drifting chip: none vs drift compensation vs BN adaptation / online BN.

    Per chip: program (seed + k), drift to t, calibrate the converters (if any) and verify coverage on calibration
    canvases, then each method from the same state. Writes ``<out>/drift_results.{json,md,png}``; reruns skip
    finished cells.
    """
    models = _models(config.models)  # every model file read before anything is written
    hw = _drift_hardware(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "drift_results.json"
    results = _load_results(path)
    cfg_dict = json.loads(json.dumps(asdict(config)))
    if results and results.get("config") != cfg_dict:
        raise ValueError(f"{path}: was written with another configuration; use another --out or delete it")
    results.setdefault("config", cfg_dict)
    results.setdefault("cells", {})
    t_all = time.perf_counter()
    log(progress, "generating test and calibration canvases")
    n_calib = config.calib_batches * config.calib_batch_size
    test, calib = _data(config.dataset, config.data_seed, config.test_count, n_calib)
    extra: dict[str, Callable[[nn.Module], Any]] = {
        "drift_comp_global": lambda c: compensate(c, kind="global", readout=config.readout),
        "drift_comp_column": lambda c: compensate(c, kind="per_column", readout=config.readout),
    }
    for label, task, model, _ in models:
        key0 = f"{label}|clean"
        if key0 not in results["cells"]:
            clean = evaluate_task(task, model.to(device), test, batch_size=config.eval_batch_size, device=device)
            results["cells"][key0] = {"model": label, "task": task, "metric": metric_name(task), "clean": clean}
            _save_results(path, results)
        base = convert(model, hw).to(device)
        for t in config.times_s:
            key = f"{label}|t={t:g}"
            if key in results["cells"]:
                continue
            t0 = time.perf_counter()
            per_chip: dict[str, list[float]] = {m: [] for m in config.methods}
            for k in range(config.chips):
                s = config.seed + k

                def methods(chip: nn.Module, s: int = s, task: str = task) -> dict[str, float]:
                    return _run_methods(
                        task,
                        chip,
                        config.methods,
                        test,
                        calib,
                        calib_batches=config.calib_batches,
                        calib_batch_size=config.calib_batch_size,
                        eval_batch_size=config.eval_batch_size,
                        small_batch_size=config.eval_batch_size,
                        calib_seed=s,
                        extra=extra,
                        device=device,
                    )

                # calibrate also verifies that every analog layer runs on the chip (one batch is enough when
                # there are no converters to calibrate)
                run = run_chip(
                    base,
                    None,
                    methods,
                    seed=s,
                    t_seconds=t,
                    calibration=CanvasLoader(calib, config.calib_batch_size),
                    calib_batches=config.converter_batches,
                    verify=True,
                    device=device,
                )
                for m, v in run.value.items():
                    per_chip[m].append(v)
            cell: dict[str, Any] = {
                "model": label,
                "task": task,
                "t_s": t,
                "metric": metric_name(task),
                "seconds": round(time.perf_counter() - t0, 1),
                "values": per_chip,
                "summary": {m: _stats(v) for m, v in per_chip.items()},
            }
            results["cells"][key] = cell
            _save_results(path, results)
            summary = ", ".join(f"{m} {s['mean']:.3f}" for m, s in cell["summary"].items())
            log(progress, f"{label} t={t:g} s: {summary} ({cell['seconds']:.0f} s)")
    results["wall_time_s"] = round(time.perf_counter() - t_all, 1)
    _save_results(path, results)
    (out / "drift_results.md").write_text(render_table(results, x_key="t_s", x_label="t (s)") + "\n")
    plot_results(results, out / "drift_results.png", x_key="t_s", x_label="time since programming t (s)", log_x=True)
    return results


# ------------------------------------------------------------------------------------------------ output


def render_table(results: dict[str, Any], *, x_key: str, x_label: str) -> str:
    """Markdown table: one row per (model, setting), one column per method (mean ± std over chips)."""
    cells = results.get("cells", {})
    methods: list[str] = []
    for c in cells.values():
        for m in c.get("summary", {}):
            if m not in methods:
                methods.append(m)
    lines = [
        f"| model | metric | {x_label} | clean | " + " | ".join(methods) + " |",
        "|---|---|---|---|" + "---|" * len(methods),
    ]
    cleans = {c["model"]: c["clean"] for c in cells.values() if "clean" in c}
    for c in cells.values():
        if "summary" not in c:
            continue
        vals = []
        for m in methods:
            s = c["summary"].get(m)
            vals.append(f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}" if s else "")
        clean = cleans.get(c["model"])
        clean_txt = f"{100 * clean:.1f}" if clean is not None else ""
        lines.append(f"| {c['model']} | {c['metric']} (%) | {c[x_key]:g} | {clean_txt} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def plot_results(results: dict[str, Any], path: Path, *, x_key: str, x_label: str, log_x: bool = False) -> Path:
    """One panel per model: metric vs setting, one line per method (mean ± std over chips), clean dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in results.get("cells", {}).values() if "summary" in c]
    models = list(dict.fromkeys(c["model"] for c in cells))
    cleans = {c["model"]: c["clean"] for c in results.get("cells", {}).values() if "clean" in c}
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(5.2 * max(1, len(models)), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=False):
        rows = sorted((c for c in cells if c["model"] == model), key=lambda c: c[x_key])
        xs = [c[x_key] for c in rows]
        for method in rows[0]["summary"] if rows else []:
            mean = [100 * c["summary"][method]["mean"] for c in rows]
            std = [100 * c["summary"][method]["std"] for c in rows]
            ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=method)
        if model in cleans:
            ax.axhline(100 * cleans[model], color="k", linestyle="--", linewidth=1, label="clean (digital)")
        if log_x:
            ax.set_xscale("log")
        metric = rows[0]["metric"] if rows else ""
        ax.set_title(f"{model} ({metric})")
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
