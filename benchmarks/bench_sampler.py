"""Cost of the per-MVM N(0, 1) samplers (xbarlab.sampling): ``exact`` (torch.randn) vs ``pooled``.

Usage::

    .venv/bin/python benchmarks/bench_sampler.py                  # ns per element at 1e6 … 1e8 elements
    .venv/bin/python benchmarks/bench_sampler.py --threads 1      # one torch thread (randn is single-threaded)
    .venv/bin/python benchmarks/bench_sampler.py --forward        # + the bench row with each sampler

The first table: nanoseconds per element of ``standard_normal(shape, sampler=...)`` (a fresh output tensor per
call, as the layers use it), median of ``--repeats`` calls after one warm-up, both samplers timed alternately.
Above glibc's mmap threshold (32 MiB at most unless ``MALLOC_MMAP_THRESHOLD_`` is set) a fresh tensor is mapped
and first touched on every call: those page faults cost both samplers the same and are part of the figure.
The layers draw at most one chunk of partial sums per call (``layers.MAX_PARTIAL_BYTES``, 8 MiB = 2.1e6 float32).

``--forward``: the ``xbarlab bench`` row "DAC 8b + per-tile ADC 8b + per-MVM read noise" (ResNet-20, batch 256,
``rram``, 64×64 tiles, random weights) with ``sampling.gaussian`` exact and pooled, each timed alternately with the
digital model (:func:`xbarlab.bench.run_forward_bench`); ``AnalogLayer._gaussian`` reads ``hw.sampling.gaussian``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from functools import partial
from typing import Any

ROW = "DAC 8b + per-tile ADC 8b + per-MVM read noise"


def _paired(fns: list[Any], repeats: int) -> list[float]:
    """Median seconds of each function, timed in turn ``repeats`` times after one warm-up round."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def per_element_table(sizes: list[int], repeats: int) -> None:
    import torch

    from xbarlab.sampling import standard_normal

    print("| elements | exact (ns/element) | pooled (ns/element) | exact / pooled |\n|---:|---:|---:|---:|")
    for n in sizes:
        fns = [
            partial(standard_normal, (n,), generator=torch.Generator().manual_seed(0), device="cpu", sampler=s)
            for s in ("exact", "pooled")
        ]
        exact, pooled = _paired(fns, repeats)
        print(f"| {n:.0e} | {exact / n * 1e9:.2f} | {pooled / n * 1e9:.2f} | {exact / pooled:.1f}× |", flush=True)


def forward_rows(repeats: int) -> None:
    from xbarlab.bench import BENCH_CONFIGS, run_forward_bench

    base = BENCH_CONFIGS[ROW]
    configs = {f"{ROW}, sampling {s}": {**base, "sampling.gaussian": s} for s in ("exact", "pooled")}
    digital, rows = run_forward_bench(repeats=repeats, configs=configs)
    print(f"\ndigital ResNet-20 forward, batch 256: {digital * 1e3:.0f} ms (median)")
    print("| configuration | analog (ms) | digital, same pairs (ms) | analog / digital |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r.config} | {r.median_s * 1e3:.0f} | {r.digital_s * 1e3:.0f} | {r.ratio:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e6, 2e6, 1e7, 1e8])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--forward", action="store_true", help="also time the bench row with each sampler")
    parser.add_argument("--forward-repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}, {malloc}")
    per_element_table([int(s) for s in args.sizes], args.repeats)
    if args.forward:
        forward_rows(args.forward_repeats)


if __name__ == "__main__":
    main()
