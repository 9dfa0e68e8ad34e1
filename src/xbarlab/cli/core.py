"""Core commands: ``presets``, ``evaluate``, ``bench``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from xbarlab.cli import options as opt

console = Console()


def _load_hardware(spec: str) -> Any:
    """``--hw``: an existing hardware YAML file, else a preset name (:func:`xbarlab.hardware.preset_file`)."""
    from xbarlab.datafiles import UnknownDataFileError
    from xbarlab.hardware import ConfigError, HardwareConfig, preset_file
    from xbarlab.presets import load_preset

    try:
        path = preset_file(spec, key="--hw", accept_paths=True)
    except UnknownDataFileError as exc:  # neither a file nor a preset: the presets are listed
        raise typer.BadParameter(str(exc)) from None
    if path != Path(spec):  # the file of a shipped preset
        return load_preset(path.stem)
    try:
        return HardwareConfig.from_yaml(path)
    except ConfigError as exc:  # a field of the file: name the file too
        raise ValueError(f"--hw {path}: {exc}") from exc


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    """``--set`` hardware changes by :func:`xbarlab.yamlio.parse_assignments` (values read as YAML 1.2)."""
    from xbarlab.yamlio import parse_assignments

    try:
        return parse_assignments(items, example="read_noise.sigma=0.1")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _check_device(device: str) -> Any:
    """``--device`` as a ``torch.device``, or a ``typer.BadParameter`` before any work when it cannot be used."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise typer.BadParameter(f"--device: invalid value {device!r}; allowed: cpu, cuda, cuda:N") from exc
    if dev.type not in ("cpu", "cuda"):
        raise typer.BadParameter(f"--device: invalid value {device!r}; allowed: cpu, cuda, cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise typer.BadParameter(
                f"--device: {device} requested but torch.cuda.is_available() is False (CUDA is not available "
                "here); allowed: cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise typer.BadParameter(
                f"--device {device}: no such GPU; allowed: cuda:0 … cuda:{torch.cuda.device_count() - 1}"
            )
    return dev


