"""``xbarlab correctnet ...``: the P3 (CorrectNet / CorrectNet+) pipeline and its building blocks.

* ``run``: plain → Lipschitz → + compensation (RL placement) → + quantisation search, with a results table
  (settings: ``--config FILE|NAME`` and ``--set FIELD=VALUE``);
* ``configs``: the shipped P3 configs;
* ``train-lipschitz``: fine-tune a model (or train one from scratch) with a Lipschitz penalty;
* ``lipschitz``: per-layer spectral norms and penalties of a model;
* ``adc-energy``: ADC conversions and energy per inference of a model on a hardware configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from xbarlab.cli.core import _check_device, _parse_overrides

__all__ = ["register"]

correctnet_app = typer.Typer(
    help="CorrectNet / CorrectNet+ (P3): Lipschitz training, compensation with RL placement, ADC power search.",
    no_args_is_help=True,
)


@correctnet_app.command("run")
def run(
    config: str = typer.Option(
        None,
        "--config",
        help="P3 config: a YAML file of P3Config fields or a shipped name (`xbarlab correctnet configs`); "
        "default: the P3Config defaults.",
    ),
    sets: list[str] = typer.Option(
        [],
        "--set",
        help="Change one setting: FIELD=VALUE (e.g. chips=8, sigmas=[0,0.5], model=resnet20-fmnist) or "
        "hardware_overrides.SECTION.KEY=VALUE (e.g. hardware_overrides.adc.bits=6); repeatable.",
    ),
    device: str = typer.Option(None, help="torch device of every stage: cpu, cuda or cuda:N (default: the config's)."),
    out: Path = typer.Option(None, help="Output folder, resumable (default: the config's out_dir)."),
    resume: str = typer.Option(
        None,
        help="A stored stage whose settings differ: 'auto' recomputes it (and every stage after it), printing one "
        "line saying which settings changed; 'strict' refuses the run (exit 2, nothing written).",
    ),
    force: bool = typer.Option(False, "--force", help="Recompute every stage run, even when its settings match."),
    quiet: bool = typer.Option(False, "--quiet", help="Print only the results table, not the progress lines."),
) -> None:
    """Run the P3 pipeline and write results.json / results.md to the output folder.

    The settings come from --config (docs/correctnet.md lists every field with its unit and default) and --set.
    Resumable: each stage file (models.json, sweep.json, placement.json, quant.json, perchip.json) records the
    settings that determine it. Rerun with the same settings, a stage is reused; with other settings it is
    recomputed, and so are the stages after it (or, with --resume strict, the run is refused). Every setting is
    checked before anything is written.
    """
    import dataclasses

    from xbarlab.papers.p3 import P3Config, config_path, prepare_p3, run_p3
    from xbarlab.yamlio import parse_assignments

    if device is not None:
        device = str(_check_device(device))
    try:
        overrides = parse_assignments(sets, example="chips=8")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        if config is None:
            cfg = P3Config.from_dict({}, overrides=overrides)
        else:
            cfg = P3Config.from_yaml(config_path(config), overrides)
        run_flags = {"out_dir": None if out is None else str(out), "device": device, "resume": resume}
        changes: dict[str, object] = {k: v for k, v in run_flags.items() if v is not None}
        if force:
            changes["force"] = True
        cfg = dataclasses.replace(cfg, **changes)  # type: ignore[arg-type]
        plan = prepare_p3(cfg)  # every check, nothing written yet
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    results = run_p3(cfg, plan=plan, log=(lambda _msg: None) if quiet else None)
    if quiet and "table" in results:
        typer.echo(results["table"])


@correctnet_app.command("configs")
def configs() -> None:
    """List the shipped P3 configs (`--config NAME`) and the results each one made."""
    from xbarlab.papers.p3 import config_path, list_configs

    for name in list_configs():
        first = config_path(name).read_text().splitlines()[0].lstrip("# ").strip()
        typer.echo(f"{name:<32} {first}")


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
