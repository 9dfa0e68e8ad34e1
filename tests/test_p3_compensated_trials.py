"""P3's placement, quantisation and per-chip stages test their configurations as ``p3_chip`` sweeps: a model
with trained compensation branches (``model.compensation``), per-layer ADC bits, and the registered
``p3_branch_finetune``. Each gives, chip for chip, the numbers of the code it replaced (written out here)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from experiments_util import toy_checkpoint  # noqa: F401  (pytest fixture)
from xbarlab.chip import program
from xbarlab.conversion import convert
from xbarlab.evaluation import evaluate_chips
from xbarlab.experiments import SweepSpecError, parse_spec
from xbarlab.layers import analog_layers
from xbarlab.mitigation.compensation import (
    CompensationConfig,
    attach_compensation,
    compensation_state,
    load_compensation_state,
    train_compensation,
)
from xbarlab.mitigation.registry import MitigationDef, MitigationOutcome, NoDataContext, RegisteredMitigation
from xbarlab.papers.p3 import P3Config
from xbarlab.papers.p3.config import p3_hardware
from xbarlab.papers.p3.data import load_model
from xbarlab.papers.p3.finetune import copy_dac_ranges
from xbarlab.papers.p3.pipeline import prepare_p3
from xbarlab.papers.p3.quant_search import QuantConfig
from xbarlab.papers.p3.stages import _run_stored, _test_row
from xbarlab.papers.p3.sweepfiles import _finetune_options, _test_text, compensated_model

pytestmark = pytest.mark.usefixtures("single_thread")

SIGMA = 0.5


@pytest.fixture()
def setup(toy_checkpoint: Path, tmp_path: Path) -> dict[str, Any]:  # noqa: F811
    cfg = P3Config(
        model=str(toy_checkpoint),
        dataset="digits",
        out_dir=str(tmp_path / "run"),
        sigmas=(0.0, SIGMA),
        chips=2,
        test_images=120,
        sweep_images=100,
        val_images=150,
        quant_images=100,
        perchip_images=200,
        perchip_steps=6,
        perchip_batch_size=32,
        bn_images=128,
        calib_images=256,
        eval_seed=11,
        seed=5,
    )
    out = Path(cfg.out_dir)
    out.mkdir(parents=True)
    data = prepare_p3(cfg).data
    net = load_model(str(toy_checkpoint))[0]
    hw = p3_hardware(SIGMA)
    names = [la.layer_name for la in analog_layers(convert(net, hw))]
    layers = names[:2]
    comp_cfg = CompensationConfig(reduction=2)
    probe = convert(net, hw)
    attach_compensation(probe, layers, comp_cfg)
    gen = torch.Generator().manual_seed(0)
    state = {k: 0.05 * torch.randn(v.shape, generator=gen) for k, v in compensation_state(probe).items()}
    branches = tmp_path / "branches.safetensors"
    save_file(state, str(branches))
    model = compensated_model(str(toy_checkpoint), layers, branches, comp_cfg)
    return {
        "cfg": cfg,
        "out": out,
        "data": data,
        "net": net,
        "hw": hw,
        "layers": layers,
        "names": names,
        "comp_cfg": comp_cfg,
        "state": state,
        "model": model,
        "branches": branches,
    }


def _old_test(net: torch.nn.Module, hw: Any, s: dict[str, Any], quant: QuantConfig | None = None) -> list[float]:
    """The replaced code: ``_mc`` of the converted model with its branches attached."""
    data = s["data"]
    chip = convert(net, quant.hardware(hw) if quant else hw)
    attach_compensation(chip, s["layers"], s["comp_cfg"], state=s["state"])
    cfg = s["cfg"]
    res = evaluate_chips(
        chip, None, data.test, chips=cfg.chips, seed=cfg.eval_seed, calib_loader=data.calib, progress=False
    )
    return res.accuracies


def test_compensated_model_trials_equal_the_placement_test(setup: dict[str, Any]) -> None:
    s = setup
    cfg, data, out = s["cfg"], s["data"], s["out"]
    row = _test_row(_test_text(cfg, data, "p3-placement-rl", "rl", s["model"]), out, lambda line: None)
    assert row["accuracies"] == _old_test(s["net"], s["hw"], s) and row["seeds"] == [11, 12]
    # the branches matter: without them the chips give other numbers
    plain = {"checkpoint": s["model"]["checkpoint"]}
    bare = _test_row(_test_text(cfg, data, "p3-placement-none", "none", plain), out, lambda line: None)
    assert bare["accuracies"] != row["accuracies"]


def test_quantisation_trials_equal_the_quant_test(setup: dict[str, Any]) -> None:
    s = setup
    cfg, data, out = s["cfg"], s["data"], s["out"]
    names = s["names"]
    qc = QuantConfig(2, tuple((n, 8 - i % 3) for i, n in enumerate(names)))
    text = _test_text(cfg, data, "p3-quant-best", "best", s["model"], quant=qc)
    trials, _ = _run_stored(parse_spec(text), out)
    assert all(r.config["hardware"] == qc.hardware(s["hw"]).to_dict() for r in trials)
    row = _test_row(text, out, lambda line: None)
    assert row["accuracies"] == _old_test(s["net"], s["hw"], s, qc)


def test_branch_finetune_trials_equal_the_per_chip_closure(setup: dict[str, Any]) -> None:
    """``p3_branch_finetune`` against the per-chip closure it replaced, with the loader made afresh per chip (the
    closure read one loader across chips, so chip k trained on the loader's k-th epoch: see the stage's
    ``protocol: 2``)."""
    s = setup
    cfg, data, out, net = s["cfg"], s["data"], s["out"], s["net"]
    hw = s["hw"]
    options = _finetune_options(cfg, data)
    text = _test_text(
        cfg, data, "p3-perchip-finetune", "finetune", s["model"], mitigation="p3_branch_finetune", options=options
    )
    row = _test_row(text, out, lambda line: None)

    from xbarlab.data import get_dataset, make_loader

    train_hw = hw.override({"adc.bits": None, "adc.noise_lsb": 0.0})
    trainer = convert(net, train_hw)
    attach_compensation(trainer, s["layers"], s["comp_cfg"], state=s["state"])
    teacher = copy.deepcopy(net)
    images = get_dataset("digits", "train", augment=True).subset(range(cfg.perchip_images))

    def fine_tune(chip: torch.nn.Module, ctx: NoDataContext, _options: object) -> MitigationOutcome:
        load_compensation_state(trainer, s["state"])
        program(trainer, ctx.seed)
        copy_dac_ranges(chip, trainer)
        train_compensation(
            trainer,
            make_loader(images, cfg.perchip_batch_size, shuffle=True, seed=cfg.seed),
            steps=cfg.perchip_steps,
            lr=cfg.perchip_lr,
            seed=cfg.seed + 2,
            resample=False,
            calib_loader=data.calib,
            loss=cfg.comp_loss,
            teacher=teacher,
        )
        load_compensation_state(chip, compensation_state(trainer))
        return MitigationOutcome()

    closure = RegisteredMitigation(MitigationDef("closure", "the old closure", fine_tune), {}, NoDataContext)
    chip = convert(net, hw)
    attach_compensation(chip, s["layers"], s["comp_cfg"], state=s["state"])
    ref = evaluate_chips(
        chip, None, data.test, chips=2, seed=11, calib_loader=data.calib, mitigation=closure, progress=False
    )
    assert row["accuracies"] == ref.accuracies
    assert row["accuracies"] != _old_test(net, hw, s)  # fine-tuning changed the chips


def test_branch_finetune_is_refused_where_it_cannot_run(setup: dict[str, Any]) -> None:
    s = setup
    cfg, data = s["cfg"], s["data"]
    plain = {"checkpoint": s["model"]["checkpoint"]}
    text = _test_text(cfg, data, "x", "x", plain, mitigation="p3_branch_finetune", options={"steps": 2})
    from xbarlab.experiments.spec import check_inputs

    with pytest.raises(ValueError, match=r"without model\.compensation"):
        check_inputs(parse_spec(text))
    accuracy_kind = """
