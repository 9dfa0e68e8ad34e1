"""The computations of the P3 stages: models (plain and Lipschitz), σ sweep, placement of compensation branches,
quantisation search and the per-chip extensions. Each returns the stage's result (a JSON mapping)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from xbarlab.experiments import Store, parse_spec, run_sweep
from xbarlab.papers.p3.cache import P3Plan, _read_json, _write_json
from xbarlab.papers.p3.config import P3Config, _device, p3_hardware
from xbarlab.papers.p3.data import _clean_accuracy, _Data, _full_test_loader, _lipschitz_model, _mc, load_model
from xbarlab.papers.p3.sweepfiles import (
    P3_STORE,
    _bn_adapt_text,
    _finetune_options,
    _model_settings,
    _sweep_row,
    _sweep_text,
    _test_text,
    compensated_model,
)
from xbarlab.papers.p3.trial import load_verified_branches


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


def _stage_sweep(
    cfg: P3Config, plan: P3Plan, data: _Data, out: Path, models: dict[str, Any], log: Callable[[str], None]
) -> dict[str, Any]:
    """Accuracy over chips of both models at every σ, as sweep trials (``kind: p3_chip``) in the run's results
    store ``<out>/p3.sqlite`` (:mod:`xbarlab.papers.p3.trial`); the rows of ``sweep.json`` are read back from it.
    A rerun with the same settings (stage key) reuses the rows; new σ values add trials; other settings give
    other trials (their identity holds every setting), so the sweep starts afresh."""
    stage = plan.stages["sweep"]
    path = out / "sweep.json"
    done: dict[str, Any] = {}
    if stage.status == "reuse":
        log(f"stage sweep: same settings, reusing the rows of {path.name}")
        done = dict(_read_json(path))
    elif stage.status == "recompute":
        log(f"stage sweep: recomputing: {stage.reason}")
    done["_stage"] = stage.record
    nets = {"plain": _model_settings(cfg.model), "lipschitz": {"checkpoint": str(models["lipschitz"]["path"])}}
    keys = [f"{sigma:g}" for sigma in cfg.sigmas]
    if all(key in done.get(name, {}) for name in nets for key in keys):
        return done
    for name, model in nets.items():
        spec = parse_spec(_sweep_text(cfg, data, name, model), source=f"<{out / P3_STORE}: p3-sweep-{name}>")
        t0 = time.perf_counter()
        trials, ran = _run_stored(spec, out)
        rows = done.setdefault(name, {})
        for key, chips in zip(keys, _by_point(trials), strict=True):  # grid order: the order of cfg.sigmas
            new = key not in rows
            rows[key] = _sweep_row(chips)
            if new:
                log(
                    f"sweep {name} σ={key}: {rows[key]['mean']:.2f} % ± {rows[key]['std']:.2f} "
                    f"({rows[key]['wall_time_s']:.0f} s)"
                )
        log(f"stage sweep: {name}: {ran} trial(s) run in {time.perf_counter() - t0:.0f} s ({P3_STORE})")
    done["images"] = data.n_sweep
    done["chips"] = cfg.chips
    _write_json(path, done)
    return done


def _run_stored(spec: Any, out: Path) -> tuple[list[Any], int]:
    """Run a sweep's missing trials into the run's store; its finished trials and how many ran now. A failed trial
    is not a number: it raises."""
    store = out / P3_STORE
    summary = run_sweep(spec, store=store, threads=torch.get_num_threads())
    if summary.failures:
        raise RuntimeError(f"sweep {spec.name}: {summary.failed} trial(s) failed; first: {summary.failures[0][1]}")
    with Store(store) as db:
        return db.rows(spec.name), summary.ran


def _by_point(trials: Sequence[Any]) -> list[list[Any]]:
    """A sweep's stored trials grouped by grid point (in grid order), each group in chip order."""
    return [
        sorted((r for r in trials if r.point == p), key=lambda r: r.chip) for p in sorted({r.point for r in trials})
    ]


