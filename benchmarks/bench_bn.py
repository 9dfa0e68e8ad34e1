"""BN adaptation and BN fine-tuning cost on a ResNet-20 chip (issue target: adaptation with 1,000 images ≤ 5 s).

Usage::

    .venv/bin/python benchmarks/bench_bn.py                     # 1,000 images, fefet chip, torch's threads
    .venv/bin/python benchmarks/bench_bn.py --images 2560 --threads 1

The shipped ResNet-20 (``resnet20-fmnist``) is converted for the ``fefet`` preset (P1 Table 1), programmed
(seed 0), its DACs calibrated, and then:

* BN adaptation (``xbarlab.mitigation.adapt_bn``): reset the BN running statistics and re-estimate them as the
  cumulative average over ``--images`` augmented Fashion-MNIST training images in batches of 128 (no labels);
* BN fine-tuning (``xbarlab.mitigation.finetune_bn``): one epoch of γ/β training over ``--finetune-images``
  labelled images, batch 128, without the preceding adaptation, timed per epoch.

Prints wall seconds, images per second and the thread count. Each step runs twice; the second (warm) run counts.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="BN adaptation images")
    parser.add_argument("--finetune-images", type=int, default=1000, help="images of the fine-tuning epoch")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()

    import torch

    import xbarlab
    from xbarlab.checkpoint import load_pretrained
    from xbarlab.data import get_dataset
    from xbarlab.data.base import make_loader
    from xbarlab.mitigation.bn import adapt_bn, finetune_bn

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, _ = load_pretrained("resnet20-fmnist")
    train_aug = get_dataset("fashion-mnist", "train", augment=True)
    train = get_dataset("fashion-mnist", "train", augment=False)
    chip = xbarlab.program(xbarlab.convert(model, xbarlab.load_preset("fefet")), 0)
    calib = make_loader(train.subset(range(256)), 128)
    xbarlab.calibrate(chip, calib)
    batches = -(-args.images // 128)
    adapt_set = train_aug.subset(range(args.images))
    ft_set = train.subset(range(args.finetune_images))
    adapt_s = finetune_s = 0.0
    for _ in range(2):
        loader = make_loader(adapt_set, 128, shuffle=True, seed=0)
        t0 = time.perf_counter()
        adapt_bn(chip, loader, num_batches=batches)
        adapt_s = time.perf_counter() - t0
    for _ in range(2):
        loader = make_loader(ft_set, 128, shuffle=True, seed=0)
        t0 = time.perf_counter()
        finetune_bn(chip, loader, epochs=1, progress=False, start_from_adapted=False)
        finetune_s = time.perf_counter() - t0
    threads = torch.get_num_threads()
    print(f"# ResNet-20 on a fefet chip, torch threads = {threads}, load {os.getloadavg()}")
    print("| step | images | wall (s) | images/s |")
    print("|---|---:|---:|---:|")
    n = args.images
    print(f"| BN adaptation ({batches} batches of ≤ 128) | {n} | {adapt_s:.2f} | {n / adapt_s:.0f} |")
    ft = args.finetune_images
    print(f"| BN fine-tuning, one epoch (γ/β, batch 128) | {ft} | {finetune_s:.2f} | {ft / finetune_s:.0f} |")
    record = {"threads": threads, "adapt_images": args.images, "adapt_s": adapt_s}
    record |= {"finetune_images": ft, "finetune_epoch_s": finetune_s}
    print(json.dumps(record))


if __name__ == "__main__":
    main()
