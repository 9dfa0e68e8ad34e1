"""P3's σ-sweep stage on the sweep engine (``kind: p3_chip``): the same numbers as the pipeline's own
Monte-Carlo evaluation, stored in the run's results store and rendered by the generic report."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments_util import toy_checkpoint  # noqa: F401  (pytest fixture)
from xbarlab.evaluation import evaluate_chips
from xbarlab.experiments import Store
from xbarlab.mitigation.registry import MitigationDef, MitigationOutcome, NoDataContext, RegisteredMitigation
from xbarlab.papers.p3 import P3Config
from xbarlab.papers.p3.config import p3_hardware
from xbarlab.papers.p3.data import _mc, load_model
from xbarlab.papers.p3.pipeline import prepare_p3
from xbarlab.papers.p3.stages import _stage_sweep
from xbarlab.papers.p3.sweepfiles import P3_STORE
from xbarlab.reports import render_report

pytestmark = pytest.mark.usefixtures("single_thread")


def test_sweep_stage_trials_equal_the_monte_carlo_evaluation(toy_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = P3Config(
        model=str(toy_checkpoint),
        dataset="digits",
        out_dir=str(tmp_path / "run"),
        sigmas=(0.0, 0.5),
        chips=2,
        test_images=120,
        sweep_images=100,
        val_images=150,
        quant_images=100,
        perchip_images=300,
        bn_images=256,
        calib_images=300,
        eval_seed=7,
        hardware_overrides={"adc.bits": 6},
        stages=("models", "sweep"),
    )
    out = Path(cfg.out_dir)
    out.mkdir(parents=True)
    plan = prepare_p3(cfg)
    data = plan.data
    models = {"lipschitz": {"path": str(toy_checkpoint)}}  # the sweep only needs the model files
    logs: list[str] = []
    done = _stage_sweep(cfg, plan, data, out, models, logs.append)
    net = load_model(str(toy_checkpoint))[0]
    for sigma in cfg.sigmas:
        hw = p3_hardware(sigma, cfg.hardware_overrides)
        ref = _mc(net, hw, data.sweep, 2, 7, data.calib, device=torch.device("cpu"))
        row = done["plain"][f"{sigma:g}"]
        assert row["accuracies"] == ref["accuracies"] and row["seeds"] == ref["seeds"] == [7, 8]
        assert (row["mean"], row["std"], row["ci95_low"], row["hardware"]) == (
            ref["mean"],
            ref["std"],
            ref["ci95_low"],
            ref["hardware"],
        )
    same_model = {k: {**v, "wall_time_s": done["lipschitz"][k]["wall_time_s"]} for k, v in done["plain"].items()}
    assert done["lipschitz"] == same_model  # the same file under both names: the same chips
    with Store(out / P3_STORE) as db:
        rows = db.rows("p3-sweep-plain")
    assert len(rows) == 4 and {r.config["kind"] for r in rows} == {"p3_chip"}
    assert {r.config["hardware"]["adc"]["bits"] for r in rows} == {6}  # the run's hardware overrides
    text = render_report(out / P3_STORE, tmp_path / "report").markdown.read_text()
    assert "Sweep `p3-sweep-plain`" in text and "Sweep `p3-sweep-lipschitz`" in text
    # a second run finds every trial in the store: nothing recomputed, the same rows
    again = _stage_sweep(cfg, plan, data, out, models, logs.append)
    assert again["plain"] == done["plain"]


def test_bn_adaptation_trials_equal_the_per_chip_closure(toy_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    """The per-chip stage's BN adaptation as p3_chip trials with the registered bn_adapt: the accuracies of the
    closure it replaced (adapt_bn on P3's first bn_images training images), chip for chip."""
    import dataclasses

    from xbarlab.experiments import parse_spec
    from xbarlab.mitigation.bn import adapt_bn
    from xbarlab.papers.p3.stages import _bn_adapt_row, _model_settings
    from xbarlab.papers.p3.sweepfiles import _bn_adapt_text

    cfg = P3Config(
        model=str(toy_checkpoint),
        dataset="digits",
        out_dir=str(tmp_path / "run"),
        chips=2,
        test_images=120,
        sweep_images=100,
        val_images=150,
        quant_images=100,
        perchip_images=300,
        bn_images=200,
        eval_seed=3,
    )
    out = Path(cfg.out_dir)
    out.mkdir(parents=True)
    data = prepare_p3(cfg).data
    spec = parse_spec(_bn_adapt_text(cfg, data, _model_settings(cfg.model), 0.5))
    row = _bn_adapt_row(spec, out, lambda line: None)
    net = load_model(cfg.model)[0]

    def adapt(chip: torch.nn.Module, _ctx: object, _options: object) -> MitigationOutcome:
        return MitigationOutcome(dataclasses.asdict(adapt_bn(chip, data.bn, num_batches=2)))

    closure = RegisteredMitigation(MitigationDef("closure", "the old closure", adapt), {}, NoDataContext)
    ref = evaluate_chips(
        net, p3_hardware(0.5), data.test, chips=2, seed=3, calib_loader=data.calib, mitigation=closure, progress=False
    )
    assert row["accuracies"] == [c.accuracy for c in ref.chips] and row["seeds"] == [3, 4]
    assert [i["num_images"] for i in row["info"]] == [c.info["num_images"] for c in ref.chips] == [200, 200]
