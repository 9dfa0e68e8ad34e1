"""The P3 pipeline (`xbarlab correctnet run`) end to end on a toy checkpoint (sklearn digits), tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments_util import (
    cli,
    toy_checkpoint,  # noqa: F401  (pytest fixture)
)
from xbarlab.papers.p3 import P3Config

pytestmark = pytest.mark.usefixtures("single_thread")

SETTINGS = {
    "dataset": "digits",
    "sigmas": "[0,0.5]",
    "chips": "2",
    "test_images": "150",
    "sweep_images": "150",
    "val_images": "150",
    "lipschitz_epochs": "1",
    "comp_steps": "4",
    "comp_batch_size": "32",
    "comp_pool": "2",
    "rl_episodes": "3",
    "random_samples": "2",
    "greedy_mode": "ranked",
    "search_chips": "1",
    "quant_chips": "1",
    "quant_images": "100",
    "quant_max_evaluations": "4",
    "quant_bits_per_cell": "[2]",
    "quant_adc_bits": "[6,8]",
    "budget_pct": "30",
    "perchip_steps": "30",
    "perchip_images": "300",
    "bn_images": "256",
}
"""The tiny run of these tests, as ``--set FIELD=VALUE`` settings."""

ARGS = [arg for key, value in SETTINGS.items() for arg in ("--set", f"{key}={value}")]


def model(spec: object) -> list[str]:
    """``--set model=SPEC``."""
    return ["--set", f"model={spec}"]


@pytest.fixture(scope="module")
def p3_run(toy_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:  # noqa: F811
    out = tmp_path_factory.mktemp("p3") / "run"
    res = cli(["correctnet", "run", *model(toy_checkpoint), "--out", str(out), *ARGS], cwd=out.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    return out, res.stdout


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pipeline_writes_every_stage_and_a_consistent_table(p3_run: tuple[Path, str]) -> None:
    out, _log = p3_run
    for name in ("models.json", "sweep.json", "placement.json", "quant.json", "perchip.json", "results.md"):
        assert (out / name).is_file(), name
    models = json.loads((out / "models.json").read_text())
    clean = models["plain"]["clean_accuracy"]
    assert clean > 80.0  # the toy checkpoint (~95 %)
    assert models["matched_within_1pt"] == (abs(models["clean_gap"]) <= 1.0)
    sweep = json.loads((out / "sweep.json").read_text())
    # σ = 0 keeps the quantised chip close to the digital model; σ = 0.5 costs accuracy
    assert sweep["plain"]["0"]["mean"] > clean - 10.0
    assert sweep["plain"]["0.5"]["mean"] < sweep["plain"]["0"]["mean"]
    assert sweep["plain"]["0.5"]["n"] == 2 and len(sweep["plain"]["0.5"]["accuracies"]) == 2

    placement = json.loads((out / "placement.json").read_text())
    methods = placement["methods"]
    assert set(methods) == {"none", "all", "greedy", "rl", "random"}
    assert methods["none"]["placement"] == [] and methods["none"]["overhead"]["params_pct"] == 0.0
    assert sorted(methods["all"]["placement"]) == sorted(placement["layers"])
    costs = placement["costs_pct"]
    for method in ("greedy", "rl", "random"):
        chosen = methods[method]["placement"]
        assert sum(costs[name] for name in chosen) <= placement["budget_pct"] + 1e-9, method
        assert methods[method]["within_budget"]
    # each placement's overhead is the sum of its layers' overheads (branches are independent)
    all_ov = methods["all"]["overhead"]
    assert all_ov["params_pct"] > 0 and all_ov["macs_pct"] > 0

    quant = json.loads((out / "quant.json").read_text())
    ref, best = quant["search"]["reference"], quant["search"]["best"]
    assert ref["energy_pj"] > 0
    assert best["energy_pj"] <= ref["energy_pj"]
    assert quant["saving_pct"] == pytest.approx(100.0 * (1.0 - best["energy_pj"] / ref["energy_pj"]), abs=1e-6)
    assert quant["reference_energy"]["total_pj"] == pytest.approx(ref["energy_pj"], rel=1e-9)

    perchip = json.loads((out / "perchip.json").read_text())
    assert perchip["placement"] == methods["rl"]["placement"]
    if perchip["placement"]:
        tuned = perchip["finetuned"]
        # the same test chips as the other rows, each fine-tuned on its own weights
        assert [i["chip_seed"] for i in tuned["info"]] == tuned["seeds"] == methods["rl"]["test"]["seeds"]
        assert tuned["mean"] > methods["rl"]["test"]["mean"]
    assert perchip["bn_images"] == 256 and perchip["bn_adapt"]["n"] == 2  # the toy net has BN
    assert all(i["num_images"] == 256 for i in perchip["bn_adapt"]["info"])

    # the reported Pareto front: non-dominated among every evaluated point, each row in the table
    points = [(p["energy_pj"], p["accuracy"]) for p in quant["search"]["points"]]
    front = quant["search"]["front"]
    assert front
    for p in front:
        assert not any(
            e <= p["energy_pj"] and a >= p["accuracy"] and (e, a) != (p["energy_pj"], p["accuracy"]) for e, a in points
        )

    table = (out / "results.md").read_text()
    for p in front:
        assert f"| {p['label']} | {p['accuracy']:.2f} | {p['energy_pj']:.0f} |" in table
    for png in ("sweep.png", "quant_pareto.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({png})" in table
    assert f"| clean (digital, plain) | {clean:.2f} | 100.0 % |" in table
    assert "compensation (rl:" in table and "quantisation search" in table


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ranked_greedy_and_rl_reuse_the_search_cache(p3_run: tuple[Path, str]) -> None:
    out, _log = p3_run
    cache = json.loads((out / "placement" / "search_cache.json").read_text())
    placement = json.loads((out / "placement.json").read_text())
    # ranked greedy scores every single layer once; the cache holds each distinct placement once
    for layer in placement["layers"]:
        assert layer in cache
    assert placement["search"]["distinct_placements_trained"] == len(cache)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rerun_resumes_from_the_stage_files(p3_run: tuple[Path, str], toy_checkpoint: Path) -> None:  # noqa: F811
    out, _log = p3_run
    before = {p.name: p.read_text() for p in out.glob("*.json") if p.name != "config.json"}
    res = cli(["correctnet", "run", *model(toy_checkpoint), "--out", str(out), *ARGS], cwd=out.parent)
    assert res.returncode == 0, res.stdout + res.stderr
    work = ("fine-tuning ", "search: ", "final ", "quant ", "per-chip", "BN adaptation")
    assert not [line for line in res.stdout.splitlines() if line.startswith(work)]  # nothing recomputed
    after = {p.name: p.read_text() for p in out.glob("*.json") if p.name != "config.json"}
    for name in ("models.json", "sweep.json", "placement.json", "quant.json", "perchip.json"):
        assert after[name] == before[name], name
    # a table-only run reads every stage file: the same table, sweep rows included
    table = (out / "results.md").read_text()
    res = cli(
        ["correctnet", "run", *model(toy_checkpoint), "--out", str(out), *ARGS, "--set", "stages=[models,table]"],
        cwd=out.parent,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "results.md").read_text() == table
    assert set(json.loads((out / "results.json").read_text())) >= {"sweep", "placement", "quant", "perchip"}


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("greedy_mode", "best", "'iterative' or 'ranked'"),
        ("random_samples", 0, ">= 1"),
        ("comp_pool", -1, ">= 0"),
        ("quant_images", 0, ">= 1"),
        ("perchip_steps", 0, ">= 1"),
        ("perchip_lr", float("nan"), "finite"),
        ("stages", ("models", "bogus"), "perchip"),
        ("sigmas", (), "non-empty"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, allowed: str) -> None:
    with pytest.raises(ValueError, match=field) as err:
        P3Config(**{field: value})  # type: ignore[arg-type]
    assert allowed in str(err.value)


def test_bits_per_cell_search_needs_sliced_devices(tmp_path: Path) -> None:
    from xbarlab.papers.p3 import run_p3

    cfg = P3Config(
        out_dir=str(tmp_path / "x"),
        hardware_overrides={"weights.noise_granularity": "weight", "weights.bits_per_cell": 8},
        quant_bits_per_cell=(1, 2),
    )
    with pytest.raises(ValueError, match="quant_bits_per_cell") as err:
        run_p3(cfg, log=lambda _msg: None)
    assert "noise_granularity" in str(err.value)
    assert not (tmp_path / "x").exists()  # nothing started


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quant_stage_of_a_per_weight_run_references_its_own_cells(toy_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    """One device per weight (8-bit cells, as the shipped lenet5-fmnist-weight-sigma1): the quantisation search's
    uniform 8-bit reference uses the run's cells, not P3's default 2-bit cells, which such hardware refuses."""
    out = tmp_path / "run"
    per_weight = {
        "hardware_overrides": "{weights.noise_granularity: weight, weights.bits_per_cell: 8}",
        "quant_bits_per_cell": "[8]",
        "stages": "[models,placement,quant]",
    }
    sets = [arg for key, value in {**SETTINGS, **per_weight}.items() for arg in ("--set", f"{key}={value}")]
    res = cli(["correctnet", "run", *model(toy_checkpoint), "--out", str(out), *sets], cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    quant = json.loads((out / "quant.json").read_text())
    assert quant["search"]["reference"]["bits_per_cell"] == 8 and quant["search"]["reference"]["label"].startswith(
        "w8 c8"
    )
    assert quant["test"]["reference"]["n"] == 2


def test_cli_rejects_unknown_greedy_mode(toy_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    res = cli(
        ["correctnet", "run", *model(toy_checkpoint), "--out", str(tmp_path / "x"), "--set", "greedy_mode=best"],
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert res.stderr.startswith("error: --set: greedy_mode: invalid value 'best'; allowed: 'iterative' or 'ranked'")
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_long_placements_get_a_footnote() -> None:
    from xbarlab.papers.p3.report import _placement_label

    notes: dict[str, str] = {}
    assert _placement_label([], notes) == "none"
    assert _placement_label(["conv1", "conv2"], notes) == "conv1, conv2"
    long = [f"layers.{i}.conv1" for i in range(5)]
    assert _placement_label(long, notes) == "placement A (5 layers)"
    assert _placement_label(long, notes) == "placement A (5 layers)"  # the same placement, the same label
    assert _placement_label([*long[::-1], "fc"], notes) == "placement B (6 layers)"
    assert notes["placement A"] == ", ".join(long)