name: x
plugins: [xbarlab.papers.p3.trial]
base:
  model: {checkpoint: CKPT}
  data: {dataset: digits}
  hardware: {preset: rram}
grid: {mitigation: [none, p3_branch_finetune]}
""".replace("CKPT", str(plain["checkpoint"]))
    with pytest.raises(SweepSpecError, match="runs only in trials of kind p3_chip"):
        parse_spec(accuracy_kind)


def test_damaged_branch_file_is_refused_before_the_sweep(setup: dict[str, Any]) -> None:
    s = setup
    branches: Path = s["branches"]
    text = _test_text(s["cfg"], s["data"], "x", "x", s["model"])
    branches.write_bytes(branches.read_bytes()[:-8])
    from xbarlab.experiments.spec import check_inputs

    with pytest.raises(ValueError, match=r"SHA-256 .* does not match model\.compensation\.sha256"):
        check_inputs(parse_spec(text))
    with pytest.raises(RuntimeError, match="trial"):
        _run_stored(parse_spec(text), s["out"])


def test_compensation_layers_must_match_the_file_and_be_analog(setup: dict[str, Any]) -> None:
    """A branch file for other layers, a layer kept digital and a mitigation P3's chips cannot run are refused
    before the sweep starts, each naming what is allowed."""
    from xbarlab.experiments.spec import check_inputs

    s = setup
    cfg, data = s["cfg"], s["data"]
    other = {**s["model"], "compensation": {**s["model"]["compensation"], "layers": s["names"][1:3]}}
    with pytest.raises(SweepSpecError, match=r"model\.compensation\.layers: .*allowed: the layers whose branches"):
        check_inputs(parse_spec(_test_text(cfg, data, "x", "x", other)))
    weight_layers = [n for n, m in s["net"].named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    (last,) = [n for n in weight_layers if n not in s["names"]]  # P3's hardware keeps the classifier digital
    state = {f"{last}/{k.partition('/')[2]}": v for k, v in list(s["state"].items())[:1]}
    digital_file = s["branches"].with_name("digital.safetensors")
    save_file(state, str(digital_file))
    digital = compensated_model(s["model"]["checkpoint"], [last], digital_file, s["comp_cfg"])
    with pytest.raises(SweepSpecError, match=r"are not analog layers of this chip"):
        check_inputs(parse_spec(_test_text(cfg, data, "x", "x", digital)))
    text = _test_text(cfg, data, "x", "x", s["model"], mitigation="bn_finetune")
    with pytest.raises(SweepSpecError, match=r"mitigation: invalid value 'bn_finetune'; allowed: none, bn_adapt"):
        check_inputs(parse_spec(text))
