"""Which layer makes a bad chip bad: leave-one-layer-out accuracy of aihwkit (pairs kept) and xbarlab chips.

See docs/peers-fidelity.md, finding 5. Run inside ``.venv-aihwkit``:
``.venv-aihwkit/bin/python benchmarks/peers_layer_rescue.py [CHIPS] [TIME_S] [IMAGES]`` (defaults 40, one year,
2,000). Programs the shipped ResNet-20 on ``CHIPS`` chips per side (seeds 1000 + k, as ``bench_vs_aihwkit.py
--fidelity``), drifts them to ``TIME_S`` (s) with global drift compensation and takes every analog layer's
compensated effective weights (``bench.aihwkit_effective_weights`` / ``bench.xbarlab_effective_weights``). On the
digital model it then measures, on the first ``IMAGES`` Fashion-MNIST test images:

* ``all``: every layer with its chip weights (the chip's accuracy, to the image: the effective weights are what the
  chip computes with under perfect IO);
* ``rescue[L]``: every layer with its chip weights except layer L, which gets its ideal weights back. The gain
  ``rescue[L] − all`` is how many points layer L's errors cost this chip.

One JSON line per (side, chip) in ``benchmarks/results/peers_layer_rescue.jsonl`` (incremental: chips already there
are skipped); the summary table is printed and written to ``benchmarks/results/peers_layer_rescue.md``.
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_aihwkit as bench

SIDES = ("aihwkit-1tile-pairs", "xbarlab")
OUT = bench.RESULTS / "peers_layer_rescue.jsonl"


def _with_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of the digital ``model`` whose named layers carry ``weights`` (reshaped to their own shapes)."""
    out = copy.deepcopy(model)
    mods = dict(out.named_modules())
    with torch.no_grad():
        for name, w in weights.items():
            mods[name].weight.copy_(w.reshape(mods[name].weight.shape))
    return out.eval()


def _effective(side: str, model: nn.Module, seed: int, t_s: float, calib: torch.Tensor) -> dict[str, torch.Tensor]:
    if side == "xbarlab":
        chip = bench.make_xbarlab_chip(model, bench.xbarlab_hw({}, bench.XBARLAB_SIDES[side]), seed, t_s, calib)
        return bench.xbarlab_effective_weights(chip)
    hw = bench.aihwkit_config(perfect=True, tile=bench.AIHWKIT_PAIR_SIDES[side], keep_pairs=True)
    return bench.aihwkit_effective_weights(bench.make_aihwkit_chip(model, hw, seed, t_s))


def run(chips: int, t_s: float, images: int) -> None:
    from xbarlab.checkpoint import load_pretrained

    model, _ = load_pretrained("resnet20-fmnist")
    model.eval()
    x, y = bench._test_set(images)
    done = set()
    if OUT.exists():
        for line in OUT.read_text().splitlines():
            r = json.loads(line)
            if r["time_s"] == t_s and r["images"] == images:
                done.add((r["side"], r["chip"]))
    for k in range(chips):
        for side in SIDES:
            if (side, k) in done:
                continue
            eff = _effective(side, model, 1000 + k, t_s, x[:64])
            acc_all = bench._accuracy(_with_weights(model, eff), x, y)
            rescue = {}
            for name in eff:
                rest = {n: w for n, w in eff.items() if n != name}
                rescue[name] = bench._accuracy(_with_weights(model, rest), x, y)
            rec = {"side": side, "chip": k, "time_s": t_s, "images": images, "all": acc_all, "rescue": rescue}
            with OUT.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            best = max(rescue, key=lambda n: rescue[n])
            gain = rescue[best] - acc_all
            print(f"{side:20s} chip {k:3d} {acc_all:6.2f} %  best rescue {best} +{gain:.2f}", flush=True)


def summarize(t_s: float, images: int, bad_below: float = 87.0) -> str:
    """Per side and layer: mean rescue gain over all chips and over the bad chips (accuracy < ``bad_below`` %)."""
    recs = [json.loads(line) for line in OUT.read_text().splitlines()]
    recs = [r for r in recs if r["time_s"] == t_s and r["images"] == images]
    sides = [s for s in SIDES if any(r["side"] == s for r in recs)]
    layers = list(recs[0]["rescue"])
    head = ["layer"]
    for s in sides:
        n = sum(r["side"] == s for r in recs)
        bad = sum(r["side"] == s and r["all"] < bad_below for r in recs)
        head += [f"{s}: all {n} chips", f"{s}: {bad} chips < {bad_below:g} %"]
    lines = [
        f"Leave-one-layer-out rescue gain (points), t = {t_s:g} s, {images} test images: mean over chips of "
        "acc(all chip weights but this layer's) − acc(all chip weights).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name in layers:
        row = [name]
        for s in sides:
            gains = [r["rescue"][name] - r["all"] for r in recs if r["side"] == s]
            bad = [r["rescue"][name] - r["all"] for r in recs if r["side"] == s and r["all"] < bad_below]
            row += [f"{statistics.mean(gains):+.2f}", f"{statistics.mean(bad):+.2f}" if bad else "–"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    chips = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    t_s = float(sys.argv[2]) if len(sys.argv) > 2 else bench.TIMES_S["1 year"]
    images = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    torch.set_num_threads(1)
    bench.RESULTS.mkdir(exist_ok=True)
    run(chips, t_s, images)
    md = summarize(t_s, images)
    (bench.RESULTS / "peers_layer_rescue.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
