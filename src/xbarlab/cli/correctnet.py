"""``xbarlab correctnet ...``: the P3 (CorrectNet / CorrectNet+) pipeline and its building blocks.

* ``run``: plain → Lipschitz → + compensation (RL placement) → + quantisation search, with a results table;
* ``train-lipschitz``: fine-tune a model (or train one from scratch) with a Lipschitz penalty;
* ``lipschitz``: per-layer spectral norms and penalties of a model;
* ``adc-energy``: ADC conversions and energy per inference of a model on a hardware configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from xbarlab.cli.core import _check_device, _parse_floats, _parse_overrides
from xbarlab.cli.options import positive

__all__ = ["register"]

correctnet_app = typer.Typer(
    help="CorrectNet / CorrectNet+ (P3): Lipschitz training, compensation with RL placement, ADC power search.",
    no_args_is_help=True,
)


_OPTION_OF_FIELD = {
    "lipschitz_beta": "--beta",
    "budget_pct": "--budget",
    "adc_fom_fj": "--adc-fom",
    "hardware_overrides": "--set",
    "out_dir": "--out",
}
"""P3Config fields whose command-line option is not ``--`` + the field name with dashes."""


def _as_option_error(message: str) -> str:
    """A P3Config/run_p3 message ``field: …`` as ``--option: …`` (the name the user typed)."""
    import dataclasses

    from xbarlab.papers.p3 import P3Config

    field, sep, rest = message.partition(": ")
    if sep and field in {f.name for f in dataclasses.fields(P3Config)}:
        return f"{_OPTION_OF_FIELD.get(field, '--' + field.replace('_', '-'))}: {rest}"
    return message


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{name}: expected comma-separated integers, got {text!r}") from exc


@correctnet_app.command("run")
def run(
    model: str = typer.Option("lenet5-fmnist", help="Shipped pretrained model name or checkpoint path."),
    dataset: str = typer.Option("fashion-mnist", help="Data set of the model."),
    data_dir: str = typer.Option(None, help="Folder with the data set files."),
    out: Path = typer.Option(Path("runs/p3-lenet5-fmnist"), help="Output folder (resumable)."),
    sigmas: str = typer.Option("0,0.25,0.5,0.75,1", help="Log-normal σ values of the sweep."),
    target_sigma: float = typer.Option(
        None, min=0.0, help="σ of the placement, quantisation and table (default: the largest swept σ)."
    ),
    chips: int = typer.Option(5, min=1, help="Chips per reported point."),
    test_images: int = typer.Option(10000, min=1, help="Test images of the final table."),
    sweep_images: int = typer.Option(2000, min=1, help="Test images per point of the σ sweep."),
    val_images: int = typer.Option(2000, min=1, help="Held-out training images that score the searches."),
    lipschitz_checkpoint: str = typer.Option(None, help="Use this Lipschitz-trained checkpoint (no fine-tuning)."),
    lipschitz_kind: str = typer.Option("parseval_neft", help="parseval_neft, parseval_matrix or spectral."),
    beta: float = typer.Option(5e-4, min=0.0, help="Lipschitz penalty weight β."),
    lipschitz_epochs: int = typer.Option(5, min=1, help="Fine-tuning epochs with the penalty."),
    lipschitz_lr: float = typer.Option(0.01, callback=positive, help="Fine-tuning learning rate (cosine)."),
    comp_steps: int = typer.Option(600, min=1, help="Compensation training steps (batches)."),
    comp_lr: float = typer.Option(3e-3, callback=positive, help="Compensation learning rate (Adam)."),
    comp_loss: str = typer.Option("ce_normalized", help="Compensation loss: ce_normalized, ce, kd or feature."),
    budget: float = typer.Option(10.0, min=0.0, help="Compensation overhead budget, % of the base model."),
    penalty: float = typer.Option(0.2, min=0.0, help="Reward λ: accuracy points per % of overhead."),
    cost_metric: str = typer.Option("max", help="Overhead measure: params, macs or max of both."),
    rl_episodes: int = typer.Option(30, min=1, help="RL episode budget."),
    search_chips: int = typer.Option(3, min=1, help="Chips per placement evaluation."),
    greedy_mode: str = typer.Option("iterative", help="Greedy baseline: iterative or ranked (one pass)."),
    random_samples: int = typer.Option(5, min=1, help="Random feasible placements tried by the random baseline."),
    comp_pool: int = typer.Option(64, min=0, help="Training chips of the search (0: a fresh chip every batch)."),
    comp_batch_size: int = typer.Option(128, min=1, help="Compensation training batch size."),
    quant_tolerance: float = typer.Option(1.0, min=0.0, help="'Equal accuracy' tolerance of the ADC search, points."),
    quant_bits_per_cell: str = typer.Option("1,2,4", help="Bits-per-cell options of the quantisation search."),
    quant_adc_bits: str = typer.Option("4,5,6,7,8", help="ADC resolutions of the quantisation search."),
    quant_max_evaluations: int = typer.Option(60, min=1, help="Evaluation cap of the quantisation search."),
    quant_chips: int = typer.Option(3, min=1, help="Chips per evaluation of the quantisation search."),
    quant_images: int = typer.Option(1000, min=1, help="Held-out images per evaluation of the quantisation search."),
    adc_fom: float = typer.Option(5.0, callback=positive, help="Walden FOM, fJ per conversion step."),
    adc_scaling: str = typer.Option("walden", help="ADC energy scaling: walden (2^B) or schreier (4^B)."),
    perchip_steps: int = typer.Option(100, min=1, help="Per-chip fine-tuning steps of the RL branches (extension)."),
    perchip_images: int = typer.Option(1000, min=1, help="Labelled training images of the per-chip fine-tuning."),
    perchip_lr: float = typer.Option(3e-3, callback=positive, help="Per-chip fine-tuning learning rate (Adam)."),
    bn_images: int = typer.Option(2560, min=1, help="Unlabelled images of the BN-adaptation row (models with BN)."),
    overrides: list[str] = typer.Option([], "--set", help="Hardware override dotted.key=value (repeatable)."),
    stages: str = typer.Option("models,sweep,placement,quant,perchip,table", help="Stages to run."),
    seed: int = typer.Option(0, min=0),
    threads: int = typer.Option(1, min=1, help="torch threads."),
    force: bool = typer.Option(False, help="Recompute every stage run, even when its stored settings match."),
    resume: str = typer.Option(
        "auto",
        help="A stored stage whose settings differ from this command's: 'auto' recomputes it (and every stage "
        "after it), printing one line saying which settings changed; 'strict' refuses the run (exit 2, nothing "
        "written).",
    ),
    device: str = typer.Option("cpu", help="torch device of every stage: cpu, cuda or cuda:N."),
) -> None:
    """Run the P3 pipeline and write results.json / results.md to OUT.

    Resumable: each stage file (models.json, sweep.json, placement.json, quant.json, perchip.json) records the
    settings that determine it. Rerun with the same settings, a stage is reused; with other settings it is
    recomputed, and so are the stages after it (or, with --resume strict, the run is refused). Tables and labels
    come from the stored settings. Every option is checked before anything is written to OUT.
    """
    from xbarlab.papers.p3 import P3Config, prepare_p3, run_p3

    dev = _check_device(device)
    try:
        cfg = P3Config(
            model=model,
            dataset=dataset,
            data_dir=data_dir,
            out_dir=str(out),
            hardware_overrides=_parse_overrides(overrides),
            sigmas=_parse_floats(sigmas, "--sigmas"),
            target_sigma=target_sigma,
            chips=chips,
            test_images=test_images,
            sweep_images=sweep_images,
            val_images=val_images,
            lipschitz_checkpoint=lipschitz_checkpoint,
            lipschitz_kind=lipschitz_kind,
            lipschitz_beta=beta,
            lipschitz_epochs=lipschitz_epochs,
            lipschitz_lr=lipschitz_lr,
            comp_steps=comp_steps,
            comp_lr=comp_lr,
            comp_loss=comp_loss,
            budget_pct=budget,
            penalty=penalty,
            cost_metric=cost_metric,
            rl_episodes=rl_episodes,
            search_chips=search_chips,
            greedy_mode=greedy_mode,
            random_samples=random_samples,
            comp_pool=comp_pool,
            comp_batch_size=comp_batch_size,
            quant_tolerance=quant_tolerance,
            quant_bits_per_cell=_ints(quant_bits_per_cell, "--quant-bits-per-cell"),
            quant_adc_bits=_ints(quant_adc_bits, "--quant-adc-bits"),
            quant_max_evaluations=quant_max_evaluations,
            quant_chips=quant_chips,
            quant_images=quant_images,
            perchip_steps=perchip_steps,
            perchip_images=perchip_images,
            perchip_lr=perchip_lr,
            bn_images=bn_images,
            adc_fom_fj=adc_fom,
            adc_scaling=adc_scaling,
            stages=tuple(s.strip() for s in stages.split(",") if s.strip()),
            seed=seed,
            threads=threads,
            force=force,
            resume=resume,
            device=str(dev),
        )
        plan = prepare_p3(cfg)  # every check, nothing written yet
    except (ValueError, FileNotFoundError) as exc:
        raise ValueError(_as_option_error(str(exc))) from None
    run_p3(cfg, plan=plan)


@correctnet_app.command("train-lipschitz")
def train_lipschitz(
    model: str = typer.Option(
        ..., help="Start from this pretrained name / checkpoint path, or a registry model name with --from-scratch."
    ),
    dataset: str = typer.Option("fashion-mnist"),
    data_dir: str = typer.Option(None),
    out: Path = typer.Option(..., help="Run folder: resumable state and the final model checkpoint."),
    kind: str = typer.Option("parseval_neft", help="parseval_neft, parseval_matrix or spectral."),
    beta: float = typer.Option(5e-4, min=0.0, help="Penalty weight β."),
    lam: float = typer.Option(1.0, min=0.0, help="Gram target λ of the Parseval kinds."),
    epochs: int = typer.Option(5, min=1),
    lr: float = typer.Option(0.01, min=0.0),
    batch_size: int = typer.Option(128, min=1),
    weight_decay: float = typer.Option(5e-4, min=0.0),
    from_scratch: bool = typer.Option(False, help="Build MODEL from the registry instead of loading weights."),
    seed: int = typer.Option(0, min=0),
    threads: int = typer.Option(1, min=1),
    device: str = typer.Option("cpu", help="torch device of the training: cpu, cuda or cuda:N."),
) -> None:
    """Train with the Lipschitz penalty (loss = CE + β·penalty); the checkpoint is OUT/model."""
    import torch

    dev = _check_device(device)

    from xbarlab.data import dataset_info, get_dataset
    from xbarlab.mitigation.lipschitz import lipschitz_regularizer
    from xbarlab.models import build_model
    from xbarlab.papers.p3 import load_model
    from xbarlab.training import TrainConfig, train

    torch.set_num_threads(threads)
    info = dataset_info(dataset)
    if from_scratch:
        net = build_model(model, num_classes=info.num_classes, in_channels=info.input_shape[0])
        meta: dict[str, Any] = {}
    else:
        net, src_meta = load_model(model)
        meta = {"model": src_meta.get("model"), "model_kwargs": src_meta.get("model_kwargs"), "finetuned_from": model}
    reg = lipschitz_regularizer(kind, beta, lam=lam)
    meta.update({"dataset": info.name, "lipschitz": reg.describe()})
    result = train(
        net,
        get_dataset(info.name, "train", data_dir=data_dir),
        get_dataset(info.name, "test", data_dir=data_dir, augment=False),
        TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay, seed=seed),
        out_dir=out,
        regularizer=reg,
        metadata=meta,
        device=dev,
    )
    typer.echo(f"test accuracy {100 * (result.test_acc or 0):.2f} %; checkpoint {result.checkpoint}")


@correctnet_app.command("lipschitz")
def lipschitz(
    model: str = typer.Option(..., help="Pretrained name or checkpoint path."),
    kind: str = typer.Option("parseval_neft"),
    beta: float = typer.Option(5e-4, min=0.0),
    device: str = typer.Option("cpu", help="torch device of the power iterations: cpu, cuda or cuda:N."),
) -> None:
    """Per-layer σ_max (power iteration), the product bound and the penalty of a model."""
    from xbarlab.mitigation.lipschitz import layer_spectral_norms, lipschitz_regularizer, lipschitz_upper_bound
    from xbarlab.papers.p3 import load_model

    dev = _check_device(device)
    net, _ = load_model(model)
    net = net.to(dev)
    reg = lipschitz_regularizer(kind, beta)
    for name, sigma in layer_spectral_norms(net).items():
        typer.echo(f"{name:<32} σ_max = {sigma:.4f}")
    typer.echo(f"product bound: {lipschitz_upper_bound(net):.4g}")
    typer.echo(f"{kind} penalty: {float(reg.penalty(net).detach()):.6g} (× β = {float(reg(net).detach()):.6g})")


@correctnet_app.command("adc-energy")
def adc_energy(
    model: str = typer.Option(..., help="Pretrained name or checkpoint path."),
    sigma: float = typer.Option(0.0, min=0.0, help="Log-normal σ (does not change the energy)."),
    overrides: list[str] = typer.Option([], "--set", help="Hardware override dotted.key=value (repeatable)."),
    fom: float = typer.Option(5.0, min=0.0, help="Walden FOM, fJ per conversion step."),
    scaling: str = typer.Option("walden", help="walden (2^B) or schreier (4^B)."),
    separate_polarities: bool = typer.Option(False, help="Convert G+ and G− separately (×2 conversions)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the report as JSON."),
    device: str = typer.Option(
        "cpu", help="Checked like every --device; the count is exact on any device, so it runs on the CPU."
    ),
) -> None:
    """ADC conversions and energy per inference on the P3 hardware (with --set changes)."""
    from xbarlab.adc_power import ADCPowerModel, adc_energy_report
    from xbarlab.data import dataset_info
    from xbarlab.papers.p3 import load_model, p3_hardware

    _check_device(device)
    net, meta = load_model(model)
    shape = dataset_info(meta.get("dataset", "fashion-mnist")).input_shape
    import torch

    report = adc_energy_report(
        net,
        p3_hardware(sigma, _parse_overrides(overrides)),
        torch.zeros(1, *shape),
        ADCPowerModel(scaling=scaling, fom_fj_per_step=fom),
        separate_polarities=separate_polarities,
    )
    typer.echo(report.table())
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2))


def register(app: typer.Typer) -> None:
    """Add the ``correctnet`` command group to the ``xbarlab`` app."""
    app.add_typer(correctnet_app, name="correctnet")
