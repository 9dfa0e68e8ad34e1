"""Programming time of a whole ResNet-20 chip with exact IR drop (issue target: ≤ 5 s at 64×64, ≤ 15 s at 128×128).

Usage::

    .venv/bin/python benchmarks/bench_program_ir.py                 # 64×64 and 128×128, 2 chips each
    .venv/bin/python benchmarks/bench_program_ir.py --sizes 128 --chips 3

ResNet-20 (CIFAR shape, 3 input channels, 10 classes) is converted with the ``rram-ir`` preset (P1 parasitics:
R_driver 1 kΩ, R_wire_row 5 Ω, R_wire_col 10 Ω, R_sense 1 kΩ; 8-bit weights as 2 × 4-bit slices, differential
pair) with every convertible layer analog (``keep_digital: []``), then programmed with seeds 0, 1, ...: each
``xbarlab.program`` call samples the devices and solves every physical array's effective conductance. Prints wall
and CPU seconds per chip, the number of arrays, and the peak RSS of the process (MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128], help="crossbar sizes (rows = cols)")
    parser.add_argument("--chips", type=int, default=2, help="chips programmed per size")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()

    import torch

    import xbarlab
    from xbarlab.layers import analog_layers
    from xbarlab.models import build_model

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = build_model("resnet20", num_classes=10, in_channels=3).eval()
    print(f"# ResNet-20 chip with exact IR drop, torch threads = {torch.get_num_threads()}, load {os.getloadavg()}")
    print("| crossbar | arrays | wall (s) per chip | CPU (s) per chip |")
    print("|---|---:|---|---|")
    records = []
    for size in args.sizes:
        hw = xbarlab.load_preset("rram-ir").override({"crossbar.rows": size, "crossbar.cols": size, "keep_digital": []})
        chip = xbarlab.convert(model, hw)
        arrays = sum(layer.layout.num_arrays for layer in analog_layers(chip))
        wall, cpu = [], []
        for seed in range(args.chips):
            t0, c0 = time.perf_counter(), time.process_time()
            xbarlab.program(chip, seed)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        walls, cpus = ", ".join(f"{w:.2f}" for w in wall), ", ".join(f"{c:.2f}" for c in cpu)
        print(f"| {size}×{size} | {arrays} | {walls} | {cpus} |")
        records.append({"size": size, "arrays": arrays, "wall_s": wall, "cpu_s": cpu})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MiB")
    print(json.dumps({"cases": records, "peak_rss_mib": peak}))


if __name__ == "__main__":
    main()
