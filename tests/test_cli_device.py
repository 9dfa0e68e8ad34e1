"""Every command's ``--device``: ``cuda`` without a GPU, an unknown device and a missing GPU index are each refused
in ONE ``error: --device …`` line (exit status 2) before any work, nothing written.

The commands run in-process through :func:`xbarlab.cli.main` (the console script's own one-line error handling, on
top of Typer's parsing). ``torch.cuda.is_available`` / ``device_count`` are monkeypatched, so the cases are the same
on a machine with or without a GPU; none evaluates or trains a model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments_util import toy_checkpoint, write_toy_sweep  # noqa: F401  (pytest fixture)
from xbarlab.cli import main

COMMANDS = [
    ["evaluate", "--hw", "fefet", "--pretrained", "resnet20-fmnist", "--out", "{out}"],
    ["mitigate", "--hw", "fefet", "--pretrained", "resnet20-fmnist", "--out", "{out}"],
    ["distortion", "--hw", "fefet", "--out", "{out}"],
    ["train", "-m", "resnet20", "-d", "digits", "--out", "{out}"],
    ["correctnet", "run", "--set", "model=lenet5-fmnist", "--out", "{out}"],
    ["p2", "evaluate", "-o", "{out}"],
    ["p2", "drift", "-o", "{out}"],
    ["p2", "train-detector", "-o", "{out}"],
    ["p2", "train-segmenter", "-o", "{out}"],
    ["bench", "--repeats", "1"],
    ["demo", "-o", "{out}"],
    ["sweep", "{spec}", "--store", "{out}"],
]


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The single ``error:`` line of ``xbarlab ARGS``, which must exit with status 2."""
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert info.value.code == 2, err
    assert len(lines) == 1 and "Traceback" not in err and "╭" not in err, err
    return lines[0]


def _args(command: list[str], tmp_path: Path, checkpoint: Path, device: str) -> tuple[list[str], Path]:
    out = tmp_path / "out"
    spec = write_toy_sweep(tmp_path / "toy.yaml", checkpoint) if "{spec}" in command else None
    args = [a.replace("{out}", str(out)).replace("{spec}", str(spec)) for a in command]
    return [*args, "--device", device], out


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_cuda_without_a_gpu_is_one_line_naming_the_option_and_the_reason(
    command: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    toy_checkpoint: Path,  # noqa: F811
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args, out = _args(command, tmp_path, toy_checkpoint, "cuda")
    line = _refused(args, capsys)
    assert line.startswith("error: --device: cuda requested but torch.cuda.is_available() is False"), line
    assert line.endswith("allowed: cpu"), line
    assert not out.exists()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("device", ["meta", "tpu", "mps"])
def test_a_device_other_than_cpu_or_cuda_is_refused(
    command: list[str],
    device: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    toy_checkpoint: Path,  # noqa: F811
) -> None:
    """``meta`` is the tests' stand-in for CUDA, never a user's device: it holds no values to report."""
    args, out = _args(command, tmp_path, toy_checkpoint, device)
    line = _refused(args, capsys)
    assert line == f"error: --device: invalid value {device!r}; allowed: cpu, cuda, cuda:N", line
    assert not out.exists()


@pytest.mark.parametrize("command", [COMMANDS[0], COMMANDS[9], COMMANDS[11]], ids=["evaluate", "bench", "sweep"])
def test_a_gpu_index_that_does_not_exist_is_refused(
    command: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    toy_checkpoint: Path,  # noqa: F811
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    args, out = _args(command, tmp_path, toy_checkpoint, "cuda:2")
    line = _refused(args, capsys)
    assert line == "error: --device cuda:2: no such GPU; allowed: cuda:0 … cuda:1", line
    assert not out.exists()
