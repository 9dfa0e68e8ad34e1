"""Per-layer weight errors of aihwkit with split tiles (512×512) vs one tile per layer (docs/peers-fidelity.md).

Run inside ``.venv-aihwkit``: ``.venv-aihwkit/bin/python benchmarks/aihwkit_tile_scaling_check.py [CHIPS]``.
Programs the shipped ResNet-20 on ``CHIPS`` aihwkit chips (seeds 1000 + k) per side, drifts them to 1 day and
prints the mean relative error ‖α·W_eff − W‖/‖W‖ of the layers that are split (576 rows > 512) and of two that are
not, then the ratio one-tile / split. No accuracy is computed (seconds, not hours).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_aihwkit as bench

LAYERS = (
    "layers.2.0.conv2",
    "layers.2.1.conv1",
    "layers.2.1.conv2",
    "layers.2.2.conv1",
    "layers.2.2.conv2",
    "layers.1.1.conv1",
    "fc",
)


def main() -> None:
    """Print the per-layer error table and the ratios."""
    from xbarlab.checkpoint import load_pretrained

    chips = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    torch.set_num_threads(1)
    model, _ = load_pretrained("resnet20-fmnist")
    model.eval()
    means: dict[str, dict[str, float]] = {}
    for side, tile in bench.AIHWKIT_SIDES.items():
        errors: dict[str, list[float]] = {layer: [] for layer in LAYERS}
        for k in range(chips):
            chip = bench.make_aihwkit_chip(model, bench.aihwkit_config(perfect=True, tile=tile), 1000 + k, 86400.0)
            per_layer = bench._aihwkit_weight_errors(chip, model)
            for layer in LAYERS:
                errors[layer].append(per_layer[layer])
        means[side] = {layer: statistics.mean(v) for layer, v in errors.items()}
        print(side, " ".join(f"{layer}:{means[side][layer]:.4f}" for layer in LAYERS), flush=True)
    split, whole = list(bench.AIHWKIT_SIDES)
    print(f"ratio {whole}/{split}:", " ".join(f"{la}:{means[whole][la] / means[split][la]:.3f}" for la in LAYERS))


if __name__ == "__main__":
    main()
