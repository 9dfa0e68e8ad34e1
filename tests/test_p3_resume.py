"""Resuming the P3 pipeline (`xbarlab correctnet run`): each stage is keyed by the settings that determine it.

A rerun with the same settings reuses every stage; a changed setting recomputes its stage (one line saying
which setting changed) and the stages after it, and the stored records and printed labels say the new value;
``--resume strict`` refuses instead; bad options fail with exit 2 and one ``error:`` line before anything is
written to ``--out``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments_util import (
    cli,
    toy_checkpoint,  # noqa: F401  (pytest fixture)
)
from test_p3_pipeline import ARGS, model

pytestmark = pytest.mark.usefixtures("single_thread")

STAGES = ["--set", "stages=[models,sweep,placement,table]"]
STAGE_FILES = ("models.json", "sweep.json", "placement.json")


def _run(toy: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    args = ["correctnet", "run", *model(toy), "--out", str(out), *ARGS, *STAGES]
    args += ["--set", f"lipschitz_checkpoint={toy}", *extra]  # the toy net as its own Lipschitz model: no fine-tuning
    res = cli(args, cwd=out.parent)
    return res.returncode, res.stdout, res.stderr


def _errors(stderr: str) -> list[str]:
    """The ``error:`` lines of a failed command (main() may add a hint line about XBARLAB_DEBUG)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _stage(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())["_stage"]


