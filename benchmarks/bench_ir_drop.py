"""Benchmark of the exact IR-drop model ``xbarlab.circuits.effective_conductance`` (P1 parasitics, float64).

Usage::

    .venv/bin/python benchmarks/bench_ir_drop.py            # all cases, each in a fresh process
    .venv/bin/python benchmarks/bench_ir_drop.py --cases 64 128 --threads 2

Cases: one 64×64, one 128×128 and one 256×256 array; a ResNet-20-sized chip of 400 arrays of 64×64 (≈ 97 weight
tiles × 2 slices × 2 differential sides) and of 220 arrays of 128×128. Each case runs in its own Python process
so that its peak RSS (``resource.getrusage``) is its own; wall and CPU time are of the ``effective_conductance``
call only (after a warm-up on a small array). The 1-minute load average is printed: on a shared machine the wall
time grows with it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CASES: dict[str, tuple[int, int]] = {
    "64": (1, 64),
    "128": (1, 128),
    "256": (1, 256),
    "chip64": (400, 64),
    "chip128": (220, 128),
}


def run_case(name: str, threads: int | None, seed: int) -> dict[str, float | int | str]:
    """Time one case in this process; returns a JSON-able record."""
    import torch

    from xbarlab.circuits import P1_PARASITICS, effective_conductance_p

    if threads is not None:
        torch.set_num_threads(threads)
    batch, n = CASES[name]
    gen = torch.Generator().manual_seed(seed)
    G = 0.04e-6 + (20e-6 - 0.04e-6) * torch.rand(batch, n, n, generator=gen, dtype=torch.float64)  # S
    effective_conductance_p(G[:1, :16, :16], P1_PARASITICS)  # warm-up (library loading, allocator)
    load = os.getloadavg()[0]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    out = effective_conductance_p(G, P1_PARASITICS)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    assert out.shape == G.shape and bool(torch.isfinite(out).all())
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    return {
        "case": name,
        "arrays": batch,
        "n": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "ms_per_array": 1e3 * wall / batch,
        "peak_rss_mib": rss_mib,
        "threads": torch.get_num_threads(),
        "load_1min": load,
        "mean_gain": float(out.sum() / G.sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--in-process", action="store_true", help="run all cases in this process")
    parser.add_argument("--json", action="store_true", help="print one JSON record per case")
    parser.add_argument("--worker", choices=list(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(run_case(args.worker, args.threads, args.seed)))
        return 0

    records: list[dict[str, float | int | str]] = []
    for name in args.cases:
        if args.in_process:
            records.append(run_case(name, args.threads, args.seed))
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--seed", str(args.seed)]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        records.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    if args.json:
        for rec in records:
            print(json.dumps(rec))
        return 0
    print(f"# effective_conductance, P1 parasitics, float64, torch threads = {records[0]['threads']}")
    header = "| case | arrays | size | wall (s) | CPU (s) | ms / array | peak RSS (MiB) | load (1 min) |"
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in records:
        print(
            f"| {r['case']} | {r['arrays']} | {r['n']}×{r['n']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
            f"{r['ms_per_array']:.1f} | {r['peak_rss_mib']:.0f} | {r['load_1min']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
