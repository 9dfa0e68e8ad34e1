"""Cost of Gaussian draws on this CPU: why per-MVM read noise through per-tile ADCs misses the 2.5× target.

Usage::

    .venv/bin/python benchmarks/bench_rng.py            # 1.5 M elements (one 8 MiB chunk of partial sums)

Every ADC conversion with per-MVM read noise needs its own N(0, 1) draw (≈ 2.5 × 10⁸ per ResNet-20 forward at
batch 256). This prints nanoseconds per element, single-threaded generators, median of repeated fills of a
preallocated buffer, for: torch's Gaussian (``normal_``), uniform and 32-bit integer fills (mt19937), NumPy's
SFC64 raw 64-bit words (per 32 bits) and its ziggurat Gaussian, and a Box–Muller transform in torch on top of
NumPy uniforms. See docs/simulator.md, "Speed".
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _ns_per_element(fn: Callable[[], object], n: int, repeats: int) -> float:
    from xbarlab.bench import _median_time

    return _median_time(fn, repeats) / n * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1_500_000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    import numpy as np
    import torch

    n, r = args.elements, args.repeats
    x = torch.empty(n)
    xi = torch.empty(n, dtype=torch.int32)
    gen = torch.Generator().manual_seed(1)
    rng = np.random.Generator(np.random.SFC64(1))
    bits = np.random.SFC64(2)
    o32 = np.empty(n, dtype=np.float32)
    o64 = np.empty(n)
    u = torch.from_numpy(o32)
    h = n // 2
    radius, sine = torch.empty(h), torch.empty(h)

    def box_muller() -> None:
        rng.random(out=o32, dtype=np.float32)
        u1, u2 = u[:h], u[h : 2 * h]
        torch.sub(1.0, u1, out=radius)
        radius.log_().mul_(-2.0).sqrt_()
        u2.mul_(2 * math.pi)
        torch.sin(u2, out=sine)
        u2.cos_().mul_(radius)
        u1.copy_(sine).mul_(radius)

    rows = {
        "torch normal_ (Gaussian, mt19937 + Box-Muller)": lambda: x.normal_(generator=gen),
        "torch uniform_": lambda: x.uniform_(generator=gen),
        "torch random_ int32 (32 random bits)": lambda: xi.random_(generator=gen),
        "numpy SFC64 raw, per 32 bits": lambda: bits.random_raw(n // 2),
        "numpy SFC64 standard_normal float64 (ziggurat)": lambda: rng.standard_normal(out=o64),
        "numpy SFC64 uniforms + torch Box-Muller": box_muller,
    }
    print(f"# {n:,} elements, median of {r}, torch threads {torch.get_num_threads()}")
    print("| draw | ns per element |\n|---|---:|")
    for label, fn in rows.items():
        print(f"| {label} | {_ns_per_element(fn, n, r):.2f} |")


if __name__ == "__main__":
    main()