@pytest.fixture(scope="module")
def first_run(toy_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("p3resume") / "run"
    code, stdout, stderr = _run(toy_checkpoint, out)
    assert code == 0, stdout + stderr
    return out


@pytest.fixture
def run_copy(first_run: Path, tmp_path: Path) -> Path:
    """A private copy of the first run's folder (file times kept)."""
    out = tmp_path / "run"
    shutil.copytree(first_run, out)
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_stage_files_record_their_settings(first_run: Path) -> None:
    placement = _stage(first_run, "placement")
    assert placement["settings"]["test_images"] == 150 and placement["settings"]["chips"] == 2
    assert placement["settings"]["sigma"] == 0.5
    assert placement["upstream"] == {"models": _stage(first_run, "models")["key"]}
    assert len(placement["key"]) == 16 and placement["format"] == 1
    assert "150 test images" in (first_run / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_unchanged_rerun_reuses_every_stage(run_copy: Path, toy_checkpoint: Path) -> None:  # noqa: F811
    before = {n: (run_copy / n).stat().st_mtime_ns for n in STAGE_FILES}
    code, stdout, stderr = _run(toy_checkpoint, run_copy)
    assert code == 0, stdout + stderr
    for name in ("models", "placement"):
        assert f"stage {name}: same settings, reusing {name}.json" in stdout
    assert "recomputing" not in stdout
    assert not [line for line in stdout.splitlines() if line.startswith(("search: ", "final ", "sweep "))]
    assert {n: (run_copy / n).stat().st_mtime_ns for n in STAGE_FILES} == before


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_changed_setting_recomputes_its_stage_and_relabels(run_copy: Path, toy_checkpoint: Path) -> None:  # noqa: F811
    models_mtime = (run_copy / "models.json").stat().st_mtime_ns
    sweep_mtime = (run_copy / "sweep.json").stat().st_mtime_ns
    code, stdout, stderr = _run(toy_checkpoint, run_copy, "--set", "test_images=100")
    assert code == 0, stdout + stderr
    assert "stage placement: recomputing: settings changed (test_images 150 → 100)" in stdout.splitlines()
    assert [line for line in stdout.splitlines() if line.startswith("final ")]  # really recomputed
    # the sweep and the models do not depend on the test images: reused, untouched
    assert (run_copy / "models.json").stat().st_mtime_ns == models_mtime
    assert (run_copy / "sweep.json").stat().st_mtime_ns == sweep_mtime
    assert _stage(run_copy, "placement")["settings"]["test_images"] == 100
    header = (run_copy / "results.md").read_text().splitlines()[0]
    assert "over 2 chips, 100 test images; sweep rows: 2 chips, 150 images" in header
    # the search cache was filled under the old key and dropped with it
    assert (run_copy / "placement.key").read_text().strip() == _stage(run_copy, "placement")["key"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_upstream_change_recomputes_downstream_stages(run_copy: Path, toy_checkpoint: Path) -> None:  # noqa: F811
    old_models = _stage(run_copy, "models")["key"]
    placement_before = (run_copy / "placement.json").read_text()
    code, stdout, stderr = _run(
        toy_checkpoint, run_copy, "--set", "lipschitz_beta=0.001", "--set", "stages=[models,sweep,table]"
    )
    assert code == 0, stdout + stderr
    lines = stdout.splitlines()
    assert "stage models: recomputing: settings changed (lipschitz_beta 0.0005 → 0.001)" in lines
    assert "stage sweep: recomputing: upstream stage models changed" in lines
    # placement is not run this time: its stored result (for the old models) is not shown
    assert any(line.startswith("stage placement: not run (not in stages) and upstream stage models") for line in lines)
    assert (run_copy / "placement.json").read_text() == placement_before
    assert _stage(run_copy, "sweep")["upstream"]["models"] == _stage(run_copy, "models")["key"] != old_models
    assert _stage(run_copy, "models")["settings"]["lipschitz_beta"] == 0.001
    assert "placement" not in json.loads((run_copy / "results.json").read_text())


def test_strict_resume_refuses_changed_settings(run_copy: Path, toy_checkpoint: Path) -> None:  # noqa: F811
    before = {p.name: p.read_bytes() for p in run_copy.glob("*.json")}
    code, _stdout, stderr = _run(toy_checkpoint, run_copy, "--set", "test_images=100", "--resume", "strict")
    assert code == 2
    assert stderr.startswith("error: stage placement: settings changed (test_images 150 → 100);")
    assert len(_errors(stderr)) == 1
    assert {p.name: p.read_bytes() for p in run_copy.glob("*.json")} == before  # config.json untouched


def test_too_many_test_images_is_refused_before_writing(run_copy: Path, toy_checkpoint: Path) -> None:  # noqa: F811
    config = (run_copy / "config.json").read_bytes()
    code, _stdout, stderr = _run(toy_checkpoint, run_copy, "--set", "test_images=5000")
    assert code == 2
    assert stderr.startswith("error: test_images: 5000 exceeds the test set (")
    assert len(_errors(stderr)) == 1
    assert (run_copy / "config.json").read_bytes() == config


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "model=no-such-model"], "error: model: invalid value 'no-such-model'"),
        (["--resume", "sometimes"], "error: resume: invalid value 'sometimes'"),
        (["--set", "comp_lr=0"], "error: --set: comp_lr: invalid value 0; allowed: a finite number > 0"),
        (["--set", "seed=-1"], "error: --set: seed: invalid value -1; allowed: an integer >= 0"),
    ],
)
def test_bad_options_fail_before_anything_is_written(
    extra: list[str],
    message: str,
    toy_checkpoint: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = tmp_path / "new"
    args = ["correctnet", "run", *model(toy_checkpoint), "--out", str(out), *ARGS, *extra]
    res = cli(args, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith(message), res.stderr
    assert len(_errors(res.stderr)) == 1, res.stderr
    assert not out.exists()


def test_unreadable_checkpoint_fails_before_anything_is_written(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    (tmp_path / "bad.json").write_text("{}")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "new"
    res = cli(["correctnet", "run", *model(bad), "--out", str(out), *ARGS], cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error: model: cannot read checkpoint"), res.stderr
    assert not out.exists()


def test_branch_weights_are_verified_against_the_placement_results(tmp_path: Path) -> None:
    """The trained compensation branches that later stages load are checked against the SHA-256 recorded in the
    placement results: a flipped byte, a missing file or a record without the hash is refused with one line."""
    import torch
    from safetensors.torch import save_file

    from xbarlab.papers.p3 import stages as p3

    layers = ["conv1", "fc"]
    path = p3._branches_path(tmp_path, layers)
    path.parent.mkdir(parents=True)
    save_file({"conv1/w": torch.arange(6.0).reshape(2, 3)}, str(path))
    placement = {
        "methods": {"rl": {"placement": layers, "branches_sha256": p3._file_sha256(path)}},
        "compensation": {},
    }
    got_layers, _, state = p3._rl_branches(tmp_path, placement)
    assert got_layers == layers and state is not None and torch.equal(state["conv1/w"], torch.arange(6.0).reshape(2, 3))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the placement results' branches_sha256"):
        p3._rl_branches(tmp_path, placement)
    del placement["methods"]["rl"]["branches_sha256"]
    with pytest.raises(ValueError, match="no branches_sha256"):
        p3._rl_branches(tmp_path, placement)
    placement["methods"]["rl"]["branches_sha256"] = "0" * 64
    path.unlink()
    with pytest.raises(ValueError, match="missing; re-run the placement stage"):
        p3._rl_branches(tmp_path, placement)
    assert p3._rl_branches(tmp_path, {"methods": {"rl": {"placement": []}}, "compensation": {}})[2] is None