def _point_row(
    spec: Any, out: Path, log: Callable[[str], None], info: Callable[[Any], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The Monte-Carlo record of a one-point sweep, run into the run's store (trials already there are reused);
    ``info``: each chip's mitigation record, from its stored trial, under ``"info"`` in chip order."""
    trials, ran = _run_stored(spec, out)
    log(f"sweep {spec.name}: {ran} trial(s) run ({P3_STORE})")
    (chips,) = _by_point(trials)
    row = _sweep_row(chips)
    if info is not None:
        row["info"] = [info(r) for r in chips]
    return row


def _bn_adapt_row(spec: Any, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """The Monte-Carlo record of the one-point BN-adaptation sweep, with each chip's adaptation info."""
    return _point_row(
        spec, out, log, lambda r: {"num_images": r.metrics["bn_adapt_images"], "wall_time_s": r.metrics["bn_adapt_s"]}
    )


def _test_row(
    text: str, out: Path, log: Callable[[str], None], info: Callable[[Any], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The Monte-Carlo record of a one-point test sweep (:func:`~xbarlab.papers.p3.sweepfiles._test_text`)."""
    return _point_row(parse_spec(text, source=f"<{out / P3_STORE}>"), out, log, info)


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
    from xbarlab.papers.p3.placement import (
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

    # final: retrain each chosen placement with a fresh chip every batch (cached with its branch file); test it
    # with the full hardware as a sweep of p3_chip trials in the run's store
    final: dict[str, Any] = {}
    final_cache_path = pdir / "final_cache.json"
    final_cache: dict[str, Any] = dict(_read_json(final_cache_path)) if final_cache_path.is_file() else {}
    lip_path = str(models["lipschitz"]["path"])
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
                branches = _branches_path(out, res.placement)
                save_file({k: v.cpu() for k, v in compensation_state(chip).items()}, str(branches))
                info["branches_sha256"] = _file_sha256(branches)
                info["train_wall_time_s"] = tr.wall_time_s
                info["final_loss"] = sum(tr.losses[-20:]) / len(tr.losses[-20:])
            test_chip = convert(lip, hw).to(dev)
            if res.placement:
                attach_compensation(test_chip, res.placement, comp_cfg, state=compensation_state(chip))
            program(test_chip, 0)
            calibrate(test_chip, data.calib, num_batches=1, device=dev)
            ov = compensation_overhead(test_chip, example)
            final_cache[key] = {"overhead": ov.to_dict(), **info}
            _write_json(final_cache_path, final_cache)
            log(
                f"final {method}: [{key}] trained (params +{ov.params_pct:.2f} %, MACs +{ov.macs_pct:.2f} %; "
                f"{time.perf_counter() - t0:.0f} s)"
            )
        model = (
            compensated_model(lip_path, res.placement, _branches_path(out, res.placement), comp_cfg)
            if res.placement
            else {"checkpoint": lip_path}
        )
        text = _test_text(cfg, data, f"p3-placement-{method}", f"the {method} placement [{key}]", model)
        test = _test_row(text, out, log)
        log(f"final {method}: [{key}] → {test['mean']:.2f} % on the test set")
        trained = {k: v for k, v in final_cache[key].items() if k != "test"}  # "test": an older xbarlab's cache
        final[method] = {**res.to_dict(with_history=method == "rl"), "test": test, **trained}
    # the unprotected (plain) network under the same test protocol, for the table
    text = _test_text(cfg, data, "p3-placement-unprotected", "the unprotected plain model", _model_settings(cfg.model))
    unprotected = {"test": _test_row(text, out, log)}
    log(f"final unprotected (plain) at σ={sigma:g}: {unprotected['test']['mean']:.2f} %")
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
        "unprotected": unprotected,
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
        fix = "; re-run the placement stage (--force)"
        state = load_verified_branches(path, recorded, where="the placement results' branches_sha256", fix=fix)
    return layers, CompensationConfig(**placement["compensation"]), state


def _file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes (the checkpoints' hash)."""
    from xbarlab.checkpoint import sha256_file

    return sha256_file(path)


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
    from xbarlab.papers.p3.quant_search import QuantConfig, quant_search

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
        reference_bits_per_cell=hw.weights.bits_per_cell,  # the run's own cells (2 for P3's hardware)
        adc_bits_options=cfg.quant_adc_bits,
        tolerance=cfg.quant_tolerance,
        max_evaluations=cfg.quant_max_evaluations,
        log=log,
    )
    # test-set numbers of the reference (uniform 8-bit) and of the chosen configuration: sweeps in the run's store
    model = (
        compensated_model(str(models["lipschitz"]["path"]), rl_layers, _branches_path(out, rl_layers), comp_cfg)
        if rl_layers
        else {"checkpoint": str(models["lipschitz"]["path"])}
    )
    tests = {}
    for name, point in (("reference", result.reference), ("best", result.best)):
        what = f"the {name} quantisation {point.config.label()} (Lipschitz + RL branches)"
        tests[name] = _test_row(_test_text(cfg, data, f"p3-quant-{name}", what, model, quant=point.config), out, log)
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


def _stage_perchip(
    cfg: P3Config,
    data: _Data,
    out: Path,
    models: dict[str, Any],
    placement: dict[str, Any],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Extensions measured on the table's test chips (not part of P3; see docs/correctnet.md §8), as sweeps of
    ``p3_chip`` trials in the run's store:

    * per-chip compensation (``p3-perchip-finetune``, mitigation :mod:`xbarlab.papers.p3.finetune`): the RL
      branches (trained over random chips) fine-tuned on each test chip with ``perchip_images`` labelled
      training images for ``perchip_steps`` steps, the chip's own static error fixed (the chip-in-the-loop
      counterpart of P1's BN fine-tuning), then tested on that chip;
    * BN adaptation (``p3-perchip-bn-adapt``; P1 §1.7 A / P2), for models with BN: the unprotected plain model's
      BN statistics re-estimated on each test chip from ``bn_images`` unlabelled images.
    """
    from xbarlab.mitigation.bn import bn_modules

    sigma = cfg.sigma_max
    rl_layers, comp_cfg, _ = _rl_branches(out, placement)  # verifies the branch file against its SHA-256
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
        t0 = time.perf_counter()
        model = compensated_model(str(models["lipschitz"]["path"]), rl_layers, _branches_path(out, rl_layers), comp_cfg)
        text = _test_text(
            cfg,
            data,
            "p3-perchip-finetune",
            "the RL branches fine-tuned per test chip",
            model,
            mitigation="p3_branch_finetune",
            options=_finetune_options(cfg, data),
        )
        row = _test_row(
            text,
            out,
            log,
            lambda r: {
                "chip_seed": int(r.seed),
                "train_wall_time_s": r.metrics["finetune_s"],
                "final_loss": r.metrics["finetune_loss"],
            },
        )
        summary["finetuned"] = row
        log(
            f"per-chip compensation [{_placement_key(rl_layers)}] at σ={sigma:g}: "
            f"{row['mean']:.2f} % on the test set ({time.perf_counter() - t0:.0f} s)"
        )
    plain, _ = load_model(cfg.model)
    if bn_modules(plain):
        # a sweep of p3_chip trials with the registered bn_adapt in the run's store (xbarlab.papers.p3.trial)
        t0 = time.perf_counter()
        spec = parse_spec(_bn_adapt_text(cfg, data, _model_settings(cfg.model), sigma), source="<p3-perchip-bn-adapt>")
        summary["bn_adapt"] = _bn_adapt_row(spec, out, log)
        summary["bn_images"] = data.n_bn
        log(
            f"BN adaptation (plain model) at σ={sigma:g}: {summary['bn_adapt']['mean']:.2f} % on the test set "
            f"({time.perf_counter() - t0:.0f} s)"
        )
    return summary


# ------------------------------------------------------------------------------------------------ table