def _check_out(out: Path | None, *, name: str = "--out") -> None:
    """Refuse an ``--out`` file path that cannot be written, without writing anything (checked before any work).

    The nearest existing ancestor must be a writable folder; the path itself must not be a folder.
    """
    if out is None:
        return
    if out.is_dir():
        raise typer.BadParameter(f"{name} {out}: is a folder; allowed: a file path")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise typer.BadParameter(f"{name} {out}: cannot create its folder ({parent} is a file, not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"{name} {out}: folder {parent} is not writable (permission denied)")


def _prepare_out(out: Path | None, *, name: str = "--out") -> None:
    """Create the folder of an ``--out`` file once all inputs are checked (an unwritable path fails here)."""
    if out is None:
        return
    _check_out(out, name=name)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise typer.BadParameter(f"{name} {out}: cannot create its folder ({exc.strerror})") from exc


def _run_settings(hardware: str, overrides: list[str], **settings: Any) -> dict[str, Any]:
    """What a result file records about the command that produced it (hardware as given, --set overrides, …)."""
    return {"hardware": hardware, "overrides": list(overrides), **settings}


def _spread(n: int, std: float, low: float, high: float, bounded: bool = False) -> tuple[str, str]:
    """Table cells for the std and the 95 % CI: undefined ("–") for a single chip; ``†``: CI limited to 0–100 %."""
    from xbarlab.stats import BOUNDED_MARK

    if n < 2:
        return "–", "– (1 chip)"
    return f"{std:.2f}", f"[{low:.2f}, {high:.2f}]" + (BOUNDED_MARK if bounded else "")


def _parse_floats(text: str, name: str) -> tuple[float, ...]:
    """``"0.1,0.2"`` → ``(0.1, 0.2)``; a ``typer.BadParameter`` naming the option for bad or empty input."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"{name}: invalid value {text!r}; allowed: comma-separated numbers") from exc
    if not values:
        raise typer.BadParameter(f"{name}: invalid value {text!r}; allowed: at least one number")
    return values


def presets(
    name: str = typer.Argument(None, help="Show one preset in full (YAML)."),
) -> None:
    """List hardware presets with their physical parameters and units."""
    from xbarlab.presets import list_presets, load_preset

    if name:
        console.print(load_preset(name).to_yaml())
        return
    table = Table(title="xbarlab hardware presets (details: xbarlab presets NAME)")
    table.add_column("preset", no_wrap=True)
    for col in ("R_on (kΩ)", "ON/OFF", "G_on/G_off (µS)", "weights", "read noise", "drift", "DAC/ADC", "other"):
        table.add_column(col)
    for preset in list_presets():
        hw = load_preset(preset)
        w, dev = hw.weights, hw.device
        mapped = w.quantize or hw.programming.kind != "none" or hw.read_noise.kind != "none"
        rn = hw.read_noise
        if rn.kind == "none":
            noise = "–"
        elif rn.kind == "relative_to_G":
            noise = f"{rn.sigma}·G" + (f" + {rn.offset_us} µS" if rn.offset_us else "")
        else:
            noise = f"{rn.kind} ({rn.sigma})"
        dr = hw.drift
        drift_txt = "–" if dr.kind == "none" else (f"ν {dr.nu_mean}" if dr.kind == "power_law" else "ν(g)")
        if not w.quantize:
            weights = "float"
        elif w.noise_granularity == "weight":
            weights = f"{w.bits}b on one cell, noise per weight, {w.mapping[:4]}."
        else:
            weights = f"{w.bits}b as {hw.num_slices}×{w.bits_per_cell}b cells, {w.mapping[:4]}."
        adc = f"{hw.dac.bits or '–'} / {hw.adc.bits or '–'} b"
        other = [f"{hw.crossbar.rows}×{hw.crossbar.cols}"]
        if hw.programming.kind != "none":
            other.append("prog. noise")
        if hw.parasitics.enabled:
            other.append("IR drop")
        if hw.keep_digital:
            other.append("classifier digital")
        table.add_row(
            preset,
            f"{dev.r_on_ohm / 1e3:.4g}" if mapped else "–",
            f"{dev.on_off_ratio:g}" if mapped else "–",
            f"{dev.g_on_us:.3g} / {dev.g_off_us:.3g}" if mapped else "–",
            weights,
            noise,
            drift_txt,
            adc,
            ", ".join(other),
        )
    console.print(table)
    for preset, description in list_presets().items():
        console.print(f"[bold]{preset}[/]: {description}")


def evaluate(
    hardware: str = typer.Option(..., "--hw", help="Preset name or hardware YAML file."),
    checkpoint: str = typer.Option(None, help="Checkpoint path (without suffix) written by `xbarlab train`."),
    pretrained: str = typer.Option(None, help="Name of a shipped pretrained model (see docs/training.md)."),
    dataset: str = typer.Option(None, help="Data set (default: the checkpoint's)."),
    data_dir: str = typer.Option(None, help="Folder with the data set files."),
    chips: int = typer.Option(5, callback=opt.positive_int, help="Number of chip instances."),
    seed: int = typer.Option(0, callback=opt.seed, help="Chip k is programmed with seed + k."),
    t_seconds: float = typer.Option(
        None, "--time", callback=opt.non_negative, help="Read the chips at this time since programming (s)."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Hardware override dotted.key=value (repeatable)."),
    batch_size: int = typer.Option(256, callback=opt.positive_int),
    max_test: int = typer.Option(None, callback=opt.positive_int, help="Use only the first N test samples."),
    calib_batches: int = typer.Option(
        4, callback=opt.positive_int, help="Batches of training data for DAC/ADC calibration."
    ),
    calib_batch_size: int = typer.Option(
        128, callback=opt.positive_int, help="Images per calibration batch (128, as in sweeps)."
    ),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    out: Path = typer.Option(None, help="Write the results as JSON here."),
) -> None:
    """Evaluate a trained model on N simulated chip instances: mean, std and 95% CI of the accuracy."""
    from torch.utils.data import Subset

    from xbarlab import checkpoint as ckpt
    from xbarlab.data import get_dataset, make_loader
    from xbarlab.data.check import check_model_input
    from xbarlab.evaluation import accuracy, evaluate_chips, seeded_calibration
    from xbarlab.jsonio import write_json
    from xbarlab.models import channels_last

    if (checkpoint is None) == (pretrained is None):
        raise typer.BadParameter("--checkpoint/--pretrained: give exactly one of the two")
    dev = _check_device(device)
    _check_out(out)
    hw = _load_hardware(hardware)
    if overrides:
        hw = hw.override(_parse_overrides(overrides))
    with opt.named("--pretrained" if pretrained else "--checkpoint"):
        model, meta = ckpt.load_pretrained(pretrained) if pretrained else ckpt.load_checkpoint(checkpoint)
    ds_name = dataset or meta.get("dataset")
    if not ds_name:
        raise typer.BadParameter("--dataset: required; the checkpoint does not name its data set")
    with opt.named("--data-dir" if data_dir else "--dataset"):
        test = get_dataset(ds_name, "test", data_dir=data_dir)
        train = get_dataset(ds_name, "train", data_dir=data_dir, augment=False)
    check_model_input(model, test, meta, field="--dataset")
    if max_test:
        test = Subset(test, range(min(max_test, len(test))))  # type: ignore[assignment]
    _prepare_out(out)  # every option checked: only now is anything written
    test_loader = make_loader(test, batch_size, device=dev)
    calib_loader = seeded_calibration(train, calib_batch_size)  # chip seed s: the same images in every run
    model = channels_last(model).to(dev)  # zoo models: NHWC convolutions, 25–35 % faster on CPU
    clean = accuracy(model, test_loader, device=dev)
    result = evaluate_chips(
        model,
        hw,
        test_loader,
        chips=chips,
        seed=seed,
        calib_loader=calib_loader,
        calib_batches=calib_batches,
        t_seconds=t_seconds,
        device=dev,
    )
    s = result.summary
    table = Table(title=f"{meta.get('model', 'model')} on {ds_name}: {hw.name}, {chips} chips")
    for col in ("setting", "accuracy (%)", "std", "95% CI"):
        table.add_column(col)
    table.add_row("digital (clean)", f"{clean:.2f}", "", "")
    table.add_row(hw.name, f"{s.mean:.2f}", *_spread(s.n, s.std, s.ci95_low, s.ci95_high, s.bounded))
    console.print(table)
    if s.bounded:
        from xbarlab.stats import BOUNDED_NOTE

        console.print(BOUNDED_NOTE)
    if out:
        payload = {
            "clean_accuracy": clean,
            "dataset": ds_name,
            "settings": _run_settings(
                hardware,
                overrides,
                chips=chips,
                seed=seed,
                time_s=t_seconds,
                test_samples=len(test),
                batch_size=batch_size,
                calib_batches=calib_batches,
                calib_batch_size=calib_batch_size,
                device=device,
            ),
            "model": meta,
            **result.to_dict(),
            "hardware_config": hw.to_dict(),
        }
        write_json(out, payload)
        console.print(f"results written to {out}")


def bench(
    batch: int = typer.Option(256, callback=opt.positive_int),
    repeats: int = typer.Option(5, callback=opt.positive_int),
    device: str = typer.Option("cpu"),
    model: str = typer.Option("resnet20", help="resnet20 (3×32×32) or vit-tiny (1×28×28)"),
) -> None:
    """Digital vs analog forward of ResNet-20 (3×32×32) or the tiny ViT (1×28×28): median time and ratio."""
    from xbarlab.bench import bench_input_shape, peak_device_memory_mb, peak_rss_mb, run_forward_bench

    try:
        shape = bench_input_shape(model)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    _check_device(device)
    digital, rows = run_forward_bench(batch=batch, repeats=repeats, device=device, model_name=model, input_shape=shape)
    dims = "×".join(map(str, shape))
    table = Table(title=f"{model} forward, {dims}, batch {batch}, median of {repeats} ({device})")
    for col in ("configuration", "median (s)", "digital, paired (s)", "analog/digital", "program (s)"):
        table.add_column(col)
    table.add_row("digital", f"{digital:.3f}", "", "1.00", "")
    for r in rows:
        table.add_row(r.config, f"{r.median_s:.3f}", f"{r.digital_s:.3f}", f"{r.ratio:.2f}", f"{r.program_s:.2f}")
    console.print(table)
    console.print(f"peak RSS: {peak_rss_mb():.0f} MB")
    gpu_mb = peak_device_memory_mb(device)
    if gpu_mb is not None:
        console.print(f"peak {device} memory (PyTorch allocations): {gpu_mb:.0f} MB")


def register(app: typer.Typer) -> None:
    app.command("presets")(presets)
    app.command("evaluate")(evaluate)
    app.command("bench")(bench)
