"""``xbarlab models``, ``xbarlab datasets`` and ``xbarlab train``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import typer

from xbarlab.cli import options as opt

__all__ = ["register", "run_training"]


def run_training(
    *,
    model: str,
    dataset: str,
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.1,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    label_smoothing: float = 0.0,
    warmup_epochs: float = 0.0,
    optimizer: str = "sgd",
    seed: int = 0,
    width: float = 1.0,
    out: Path | None = None,
    data_dir: Path | None = None,
    device: str = "cpu",
    resume: bool = True,
    augment: bool = True,
    threads: int | None = None,
    channels_last: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    command: str | None = None,
    init_from: str | None = None,
    lipschitz: str | None = None,
    lipschitz_beta: float | None = None,
    noise_inject: float | None = None,
    clip_alpha: float | None = 2.0,
) -> Any:
    """Build model and data from the registries and run :func:`xbarlab.training.train` (the CLI's work).

    Robustness options (they compose):
        init_from: start from a shipped pre-trained model (``resnet20-fmnist``) or a checkpoint path (fine-tuning).
        lipschitz: add the Lipschitz regulariser of CorrectNet (P3): ``parseval_neft``, ``parseval_matrix`` or
            ``spectral``, weight ``lipschitz_beta`` (default 5e-4, NeFT's value).
        noise_inject: hardware-aware training (Joshi et al. 2020): forward-only Gaussian weight noise with
            σ = η·max|W| per layer, and weights clipped to ±``clip_alpha``·std(W) after every step (None: no clip).
    """
    import torch
    from rich.console import Console

    from xbarlab.data import dataset_info, get_dataset
    from xbarlab.data.check import check_model_input
    from xbarlab.models import build_model, model_spec
    from xbarlab.training import TrainConfig, train

    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    info = dataset_info(dataset)
    spec = model_spec(model)
    kwargs: dict[str, Any] = {"num_classes": info.num_classes, "in_channels": info.input_shape[0]}
    if "width" in spec.default_kwargs:
        kwargs["width"] = width
    kwargs.update(model_kwargs or {})
    console = Console(stderr=True)
    train_set = get_dataset(info.name, "train", data_dir=data_dir, augment=augment)
    test_set = get_dataset(info.name, "test", data_dir=data_dir, augment=False)
    torch.manual_seed(seed)
    net = build_model(spec.name, **kwargs)
    check_model_input(net, test_set, {"dataset": info.name}, field="dataset")  # e.g. model_kwargs num_classes
    resume_key: dict[str, Any] = {}
    if init_from is not None:
        _load_initial_weights(net, init_from)
        resume_key["init_from"] = init_from
    regularizer = None
    if lipschitz is not None:
        from xbarlab.mitigation.lipschitz import DEFAULT_BETA, lipschitz_regularizer

        regularizer = lipschitz_regularizer(lipschitz, DEFAULT_BETA if lipschitz_beta is None else lipschitz_beta)
        resume_key["lipschitz"] = regularizer.describe()
    elif lipschitz_beta is not None:
        raise ValueError("lipschitz_beta: only valid together with lipschitz (e.g. --lipschitz parseval_neft)")
    injection = None
    if noise_inject is not None:
        from xbarlab.mitigation.noise_injection import NoiseInjection

        injection = NoiseInjection(net, eta=noise_inject, alpha=clip_alpha)
        resume_key["noise_injection"] = injection.config()
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        label_smoothing=label_smoothing,
        warmup_epochs=warmup_epochs,
        optimizer=optimizer,
        seed=seed,
        channels_last=channels_last and torch.device(device).type == "cpu",
    )
    out_dir = out if out is not None else Path("runs") / f"{spec.name}_{info.name}_s{seed}"
    n_params = sum(p.numel() for p in net.parameters())
    console.print(
        f"[bold]train[/] {spec.name} {kwargs} ({n_params:,} parameters) on {info.name} "
        f"({len(train_set):,} train / {len(test_set):,} test) → {out_dir}, {torch.get_num_threads()} threads"
    )
    metadata = {
        "model": spec.name,
        "model_kwargs": kwargs,
        "dataset": info.name,
        "augmentation": train_set.augmentation.describe() if train_set.augmentation else "none",
        "num_parameters": n_params,
        "command": command or shlex.join(["xbarlab", *sys.argv[1:]]),
    }
    metadata.update(resume_key)
    callbacks = []
    if injection is not None:
        injection.attach()
        callbacks.append(injection.callback())
    try:
        result = train(
            net,
            train_set,
            test_set,
            config,
            out_dir=out_dir,
            resume=resume,
            device=device,
            progress=progress,
            metadata=metadata,
            console=console,
            regularizer=regularizer,
            callbacks=callbacks,
            resume_key=resume_key or None,
        )
    finally:
        if injection is not None:
            injection.detach()
    if result.checkpoint is not None:
        console.print(
            f"[bold green]done[/]: test accuracy {result.test_acc:.4f}, wall time {result.wall_time_s:.0f}s, "
            f"checkpoint {result.checkpoint.with_suffix('')}.{{safetensors,json}}"
        )
    return result


def _load_initial_weights(net: Any, source: str) -> None:
    """Copy the weights of a shipped model name or a checkpoint path into ``net`` (same architecture required)."""
    from xbarlab.checkpoint import CheckpointError, list_pretrained, load_checkpoint, load_pretrained

    if source.strip().lower() in list_pretrained():
        src, _ = load_pretrained(source)
    else:
        src, _ = load_checkpoint(source)
    try:
        net.load_state_dict(src.state_dict())
    except RuntimeError as exc:
        raise CheckpointError(f"init_from: {source!r} does not match the model being trained: {exc}") from exc


def register(app: typer.Typer) -> None:
    """Add the ``models``, ``datasets`` and ``train`` commands to ``app``."""

    @app.command("models")
    def models_cmd() -> None:
        """List the models of the model zoo."""
        from rich.console import Console
        from rich.table import Table

        from xbarlab.models import list_models

        table = Table(title="xbarlab models")
        table.add_column("name", style="bold")
        table.add_column("description")
        table.add_column("default arguments")
        for spec in list_models():
            table.add_row(spec.name, spec.description, ", ".join(f"{k}={v}" for k, v in spec.default_kwargs.items()))
        Console().print(table)

    @app.command("datasets")
    def datasets_cmd() -> None:
        """List the data sets, their shapes, normalisation, augmentation and default location."""
        from rich.console import Console
        from rich.table import Table

        from xbarlab.data import list_datasets

        table = Table(title="xbarlab datasets")
        for col in ("name", "classes", "input", "mean / std", "train augmentation", "default location"):
            table.add_column(col)
        for info in list_datasets():
            table.add_row(
                info.name,
                str(info.num_classes),
                "×".join(map(str, info.input_shape)),
                f"{', '.join(f'{m:.4f}' for m in info.mean)} / {', '.join(f'{s:.4f}' for s in info.std)}",
                info.augmentation,
                info.default_dir or "--data-dir",
            )
        Console().print(table)

    @app.command("train")
    def train_cmd(
        model: str = typer.Option(..., "--model", "-m", help="Model name (see `xbarlab models`)."),
        dataset: str = typer.Option(..., "--dataset", "-d", help="Data set name (see `xbarlab datasets`)."),
        epochs: int = typer.Option(20, "--epochs", callback=opt.positive_int, help="Total number of epochs."),
        batch_size: int = typer.Option(128, "--batch-size", callback=opt.positive_int),
        lr: float = typer.Option(
            0.1, "--lr", callback=opt.positive, help="Peak learning rate (cosine-annealed per iteration)."
        ),
        weight_decay: float = typer.Option(5e-4, "--weight-decay", callback=opt.non_negative),
        momentum: float = typer.Option(0.9, "--momentum", callback=opt.open_fraction),
        label_smoothing: float = typer.Option(0.0, "--label-smoothing", callback=opt.open_fraction),
        warmup_epochs: float = typer.Option(
            0.0, "--warmup-epochs", callback=opt.non_negative, help="Linear learning-rate warm-up."
        ),
        optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (SGD + momentum) or adamw."),
        seed: int = typer.Option(0, "--seed", callback=opt.seed),
        width: float = typer.Option(1.0, "--width", callback=opt.positive, help="Channel width multiplier."),
        out: Path | None = typer.Option(None, "--out", help="Run directory (default runs/<model>_<data>_s<seed>)."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder with the data set files."),
        device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
        resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from <out>/state if present."),
        augment: bool = typer.Option(True, "--augment/--no-augment", help="Train-time augmentation."),
        threads: int | None = typer.Option(
            None, "--threads", callback=opt.positive_int, help="torch CPU threads (default: torch's)."
        ),
        channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last", help="NHWC on CPU."),
        init_from: str | None = typer.Option(
            None, "--init-from", help="Start from a shipped model (e.g. resnet20-fmnist) or a checkpoint path."
        ),
        lipschitz: str | None = typer.Option(
            None, "--lipschitz", help="Lipschitz regulariser (CorrectNet): parseval_neft, parseval_matrix, spectral."
        ),
        lipschitz_beta: float | None = typer.Option(
            None, "--lipschitz-beta", callback=opt.positive, help="Weight β of the Lipschitz penalty (default 5e-4)."
        ),
        noise_inject: float | None = typer.Option(
            None,
            "--noise-inject",
            callback=opt.above(0.0, "eta"),
            help="Noise-injection training: weight noise σ = ETA·max|W| (e.g. 0.038).",
        ),
        clip_alpha: float | None = typer.Option(
            None,
            "--clip-alpha",
            callback=opt.non_negative,
            help="With --noise-inject: clip weights to ±A·std(W) after each step (default 2; 0: off).",
        ),
    ) -> None:
        """Train a zoo model; checkpoints every epoch to --out (resumable), final model.{safetensors,json}."""
        from xbarlab.checkpoint import CheckpointError
        from xbarlab.cli.core import _check_device
        from xbarlab.data import DatasetError

        _check_device(device)
        if out is not None and out.exists() and not out.is_dir():
            typer.echo(f"error: --out: {out} is a file; allowed: a run folder (created when missing)", err=True)
            raise typer.Exit(code=2)

        if noise_inject is None and clip_alpha is not None:
            typer.echo("error: --clip-alpha only applies with --noise-inject ETA", err=True)
            raise typer.Exit(code=2)
        try:
            from xbarlab.data import dataset_info
            from xbarlab.models import model_spec

            with opt.named("--model"):
                model_spec(model)
            with opt.named("--dataset"):
                dataset_info(dataset)
            run_training(
                model=model,
                dataset=dataset,
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                weight_decay=weight_decay,
                momentum=momentum,
                label_smoothing=label_smoothing,
                warmup_epochs=warmup_epochs,
                optimizer=optimizer,
                seed=seed,
                width=width,
                out=out,
                data_dir=data_dir,
                device=device,
                resume=resume,
                augment=augment,
                threads=threads,
                channels_last=channels_last,
                init_from=init_from,
                lipschitz=lipschitz,
                lipschitz_beta=lipschitz_beta,
                noise_inject=noise_inject,
                clip_alpha=2.0 if clip_alpha is None else (None if clip_alpha == 0 else clip_alpha),
            )
        except (DatasetError, CheckpointError, KeyError, ValueError, TypeError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            typer.echo(f"error: {msg}", err=True)
            raise typer.Exit(code=2) from exc
        except KeyboardInterrupt:
            typer.echo("interrupted: rerun the same command (with --resume, the default) to continue", err=True)
            raise typer.Exit(code=130) from None
