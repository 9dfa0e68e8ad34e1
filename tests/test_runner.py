"""The per-chip runner (xbarlab.runner): evaluate_chips, a sweep trial and run_chip give the same numbers for
the same chip seed; the global torch RNG is seeded per chip and restored; a missing calibration is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments_util import toy_checkpoint  # noqa: F401  (pytest fixture)
from xbarlab.checkpoint import load_checkpoint
from xbarlab.data import get_dataset, make_loader
from xbarlab.evaluation import accuracy, evaluate_chips, seeded_calibration
from xbarlab.experiments.registry import check_options, get_mitigation
from xbarlab.experiments.trial import TrialContext, accuracy_trial, clear_cache
from xbarlab.models.common import channels_last
from xbarlab.presets import load_preset
from xbarlab.runner import RegisteredMitigation, run_chip

FINETUNE = {"epochs": 1, "batch_size": 64, "max_samples": 128, "adapt_batches": 2}


def _trial_config(checkpoint: Path, seed: int, hw: dict[str, object], method: str) -> dict[str, object]:
    return {
        "seed": seed,
        "model": {"checkpoint": str(checkpoint)},
        "data": {
            "dataset": "digits",
            "test_samples": 150,
            "batch_size": 50,
            "calib_batches": 1,
            "calib_batch_size": 64,
        },
        "hardware": hw,
        "drift_s": 3600.0,
        "mitigation": {"name": method, "options": check_options(method, FINETUNE if method == "bn_finetune" else {})},
    }


@pytest.mark.parametrize("method", ["none", "bn_finetune"])
def test_evaluate_chips_trial_and_runner_agree_per_chip_seed(toy_checkpoint: Path, method: str) -> None:  # noqa: F811
    """bn_finetune draws augmentation from the global RNG: equal numbers need the same per-chip seeding."""
    model, _ = load_checkpoint(str(toy_checkpoint))
    model = channels_last(model.eval())  # as the trial loads it
    train = get_dataset("digits", "train", augment=True)
    test = get_dataset("digits", "test").subset(list(range(150)))
    loader = make_loader(test, 50)
    hw = load_preset("rram").override({"read_noise.sigma": 0.2})
    options = check_options(method, FINETUNE if method == "bn_finetune" else {})
    registered = RegisteredMitigation(
        get_mitigation(method), options, lambda s: TrialContext({}, s, torch.device("cpu"), train)
    )
    calib = seeded_calibration(train.with_augmentation(None), 64)
    mc = evaluate_chips(
        model, hw, loader, chips=2, seed=3, calib_loader=calib, calib_batches=1, t_seconds=3600.0,
        mitigation=registered, progress=False,
    )  # fmt: skip
    clear_cache()
    trials = [accuracy_trial(_trial_config(toy_checkpoint, s, hw.to_dict(), method))["metrics"] for s in (3, 4)]
    runs = [
        run_chip(
            model,
            hw,
            lambda c: accuracy(c, loader),
            seed=s,
            t_seconds=3600.0,
            calibration=calib,
            calib_batches=1,
            mitigation=registered,
        )
        for s in (3, 4)
    ]
    assert mc.accuracies == [t["accuracy"] for t in trials] == [r.value for r in runs]
    assert mc.accuracies[0] != mc.accuracies[1]  # two different chips
    if method == "bn_finetune":
        for chip, trial, run in zip(mc.chips, trials, runs, strict=True):
            assert chip.info["finetune_loss"] == trial["finetune_loss"] == run.info["finetune_loss"]
            assert chip.info["finetune_samples"] == 128
    assert set(runs[0].timings) == {"convert_s", "program_s", "calibrate_s", "mitigate_s", "evaluate_s"}


def test_runner_restores_the_global_rng_and_seeds_each_chip(toy_checkpoint: Path) -> None:  # noqa: F811
    model, _ = load_checkpoint(str(toy_checkpoint))
    hw = load_preset("ideal")
    draws: list[float] = []

    def metric(chip: torch.nn.Module) -> float:
        draws.append(float(torch.rand(())))  # what a mitigation's augmentation would draw
        return 0.0

    torch.manual_seed(5)
    expected_after = torch.rand(2)
    torch.manual_seed(5)
    run_chip(model, hw, metric, seed=11)
    run_chip(model, hw, metric, seed=11)
    run_chip(model, hw, metric, seed=12)
    assert torch.equal(torch.rand(2), expected_after)  # the caller's RNG stream is untouched
    assert draws[0] == draws[1] != draws[2]  # chip seed 11 draws the same numbers twice, seed 12 others


def test_runner_refuses_a_chip_with_converters_and_no_calibration(toy_checkpoint: Path) -> None:  # noqa: F811
    model, _ = load_checkpoint(str(toy_checkpoint))
    with pytest.raises(ValueError, match="calib_loader: required"):
        run_chip(model, load_preset("rram"), lambda c: 0.0, seed=0)
    with pytest.raises(ValueError, match="hw: required"):
        run_chip(model, None, lambda c: 0.0, seed=0)


def test_p2_chip_seed_gives_the_same_metrics_whatever_the_run(tmp_path: Path) -> None:
    """P2's task sweeps run each chip through run_chip: chip seed 1 is the same chip as chip 1 of seed 0."""
    from xbarlab.experiments import Store
    from xbarlab.papers.p2.experiments import noise_sweeps, parse_models, run_p2_sweeps
    from xbarlab.papers.p2.train_tasks import shipped_path

    if not shipped_path("segmenter").with_suffix(".json").is_file():
        pytest.skip("shipped task weights missing")
    common = {"test_count": 16, "calib_batches": 2, "calib_batch_size": 8, "dataset": "fashion-mnist-mini"}
    values = []
    for run, (chips, seed) in enumerate(((2, 0), (1, 1))):
        texts = noise_sweeps(parse_models(["segmenter"]), [0.1], chips=chips, seed=seed, **common)
        run_p2_sweeps(texts, tmp_path / f"{run}.sqlite", tmp_path / f"r{run}", progress=False)
        with Store(tmp_path / f"{run}.sqlite") as db:
            values.append({(r.mitigation, r.seed): r.metrics["mIoU_pct"] for r in db.rows("p2-segmenter-noise")})
    both, second = values
    assert {m for m, _ in both} == {"none", "bn_adapt", "bn_online"}
    for method in ("none", "bn_adapt", "bn_online"):
        assert both[(method, 1)] == second[(method, 1)]
        assert both[(method, 0)] != both[(method, 1)]  # two different chips
