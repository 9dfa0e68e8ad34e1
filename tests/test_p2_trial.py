"""The ``p2_task`` trial kind: P2 detection and segmentation run by the generic sweep engine.

The sweep engine's numbers must equal those of the P2 experiment code for the same seeds (bit for bit), bad
settings are refused before anything runs, and the generic report leads with the task metric.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from xbarlab.experiments import Store, parse_spec, run_sweep
from xbarlab.experiments.settings import SweepSpecError
from xbarlab.experiments.spec import check_inputs
from xbarlab.reports import render_report

ETA = 0.05
SIGMA = ETA / (2.0 * math.sqrt(2.0))


def _sweep(
    model: str = "segmenter", mitigations: str = "[none, bn_adapt, bn_online]", adapt: str = "augment: false"
) -> str:
    return textwrap.dedent(
        f"""\
        name: p2-task-test
        kind: p2_task
        plugins: [xbarlab.papers.p2.trial]
        base:
          model: {{pretrained: {model}}}
          data: {{dataset: fashion-mnist, test_samples: 12, batch_size: 6, calib_batches: 1, calib_batch_size: 8,
                 data_seed: 0, calib_samples: 16}}
          hardware:
            preset: ideal
            weights: {{quantize: false}}
            device: {{on_off_ratio: 2.0}}
            read_noise: {{kind: relative_to_G_on, sigma: {SIGMA!r}, mode: frozen}}
          mitigation_options:
            bn_adapt: {{num_batches: 2, batch_size: 8, {adapt}}}
        grid:
          mitigation: {mitigations}
        chips: 2
        seed: 3
        report: {{metric: {"mIoU_pct" if model == "segmenter" else "mAP50_pct"}}}
        """
    )


def _reference(task: str, seed: int) -> dict[str, float]:
    """The P2 protocol written out by hand: program the chip, then each method from the same chip state."""
    import xbarlab
    from xbarlab.mitigation.bn import adapt_bn, online_bn, restore_bn_state, snapshot_bn_state
    from xbarlab.papers.p2.canvas import CanvasLoader
    from xbarlab.papers.p2.noise import p2_noise_hardware
    from xbarlab.papers.p2.train_tasks import evaluate_task, load_shipped, make_canvases

    model, _ = load_shipped(task)
    test = make_canvases("test", 12, 1)
    calib = make_canvases("train", 16, 0)
    chip = xbarlab.program(xbarlab.convert(model, p2_noise_hardware(ETA)), seed)
    out = {"none": evaluate_task(task, chip, test, batch_size=6)}
    snap = snapshot_bn_state(chip)
    adapt_bn(chip, CanvasLoader(calib, 8, shuffle=True, seed=seed), num_batches=2)
    out["bn_adapt"] = evaluate_task(task, chip, test, batch_size=6)
    restore_bn_state(chip, snap)
    with online_bn(chip):
        out["bn_online"] = evaluate_task(task, chip, test, batch_size=6)
    return out


@pytest.mark.parametrize("task", ["segmenter", "detector"])
def test_sweep_trials_equal_the_p2_protocol_bit_for_bit(task: str, tmp_path: Path) -> None:
    spec = parse_spec(_sweep(task))
    check_inputs(spec)
    summary = run_sweep(spec, store=tmp_path / "p2.sqlite")
    assert summary.failed == 0
    with Store(tmp_path / "p2.sqlite") as db:
        rows = db.rows("p2-task-test")
    key = "mIoU_pct" if task == "segmenter" else "mAP50_pct"
    got = {(r.config["mitigation"]["name"], r.config["seed"]): r.metrics[key] for r in rows}
    assert len(got) == 6
    for seed in (3, 4):
        for method, value in _reference(task, seed).items():
            assert got[(method, seed)] == 100.0 * value, (method, seed)
    assert got[("none", 3)] != got[("none", 4)]  # two different chips
    noise = [r.metrics["weight_noise_rel_std"] for r in rows]
    assert all(abs(n / ETA - 1.0) < 0.03 for n in noise)  # the P2 noise encoding: std(W_eff - W) = eta max|W|
    clean = {r.metrics[f"clean_{key}"] for r in rows}
    assert len(clean) == 1 and 0.0 < clean.pop() <= 100.0

    report = render_report(tmp_path / "p2.sqlite", tmp_path / "report")
    text = report.markdown.read_text()
    assert f"{key} mean" in text and f"digital (clean) {key}:" in text
    assert any(p.name.endswith(f"{key.replace('_', '-')}.png") for p in report.plots)


def test_label_free_mitigations_only(tmp_path: Path) -> None:
    spec = parse_spec(_sweep(mitigations="[none, bn_finetune]"))
    with pytest.raises(SweepSpecError, match=r"base\.mitigation: .bn_finetune. needs labelled classification batches"):
        check_inputs(spec)
    spec = parse_spec(_sweep(adapt="augment: true"))
    with pytest.raises(SweepSpecError, match=r"base\.mitigation_options\.bn_adapt\.augment: invalid value True"):
        check_inputs(spec)


def test_unknown_task_model_names_the_shipped_ones() -> None:
    allowed = "allowed: one of detector, segmenter, detector-ni, segmenter-ni"
    with pytest.raises(SweepSpecError, match=f"invalid value 'resnet20-fmnist'; {allowed}"):
        parse_spec(_sweep(model="resnet20-fmnist"))


def test_task_data_keys_are_checked() -> None:
    text = _sweep().replace("calib_samples: 16", "calib_samples: 0")
    with pytest.raises(SweepSpecError, match="calib_samples"):
        parse_spec(text)
    with pytest.raises(SweepSpecError, match="data_seed"):  # classification sweeps do not take the task keys
        parse_spec(text.replace("kind: p2_task\n", "").replace("plugins: [xbarlab.papers.p2.trial]\n", ""))


def test_shipped_task_sweeps_plan() -> None:
    from xbarlab.experiments.spec import builtin_sweep, load_spec, resolve_trials

    for name in ("p2-segmentation", "p2-detection"):
        spec = load_spec(builtin_sweep(name))
        trials = resolve_trials(spec)
        assert len(trials) == 36 and {t.config["kind"] for t in trials} == {"p2_task"}
