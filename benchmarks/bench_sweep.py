"""Sweep throughput: trials per minute of a ResNet-20 Fashion-MNIST sweep with 1 and 2 worker processes.

One trial = convert ResNet-20 for a P1 preset, program a chip, calibrate the 8-bit DACs, test on the full
10,000-image Fashion-MNIST test set (the ``accuracy`` trial of ``xbarlab sweep``, no mitigation). The sweep
runs on the ``process`` executor with 1 and with 2 workers (1 torch thread each, a fresh store each time):

    python benchmarks/bench_sweep.py                       # 8 trials per run, workers 1 and 2
    python benchmarks/bench_sweep.py --trials 4 --test-samples 2000 --workers 1,2,4

Reported per run: wall time including worker start-up, trials/min over the whole run, the steady-state
trials/min between the first and the last finished trial (start-up excluded), and the CPU time per trial with
the throughput it implies on otherwise idle cores (workers × 60 / CPU s per trial; an upper bound, useful when
the machine is shared). The model is the shipped
``resnet20-fmnist`` when installed; otherwise an untrained ResNet-20 of the same architecture (same compute,
meaningless accuracy: the script says so). Results are printed as a Markdown table and written as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _model_entry(tmp: Path) -> tuple[dict[str, str], str]:
    from xbarlab.checkpoint import list_pretrained, save_checkpoint

    if "resnet20-fmnist" in list_pretrained():
        return {"pretrained": "resnet20-fmnist"}, "shipped pre-trained resnet20-fmnist"
    import torch

    from xbarlab.models import build_model

    torch.manual_seed(0)
    net = build_model("resnet20", in_channels=1, num_classes=10)
    path = tmp / "resnet20-untrained"
    save_checkpoint(net, path, {"dataset": "fashion-mnist", "note": "untrained, benchmark only"})
    return {"checkpoint": str(path)}, "UNTRAINED ResNet-20 (resnet20-fmnist not installed; same compute)"


def _spec_text(model: dict[str, str], trials: int, test_samples: int | None, preset: str, name: str) -> str:
    import yaml

    chips = max(1, trials // 2)
    data: dict[str, Any] = {"dataset": "fashion-mnist", "batch_size": 500, "calib_batches": 2}
    if test_samples is not None:
        data["test_samples"] = test_samples
    doc = {
        "name": name,
        "base": {"model": model, "data": data, "hardware": {"preset": preset}, "mitigation": "none"},
        "grid": {"hardware.read_noise.sigma": [0.05, 0.1] if trials > 1 else [0.05]},
        "chips": chips,
        "seed": 0,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def run(workers: list[int], trials: int, test_samples: int | None, preset: str) -> dict[str, Any]:
    from xbarlab.experiments import Store, parse_spec, run_sweep

    out: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "preset": preset,
        "test_samples": test_samples or 10000,
        "runs": [],
    }
    with contextlib.suppress(OSError):
        out["load_average_start"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="xbarlab-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model, desc = _model_entry(tmp)
        out["model"] = desc
        for w in workers:
            spec = parse_spec(_spec_text(model, trials, test_samples, preset, f"bench-w{w}"))
            store = tmp / f"bench-w{w}.sqlite"
            t0 = time.perf_counter()
            summary = run_sweep(spec, store=store, executor="process", workers=w, threads=1)
            wall = time.perf_counter() - t0
            with Store(store, readonly=True) as db:
                rows = db.rows()
                finished = sorted(r.finished_at for r in rows)
                per_trial = db.timings().get("total_s", [])
                cpu = db.timings().get("cpu_s", [])
            first = _dt.datetime.fromisoformat(finished[0])
            last = _dt.datetime.fromisoformat(finished[-1])
            span = (last - first).total_seconds()
            steady = 60.0 * (len(finished) - w) / span if span > 0 and len(finished) > w else None
            run_info = {
                "workers": w,
                "trials": summary.ran,
                "wall_s": round(wall, 2),
                "trials_per_min": round(60.0 * summary.ran / wall, 3),
                "steady_trials_per_min": round(steady, 3) if steady else None,
                "mean_trial_s": round(sum(per_trial) / len(per_trial), 2) if per_trial else None,
                "mean_trial_cpu_s": round(sum(cpu) / len(cpu), 2) if cpu else None,
                # what this many workers would reach on otherwise idle cores (CPU time per trial)
                "idle_estimate_trials_per_min": round(60.0 * w / (sum(cpu) / len(cpu)), 2) if cpu else None,
                "accuracy_mean": round(sum(r.metrics["accuracy"] for r in rows) / len(rows), 2),
            }
            out["runs"].append(run_info)
            print(json.dumps(run_info), file=sys.stderr, flush=True)
    base = out["runs"][0]
    for r in out["runs"]:
        r["speedup"] = round(r["trials_per_min"] / base["trials_per_min"], 2)
        if r["steady_trials_per_min"] and base["steady_trials_per_min"]:
            r["steady_speedup"] = round(r["steady_trials_per_min"] / base["steady_trials_per_min"], 2)
    with contextlib.suppress(OSError):
        out["load_average_end"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--trials", type=int, default=8, help="trials per run (default 8)")
    parser.add_argument("--test-samples", type=int, default=None, help="test images per trial (default all 10k)")
    parser.add_argument("--preset", default="rram", help="hardware preset (default rram)")
    parser.add_argument("--out", default="benchmarks/results/bench_sweep.json", help="JSON output file")
    args = parser.parse_args()
    result = run([int(w) for w in args.workers.split(",")], args.trials, args.test_samples, args.preset)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"model: {result['model']}; preset {result['preset']}; {result['test_samples']} test images per trial;"
        f" host {result['host']} ({result['cpu_count']} CPUs); load average at start "
        f"{result.get('load_average_start')}"
    )
    print(
        "| workers | trials | wall (s) | trials/min | speed-up | steady trials/min | steady speed-up | s/trial "
        "| CPU s/trial | idle-core estimate trials/min |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in result["runs"]:
        print(
            f"| {r['workers']} | {r['trials']} | {r['wall_s']} | {r['trials_per_min']} | {r['speedup']} | "
            f"{r['steady_trials_per_min']} | {r.get('steady_speedup')} | {r['mean_trial_s']} | "
            f"{r['mean_trial_cpu_s']} | {r['idle_estimate_trials_per_min']} |"
        )


if __name__ == "__main__":
    main()
