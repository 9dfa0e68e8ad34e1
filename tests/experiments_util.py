"""Helpers shared by the experiment/report tests: a toy checkpoint trained on sklearn digits and sweep files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TOY_SWEEP = """\
name: {name}
description: toy sweep on sklearn digits
base:
  model: {{checkpoint: {checkpoint}}}
  data: {{dataset: digits, test_samples: {test_samples}, batch_size: 150, calib_batches: 1}}
  hardware: {{preset: fefet}}
  mitigation: none
  mitigation_options:
    bn_adapt: {{num_batches: 2, batch_size: 64}}
  metrics: {{pc2_layer: features.3}}
grid:
  hardware.read_noise.sigma: {sigmas}
  mitigation: [none, bn_adapt]
chips: {chips}
seed: {seed}
"""


def write_toy_sweep(
    path: Path,
    checkpoint: Path,
    *,
    name: str = "toy",
    sigmas: str = "[0.1, 0.3]",
    chips: int = 2,
    seed: int = 0,
    test_samples: int = 150,
) -> Path:
    """Write a toy sweep file (grid: σ × {none, bn_adapt}); returns its path."""
    path.write_text(
        TOY_SWEEP.format(
            name=name, checkpoint=checkpoint, sigmas=sigmas, chips=chips, seed=seed, test_samples=test_samples
        )
    )
    return path


@pytest.fixture(scope="session")
def toy_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A narrow vgg-small trained for 3 epochs on sklearn digits (~95 % test accuracy), saved as a checkpoint."""
    import torch

    from xbarlab.experiments.toy import save_small_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path, meta = save_small_checkpoint(tmp_path_factory.mktemp("toy") / "toy", epochs=3)
    finally:
        torch.set_num_threads(threads)
    assert meta["test_accuracy"] > 80.0
    return path


def cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real ``xbarlab`` CLI in a subprocess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    code = "from xbarlab.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def dedent(text: str) -> str:
    """textwrap.dedent, stripped of the first newline."""
    return textwrap.dedent(text).lstrip("\n")
