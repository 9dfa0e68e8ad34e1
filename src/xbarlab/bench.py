"""Forward-pass benchmark: digital vs analog ResNet-20 or the tiny ViT (the numbers the README records).

Run ``xbarlab bench`` (or ``python benchmarks/bench_forward.py``). Median of repeated timed runs after warm-up,
in one process, with the ratio analog/digital per configuration and the peak resident memory.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from xbarlab.chip import calibrate, program
from xbarlab.conversion import convert
from xbarlab.models import build_model
from xbarlab.presets import load_preset
from xbarlab.timing import device_synchronizer

BENCH_CONFIGS: dict[str, dict[str, Any]] = {
    "ideal (no non-idealities)": {"preset": "ideal"},
    "static noise only (rram, 8-bit slices, frozen read noise)": {"preset": "rram", "dac.bits": None},
    "DAC 8b + static noise (rram preset)": {"preset": "rram"},
    "DAC 8b + per-MVM read noise, no ADC": {"preset": "rram", "read_noise.mode": "per_mvm"},
    "DAC 8b + per-tile ADC 8b (static noise)": {"preset": "rram", "adc.bits": 8},
    "DAC 8b + per-tile ADC 8b + per-MVM read noise": {
        "preset": "rram",
        "adc.bits": 8,
        "read_noise.mode": "per_mvm",
    },
    "DAC 8b + per-tile ADC 8b + per-MVM read noise, pooled sampler (docs/sampling.md)": {
        "preset": "rram",
        "adc.bits": 8,
        "read_noise.mode": "per_mvm",
        "sampling.gaussian": "pooled",
    },
    "DAC 8b + ADC 8b (0.5 LSB noise) + per-MVM noise, 4-bit slices": {
        "preset": "rram",
        "weights.noise_granularity": "slice",
        "adc.bits": 8,
        "adc.noise_lsb": 0.5,
        "read_noise.mode": "per_mvm",
    },
}


BENCH_MODELS: dict[str, tuple[int, int, int]] = {"resnet20": (3, 32, 32), "vit-tiny": (1, 28, 28)}
"""Models ``xbarlab bench --model`` times (registry name → input shape C×H×W; random initialisation, 10 classes)."""


def bench_input_shape(model_name: str) -> tuple[int, int, int]:
    """Input shape (C, H, W) of a benchmark model; ``ValueError`` naming the allowed models otherwise."""
    if model_name not in BENCH_MODELS:
        raise ValueError(f"bench --model: unknown model {model_name!r}; allowed: {', '.join(BENCH_MODELS)}")
    return BENCH_MODELS[model_name]


@dataclass(frozen=True)
class BenchRow:
    """One analog configuration: median forward time (s), ratio to the digital forward, programming time (s)."""

    config: str
    median_s: float
    ratio: float
    program_s: float
    digital_s: float


def _median_time(
    fn: Callable[[], Any], repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None
) -> float:
    """Median wall time (s) of ``fn`` over ``repeats`` calls after ``warmup`` calls, each ended by ``sync()``."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _paired_medians(
    first: Callable[[], Any], second: Callable[[], Any], repeats: int, sync: Callable[[], None] = lambda: None
) -> tuple[float, float]:
    """Median times (s) of two functions timed alternately, so that machine-speed drift hits both alike.

    ``sync`` (see :func:`xbarlab.timing.device_synchronizer`) ends every timed call, so queued device work is
    counted."""
    first()
    second()
    sync()
    a, b = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        first()
        sync()
        t1 = time.perf_counter()
        second()
        sync()
        t2 = time.perf_counter()
        a.append(t1 - t0)
        b.append(t2 - t1)
    return statistics.median(a), statistics.median(b)


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_device_memory_mb(device: str | torch.device) -> float | None:
    """Peak memory allocated by PyTorch on a CUDA ``device``, MB (None for other devices: see :func:`peak_rss_mb`)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(dev) / 2**20


@torch.no_grad()
def run_forward_bench(
    model: nn.Module | None = None,
    *,
    batch: int = 256,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    repeats: int = 5,
    device: str = "cpu",
    configs: dict[str, dict[str, Any]] | None = None,
    model_name: str = "resnet20",
) -> tuple[float, list[BenchRow]]:
    """Median digital forward time (s) and one row per analog configuration.

    Each configuration is timed alternately with the digital model (``repeats`` pairs) and its ratio uses the
    digital median of those same pairs: on a shared machine a slow minute then slows both sides alike. Without
    ``model``, ``model_name`` (a key of :data:`BENCH_MODELS`, e.g. ``vit-tiny`` with ``input_shape=(1, 28, 28)``)
    is built, randomly initialised from seed 0 (timing only).
    """
    if model is None:
        bench_input_shape(model_name)  # refuses an unknown name
        torch.manual_seed(0)
        model = build_model(model_name, in_channels=input_shape[0], num_classes=10)
    model = model.eval().to(device)
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    sync = device_synchronizer(device)
    digital = _median_time(lambda: model(x), repeats, sync=sync)
    rows = []
    for label, spec in (configs or BENCH_CONFIGS).items():
        spec = dict(spec)
        hw = load_preset(spec.pop("preset"))
        if spec:
            hw = hw.override(spec)
        chip = convert(model, hw).to(device)
        sync()
        t0 = time.perf_counter()
        program(chip, 0)
        sync()
        program_s = time.perf_counter() - t0
        calibrate(chip, [x[:64]], num_batches=1)
        digital_pair, analog = _paired_medians(lambda: model(x), partial(chip, x), repeats, sync)
        rows.append(BenchRow(label, analog, analog / digital_pair, program_s, digital_pair))
    return digital, rows
