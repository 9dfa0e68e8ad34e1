"""Mitigation and analysis commands: ``mitigate``, ``distortion``, ``cost``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from xbarlab.cli import options as opt
from xbarlab.cli.core import (
    _check_device,
    _check_out,
    _load_hardware,
    _parse_overrides,
    _prepare_out,
    _run_settings,
    _spread,
)
from xbarlab.mitigation.registry import get_mitigation, list_mitigations
from xbarlab.models import channels_last

console = Console()


def _write_json(out: Path, payload: dict[str, Any]) -> None:
    from xbarlab.jsonio import write_json

    write_json(out, payload)


def _model_and_data(pretrained: str | None, checkpoint: str | None, dataset: str | None, data_dir: str | None):
    from xbarlab import checkpoint as ckpt
    from xbarlab.data import get_dataset
    from xbarlab.data.check import check_model_input

    if (checkpoint is None) == (pretrained is None):
        raise typer.BadParameter("--checkpoint/--pretrained: give exactly one of the two")
    with opt.named("--pretrained" if pretrained else "--checkpoint"):
        model, meta = ckpt.load_pretrained(pretrained) if pretrained else ckpt.load_checkpoint(str(checkpoint))
    channels_last(model)  # zoo models: NHWC convolutions, 25–35 % faster on CPU
    name = dataset or meta.get("dataset")
    if not name:
        raise typer.BadParameter("--dataset: required; the checkpoint does not name its data set")
    with opt.named("--data-dir" if data_dir else "--dataset"):
        test = get_dataset(name, "test", data_dir=data_dir)
        train = get_dataset(name, "train", data_dir=data_dir)
    check_model_input(model, test, meta, field="--dataset")  # before any work
    return model, meta, name, train, test


def _method_options(methods: list[str], options: list[str]) -> dict[str, dict[str, Any]]:
    """The full option set of every ``--method`` from the mitigation registry (defaults updated with ``--option
    method.option=value``, values read as YAML 1.2 as in a sweep file's ``mitigation_options``).

    An unknown method is refused naming the registered ones; a bad option value with the registry's message
    (option, value, what is allowed), as a sweep refuses it; an ``--option`` for no selected method as well.
    """
    from xbarlab.mitigation.registry import check_options, check_trial_kind

    parsed = _parse_overrides(options)
    for key in parsed:  # every --option must name a selected method (a typo would otherwise be ignored)
        method, dot, name = key.partition(".")
        if method not in methods or not dot or not name:
            raise typer.BadParameter(
                f"--option {key}: allowed: method.option for a selected method ({', '.join(methods)})"
            )
    method_options: dict[str, dict[str, Any]] = {}
    for method in methods:
        with opt.named("--method"):
            get_mitigation(method)  # unknown: "unknown mitigation 'x'; allowed: <registered names>"
            check_trial_kind(method, "accuracy")  # xbarlab mitigate runs accuracy trials
        prefix = f"{method}."
        with opt.named("--option"):
            method_options[method] = check_options(
                method, {k[len(prefix) :]: v for k, v in parsed.items() if k.startswith(prefix)}
            )
    return method_options


def _import_plugins(plugins: list[str]) -> None:
    """Import ``--plugin`` modules as a sweep imports its ``plugins`` (they register their mitigations)."""
    from xbarlab.experiments.registry import import_plugins

    for module in plugins:
        try:
            import_plugins([module])
        except ImportError as exc:
            raise typer.BadParameter(f"--plugin {module}: cannot import it: {exc.__cause__ or exc}") from exc


def mitigate(
    hardware: str = typer.Option(..., "--hw", help="Preset name or hardware YAML file."),
    methods: list[str] = typer.Option(
        ["none", "bn_adapt", "bn_finetune"],
        "--method",
        help="Mitigation(s) from the registry shared with sweeps (repeatable): "
        + ", ".join(list_mitigations("accuracy"))
        + " (and those a --plugin registers).",
    ),
    options: list[str] = typer.Option(
        [],
        "--option",
        help="method.option=value (repeatable), e.g. bn_finetune.max_samples=2000: the method's options as in a "
        "sweep file's mitigation_options, same defaults and allowed values.",
    ),
    plugins: list[str] = typer.Option(
        [], "--plugin", help="Module imported first that registers mitigations (as a sweep file's plugins)."
    ),
    pretrained: str = typer.Option(None, help="Shipped pretrained model name."),
    checkpoint: str = typer.Option(None, help="Checkpoint path written by `xbarlab train`."),
    dataset: str = typer.Option(None),
    data_dir: str = typer.Option(None),
    chips: int = typer.Option(3, callback=opt.positive_int),
    seed: int = typer.Option(0, callback=opt.seed),
    t_seconds: float = typer.Option(
        None, "--time", callback=opt.non_negative, help="Read the chips at this time since programming (s)."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Hardware override dotted.key=value (repeatable)."),
    test_samples: int = typer.Option(None, callback=opt.positive_int, help="Use only the first N test samples."),
    batch_size: int = typer.Option(500, callback=opt.positive_int),
    device: str = typer.Option("cpu"),
    out: Path = typer.Option(None, help="Write the results as JSON here."),
) -> None:
    """Program N chips and compare mitigations on each (chip k is programmed, mitigated and tested on its own).

    Methods come from the mitigation registry and run as in a sweep trial: chip seed s gives a trial's numbers.
    """

    from xbarlab.data import make_loader
    from xbarlab.evaluation import accuracy, evaluate_chips, seeded_calibration
    from xbarlab.experiments.trial import trial_mitigation
    from xbarlab.mitigation.registry import require_bn

    dev = _check_device(device)
    _check_out(out)
    _import_plugins(plugins)
    method_options = _method_options(methods, options)  # all checked before any model or data is read
    hw = _load_hardware(hardware)
    if overrides:
        hw = hw.override(_parse_overrides(overrides))
    model, meta, ds_name, train, test = _model_and_data(pretrained, checkpoint, dataset, data_dir)
    for method in methods:
        if get_mitigation(method).requires_bn:
            with opt.named("--method"):
                require_bn(model, method)
    if test_samples:
        test = test.subset(list(range(min(test_samples, len(test)))))
    _prepare_out(out)  # every option checked: only now is anything written
    test_loader = make_loader(test, batch_size, device=dev)
    calib_loader = seeded_calibration(train.with_augmentation(None), 128)  # per chip seed, same for every method
    clean = accuracy(model.to(dev), test_loader, device=dev)
    # the resolved configuration of a sweep trial (xbarlab.experiments.spec) for these inputs, without the seed
    base_config: dict[str, Any] = {
        "model": {"pretrained": pretrained}
        if pretrained
        else {"checkpoint": str(Path(checkpoint).expanduser().resolve())},
        "data": {
            "dataset": ds_name,
            "data_dir": data_dir,
            "test_samples": test_samples,
            "batch_size": batch_size,
            "calib_batches": 4,
            "calib_batch_size": 128,
        },
        "hardware": hw.to_dict(),
        "drift_s": t_seconds,
        "device": str(dev),
        "plugins": list(plugins),
    }
    rows: list[dict[str, Any]] = []
    for method in methods:
        opts = method_options[method]
        config = {**base_config, "mitigation": {"name": method, "options": opts}}
        result = evaluate_chips(
            model,
            hw,
            test_loader,
            chips=chips,
            seed=seed,
            calib_loader=calib_loader,
            t_seconds=t_seconds,
            mitigation=trial_mitigation(config, train, dev),
            device=dev,
        )
        rows.append({"method": method, "options": opts, **result.to_dict()})
    table = Table(title=f"{meta.get('model', 'model')} on {ds_name}, {hw.name}, {chips} chips (clean {clean:.2f}%)")
    for col in ("method", "mean acc (%)", "std", "95% CI", "per chip"):
        table.add_column(col)
    for r in rows:
        per_chip = " ".join(f"{a:.1f}" for a in r["accuracies"])
        table.add_row(
            r["method"],
            f"{r['mean']:.2f}",
            *_spread(r["n"], r["std"], r["ci95_low"], r["ci95_high"], r.get("ci95_bounded", False)),
            per_chip,
        )
    console.print(table)
    if any(r.get("ci95_bounded") for r in rows):
        from xbarlab.stats import BOUNDED_NOTE

        console.print(BOUNDED_NOTE)
    if out:
        _write_json(
            out,
            {
                "clean_accuracy": clean,
                "dataset": ds_name,
                "settings": _run_settings(
                    hardware,
                    overrides,
                    chips=chips,
                    seed=seed,
                    time_s=t_seconds,
                    batch_size=batch_size,
                    calib_batches=4,
                    calib_batch_size=128,
                    device=device,
                ),
                "model": meta,
                "hardware_config": hw.to_dict(),
                "test_samples": len(test),
                "results": rows,
            },
        )
        console.print(f"results written to {out}")


def distortion(
    hardware: str = typer.Option(..., "--hw", help="Preset name or hardware YAML file."),
    pretrained: str = typer.Option(None),
    checkpoint: str = typer.Option(None),
    dataset: str = typer.Option(None),
    data_dir: str = typer.Option(None),
    seed: int = typer.Option(0, callback=opt.seed),
    t_seconds: float = typer.Option(None, "--time", callback=opt.non_negative),
    overrides: list[str] = typer.Option([], "--set"),
    calib_images: int = typer.Option(
        512,
        callback=opt.at_least(128),
        help="Images for the per-layer MAC error (SNR), in batches of 128 (a multiple of 128).",
    ),
    out: Path = typer.Option(Path("reports/distortion"), help="Folder for the table and the scatter plot."),
    device: str = typer.Option("cpu", help="Torch device of the chip: cpu, cuda, cuda:N."),
) -> None:
    """Per-layer distortion of one chip: PC2 of (W_ideal, W_NI), MAC SNR in dB, and the weight scatter plot."""
    from xbarlab.chip import calibrate, drift, needs_calibration, program
    from xbarlab.conversion import convert
    from xbarlab.evaluation import seeded_calibration
    from xbarlab.metrics import layer_distortion
    from xbarlab.reports.plots import plot_weight_scatter

    dev = _check_device(device)
    if calib_images % 128:
        raise typer.BadParameter(f"--calib-images {calib_images}: allowed: a multiple of 128 (batches of 128)")
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"--out {out}: is a file; allowed: a folder (created when missing)")
    hw = _load_hardware(hardware)
    if overrides:
        hw = hw.override(_parse_overrides(overrides))
    model, meta, _, train, _ = _model_and_data(pretrained, checkpoint, dataset, data_dir)
    chip = program(convert(model, hw).to(dev), seed)
    if t_seconds is not None:
        drift(chip, t_seconds)
    loader = seeded_calibration(train.with_augmentation(None), 128)(seed)  # the chip's images, as in evaluate
    if needs_calibration(chip):
        calibrate(chip, loader, device=dev)
    batches = [x for i, (x, _) in enumerate(loader) if i < calib_images // 128]
    records = layer_distortion(chip, batches, device=dev)
    table = Table(title=f"per-layer distortion: {meta.get('model', 'model')}, {hw.name}, chip seed {seed}")
    for col in ("layer", "weights", "PC2", "MAC SNR (dB)"):
        table.add_column(col)
    source = pretrained or checkpoint
    settings = f"model {source}, hardware {hardware} {' '.join(overrides)}, chip seed {seed}, time {t_seconds} s, "
    lines = [f"Settings: {settings}{len(batches) * 128} calibration images.", ""]
    lines += ["| layer | weights | PC2 | MAC SNR (dB) |", "|---|---|---|---|"]
    for r in records:
        snr = r.snr_db
        snr_txt = "" if snr is None else f"{snr:.2f}"
        table.add_row(r.layer_name, str(r.num_weights), f"{r.pc2:.3e}", snr_txt)
        lines.append(f"| {r.layer_name} | {r.num_weights} | {r.pc2:.3e} | {snr_txt} |")
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "distortion.md").write_text("\n".join(lines) + "\n")
    plot_weight_scatter(records, out / "weight_scatter.png", title=f"W_NI vs W_ideal ({hw.name})")
    console.print(f"table and scatter plot written to {out}")


def cost(
    model_name: str = typer.Option("vgg16-bn", "--model", help="Model from the registry (xbarlab models)."),
    input_shape: str = typer.Option("3,32,32", help="One input's shape C,H,W."),
    num_classes: int = typer.Option(10, callback=opt.positive_int),
    per_layer: bool = typer.Option(False, help="Print the per-layer table."),
) -> None:
    """On-chip training cost (P1 §5): memory and energy of BN-only fine-tuning vs full retraining."""
    from xbarlab.analysis.cost import training_cost
    from xbarlab.models import build_model

    try:
        shape = tuple(int(v) for v in input_shape.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"--input-shape {input_shape!r}: allowed: C,H,W as three integers") from exc
    if len(shape) != 3:
        raise typer.BadParameter(f"--input-shape {input_shape!r}: allowed: C,H,W as three integers")
    with opt.named("--model"):
        net = build_model(model_name, in_channels=shape[0], num_classes=num_classes)
    report = training_cost(net, shape)
    console.print(report.to_markdown(per_layer=per_layer))


def register(app: typer.Typer) -> None:
    app.command("mitigate")(mitigate)
    app.command("distortion")(distortion)
    app.command("cost")(cost)
