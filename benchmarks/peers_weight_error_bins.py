"""Per-weight error of aihwkit (one tile per layer; stock and keeping the pairs) vs xbarlab, binned by |W| / w_max.

See docs/peers-fidelity.md, finding 4. Run inside ``.venv-aihwkit``:
``.venv-aihwkit/bin/python benchmarks/peers_weight_error_bins.py [CHIPS] [TIME_S]``.
Programs the shipped ResNet-20 on ``CHIPS`` chips per side (:data:`SIDES`; seeds 1000 + k, as
``bench_vs_aihwkit.py --fidelity``), drifts them to ``TIME_S`` (s, default one day) with global drift
compensation, and bins every weight of every layer by its normalised magnitude |W| / max|W| of its layer (20 bins).
Per bin and side it prints the mean signed error along the weight's sign, E[(s·W_eff − W)·sign(W)] / w_max (a bias
towards or away from zero), and the RMS error sqrt(E[(s·W_eff − W)²]) / w_max, both unit-free (fractions of the
layer's w_max). A second table gives, per layer and side, the mean over chips of the layer gain
⟨W_eff, W⟩/⟨W, W⟩, the spread of the per-output-channel gains, and the residual ‖W_eff − g_c·W‖/‖W‖ left after
each channel's own gain g_c (unit-free). No accuracy is computed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_aihwkit as bench

BINS = 20
SIDES = ("aihwkit-1tile", "aihwkit-1tile-pairs", "xbarlab")
"""Stock aihwkit, aihwkit keeping each device of the pair (``bench.pair_keeping_pcm_model``), xbarlab."""


def _accumulate(acc: torch.Tensor, eff: dict[str, torch.Tensor], ref: dict[str, torch.nn.Module]) -> None:
    """Add each weight's (count, signed error, squared error), normalised by its layer's w_max, to its bin."""
    for name, w_eff in eff.items():
        w = ref[name].weight.detach().reshape(w_eff.shape).double()
        w_max = w.abs().max()
        u = (w.abs() / w_max).reshape(-1)
        err = ((w_eff.double() - w) / w_max).reshape(-1)
        b = (u * BINS).long().clamp(max=BINS - 1)
        acc[0].index_add_(0, b, torch.ones_like(err))
        acc[1].index_add_(0, b, err * torch.sign(w).reshape(-1))
        acc[2].index_add_(0, b, err * err)


def _gains(eff: dict[str, torch.Tensor], ref: dict[str, torch.nn.Module]) -> dict[str, tuple[float, float, float]]:
    """Per layer: (layer gain, std of the per-output-channel gains, residual after the channel gains), unit-free."""
    out: dict[str, tuple[float, float, float]] = {}
    for name, w_eff in eff.items():
        w = ref[name].weight.detach().reshape(w_eff.shape[0], -1).double()
        we = w_eff.reshape(w.shape).double()
        channel = (we * w).sum(1) / (w * w).sum(1)
        layer = (we * w).sum() / (w * w).sum()
        residual = (we - channel[:, None] * w).norm() / w.norm()
        out[name] = (float(layer), float(channel.std()), float(residual))
    return out


def main() -> None:
    """Print the binned table for both sides."""
    from xbarlab.checkpoint import load_pretrained

    chips = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    t_s = float(sys.argv[2]) if len(sys.argv) > 2 else 86400.0
    torch.set_num_threads(1)
    model, _ = load_pretrained("resnet20-fmnist")
    model.eval()
    ref = dict(model.named_modules())
    x, _ = bench._test_set(64)
    sums = {side: torch.zeros(3, BINS, dtype=torch.float64) for side in SIDES}
    gains: dict[str, dict[str, list[tuple[float, float, float]]]] = {side: {} for side in SIDES}
    for k in range(chips):
        effs = {}
        for side, pairs in (("aihwkit-1tile", False), ("aihwkit-1tile-pairs", True)):
            rpu = bench.aihwkit_config(perfect=True, tile=0, keep_pairs=pairs)
            effs[side] = bench.aihwkit_effective_weights(bench.make_aihwkit_chip(model, rpu, 1000 + k, t_s))
        effs["xbarlab"] = bench.xbarlab_effective_weights(
            bench.make_xbarlab_chip(model, bench.xbarlab_hw({}), 1000 + k, t_s, x)
        )
        for side, eff in effs.items():
            _accumulate(sums[side], eff, ref)
            for name, g in _gains(eff, ref).items():
                gains[side].setdefault(name, []).append(g)
        print(f"chip {k} done", file=sys.stderr, flush=True)
    print(f"{chips} chips a side, t = {t_s:g} s; errors in units of the layer's w_max")
    print(
        "| |W|/w_max | weights | "
        + " | ".join(f"{s} bias" for s in SIDES)
        + " | "
        + " | ".join(f"{s} RMS" for s in SIDES)
        + " |"
    )
    print("|---|---:|" + "---:|" * (2 * len(SIDES)))
    for i in range(BINS):
        n = sums[SIDES[0]][0, i]
        if n == 0:
            continue
        bias = [sums[s][1, i] / sums[s][0, i] for s in SIDES]
        rms = [(sums[s][2, i] / sums[s][0, i]).sqrt() for s in SIDES]
        print(
            f"| {i / BINS:.2f}–{(i + 1) / BINS:.2f} | {int(n / chips)} | "
            + " | ".join(f"{b:+.5f}" for b in bias)
            + " | "
            + " | ".join(f"{r:.5f}" for r in rms)
            + " |"
        )
    print()
    print("| layer | " + " | ".join(f"{s} gain / channel-gain std / residual" for s in SIDES) + " |")
    print("|---|" + "---|" * len(SIDES))
    for name in gains[SIDES[0]]:
        cells = []
        for side in SIDES:
            per_chip = gains[side][name]
            mean = [sum(v[i] for v in per_chip) / len(per_chip) for i in range(3)]
            cells.append(f"{mean[0]:.4f} / {mean[1]:.4f} / {mean[2]:.4f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
