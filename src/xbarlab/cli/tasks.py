"""``xbarlab p2 ...``: detection and segmentation canvases, training, and P2 / drift evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from xbarlab.cli import options as opt
from xbarlab.cli.core import _check_device, _parse_floats

__all__ = ["register"]


def _threads(threads: int) -> None:
    import torch

    if threads < 1:
        raise typer.BadParameter(f"--threads: invalid value {threads}; allowed: >= 1")
    torch.set_num_threads(threads)


def _check_train_inputs(task: str, dataset: str, init_from: str | None, out: Path) -> None:
    """The object data set, the start model and the run folder, checked before anything is written."""
    from xbarlab.data import dataset_info
    from xbarlab.papers.p2.train_tasks import load_task_model, shipped_path

    with opt.named("--dataset"):
        dataset_info(dataset)
    if init_from:
        with opt.named("--init-from"):
            load_task_model(shipped_path(task) if init_from == "shipped" else Path(init_from))
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"--out {out}: is a file; allowed: a run folder (created when missing)")


def _train(task: str, **kw: Any) -> None:
    from xbarlab.papers.p2.train_tasks import TaskTrainConfig, train_task

    dev = _check_device(kw.pop("device"))
    _threads(kw.pop("threads"))
    out = kw.pop("out") or Path("runs") / f"{task}_fmnist-canvas"
    resume = kw.pop("resume")
    stop_after = kw.pop("stop_after")
    cfg = TaskTrainConfig(task=task, **kw)
    _check_train_inputs(task, cfg.dataset, cfg.init_from, Path(out))
    meta = train_task(cfg, out, resume=resume, stop_after=stop_after, device=dev)
    if meta is not None:
        typer.echo(f"{task}: test {meta['metric']} = {meta['test_metric']:.4f} → {Path(out) / 'model.safetensors'}")


def _run_p2(
    make_sweeps: Any,
    models: str,
    values: tuple[float, ...],
    keep_digital: str,
    device: str,
    threads: int,
    out: Path,
    **options: Any,
) -> None:
    """Write a P2 experiment's sweeps from the command's options (refused with the option named), run, report."""
    from xbarlab.papers.p2.experiments import parse_models, run_p2_sweeps

    dev = _check_device(device)
    _threads(threads)
    try:
        texts = make_sweeps(
            parse_models([m.strip() for m in models.split(",") if m.strip()]),
            values,
            keep_digital=[k.strip() for k in keep_digital.split(",") if k.strip()],
            device=str(dev),
            **options,
        )
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    report = run_p2_sweeps(texts, out / "p2.sqlite", out, threads=threads)
    typer.echo(f"store: {out / 'p2.sqlite'}, report: {report.markdown}")


def register(app: typer.Typer) -> None:
    """Add the ``p2`` command group (train-detector, train-segmenter, evaluate, drift) to ``app``."""
    p2 = typer.Typer(
        help="P2 beyond classification: canvas detection/segmentation under weight noise and drift.",
        no_args_is_help=True,
    )

    def train_options(task: str) -> Any:
        def command(
            epochs: int = typer.Option(10 if task == "detector" else 8, callback=opt.positive_int, help="Epochs."),
            train_count: int = typer.Option(
                2500, callback=opt.positive_int, help="Training canvases (Fashion-MNIST train split)."
            ),
            test_count: int = typer.Option(
                500, callback=opt.positive_int, help="Test canvases (Fashion-MNIST test split)."
            ),
            batch_size: int = typer.Option(32, callback=opt.positive_int, help="Batch size."),
            lr: float = typer.Option(3e-3, callback=opt.positive, help="Adam learning rate (cosine decay per step)."),
            weight_decay: float = typer.Option(1e-4, callback=opt.non_negative, help="Weight decay."),
            width: int = typer.Option(32, callback=opt.positive_int, help="Channel width."),
            seed: int = typer.Option(0, callback=opt.seed, help="Training seed."),
            data_seed: int = typer.Option(0, callback=opt.seed, help="Canvas seed (test canvases use data_seed + 1)."),
            dataset: str = typer.Option("fashion-mnist", help="Object source: fashion-mnist, mnist, ..."),
            noise_inject: float = typer.Option(
                None,
                "--noise-inject",
                callback=opt.positive,
                help="Noise-injection training: η (σ = η·max|W| per layer, Joshi et al.).",
            ),
            clip_alpha: float = typer.Option(
                None, callback=opt.non_negative, help="With --noise-inject: clip weights to ±α·std(W) per step."
            ),
            init_from: str = typer.Option(None, help="Start from a model: 'shipped' or a path (fine-tuning)."),
            out: Path = typer.Option(None, "--out", "-o", help="Run directory (default runs/<task>_fmnist-canvas)."),
            resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from <out>/state."),
            stop_after: int = typer.Option(
                None, callback=opt.positive_int, help="Run at most N epochs now (rerun to continue)."
            ),
            threads: int = typer.Option(1, callback=opt.positive_int, help="Torch threads."),
            device: str = typer.Option("cpu", "--device", help="Torch device of the training: cpu, cuda, cuda:N."),
        ) -> None:
            _train(
                task,
                epochs=epochs,
                train_count=train_count,
                test_count=test_count,
                batch_size=batch_size,
                lr=lr,
                weight_decay=weight_decay,
                width=width,
                seed=seed,
                data_seed=data_seed,
                dataset=dataset,
                noise_inject=noise_inject,
                clip_alpha=clip_alpha,
                init_from=init_from,
                out=out,
                resume=resume,
                stop_after=stop_after,
                threads=threads,
                device=device,
            )

        command.__doc__ = f"Train the canvas {task} (resumable; safetensors + JSON checkpoints)."
        return command

    p2.command("train-detector")(train_options("detector"))
    p2.command("train-segmenter")(train_options("segmenter"))

    @p2.command("evaluate")
    def evaluate_cmd(
        models: str = typer.Option(
            "detector,segmenter", help="Comma-separated: detector, segmenter (shipped) or label=path/to/model."
        ),
        etas: str = typer.Option("0.02,0.05,0.1,0.2", help="Noise levels η (σ = η·max|W| per layer)."),
        chips: int = typer.Option(4, callback=opt.positive_int, help="Chip instances per noise level."),
        seed: int = typer.Option(0, callback=opt.seed, help="Chip k uses seed + k."),
        test_count: int = typer.Option(500, callback=opt.positive_int, help="Test canvases."),
        calib_batches: int = typer.Option(
            20, callback=opt.positive_int, help="BN-adaptation batches (offline, reading A)."
        ),
        calib_batch_size: int = typer.Option(64, callback=opt.positive_int, help="BN-adaptation batch size."),
        eval_batch_size: int = typer.Option(
            64, callback=opt.positive_int, help="Test batch size (also online BN, reading B)."
        ),
        small_batch_size: int = typer.Option(
            4, callback=opt.positive_int, help="Small test batch for online BN (bn_online_small)."
        ),
        dataset: str = typer.Option("fashion-mnist", help="Object source data set."),
        keep_digital: str = typer.Option("", help="Comma-separated layer-name patterns kept digital (e.g. head)."),
        out: Path = typer.Option(Path("reports/p2_tasks"), "--out", "-o", help="Output folder."),
        threads: int = typer.Option(1, callback=opt.positive_int, help="Torch threads."),
        device: str = typer.Option("cpu", "--device", help="Torch device of the chips: cpu, cuda, cuda:N."),
    ) -> None:
        """Clean / noisy / BN-adapted (offline, online) metrics over noise levels and chips, as sweeps (resumable).

        Writes the results store ``<out>/p2.sqlite`` and the report ``<out>/report.md`` (``xbarlab report``
        re-renders it).
        """
        from xbarlab.papers.p2.experiments import noise_sweeps

        _run_p2(
            noise_sweeps,
            models,
            _parse_floats(etas, "--etas"),
            keep_digital,
            device,
            threads,
            out,
            chips=chips,
            seed=seed,
            test_count=test_count,
            calib_batches=calib_batches,
            calib_batch_size=calib_batch_size,
            eval_batch_size=eval_batch_size,
            small_batch_size=small_batch_size,
            dataset=dataset,
        )

    @p2.command("drift")
    def drift_cmd(
        models: str = typer.Option("segmenter,detector", help="Comma-separated models (as for evaluate)."),
        preset: str = typer.Option("fefet", help="Hardware preset with drift (P1 devices: fefet, pcm-i, ...)."),
        times: str = typer.Option("1,1e2,1e4,1e6,1e8,1e10", help="Read times t in seconds since programming."),
        chips: int = typer.Option(3, callback=opt.positive_int, help="Chip instances per time."),
        seed: int = typer.Option(0, callback=opt.seed, help="Chip k uses seed + k."),
        test_count: int = typer.Option(500, callback=opt.positive_int, help="Test canvases."),
        readout: str = typer.Option("forward", help="Drift-compensation read-out: forward, weights, conductance."),
        dataset: str = typer.Option("fashion-mnist", help="Object source data set."),
        keep_digital: str = typer.Option("", help="Comma-separated layer-name patterns kept digital (e.g. head)."),
        out: Path = typer.Option(Path("reports/p2_tasks"), "--out", "-o", help="Output folder."),
        threads: int = typer.Option(1, callback=opt.positive_int, help="Torch threads."),
        device: str = typer.Option("cpu", "--device", help="Torch device of the chips: cpu, cuda, cuda:N."),
    ) -> None:
        """Drift: none vs global / per-column drift compensation vs BN adaptation / online BN, as sweeps (resumable).

        Every conv is on crossbars unless named in ``--keep-digital``. Writes ``<out>/p2.sqlite`` and
        ``<out>/report.md``.
        """
        from xbarlab.papers.p2.experiments import drift_sweeps

        _run_p2(
            drift_sweeps,
            models,
            _parse_floats(times, "--times"),
            keep_digital,
            device,
            threads,
            out,
            preset=preset,
            chips=chips,
            seed=seed,
            test_count=test_count,
            readout=readout,
            dataset=dataset,
        )

    app.add_typer(p2, name="p2")
