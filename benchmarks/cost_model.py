"""On-chip training cost of BN fine-tuning vs full retraining (P1 §5): VGG16/CIFAR-10, ResNet-18/TinyImageNet.

Usage::

    .venv/bin/python benchmarks/cost_model.py            # totals + sensitivity tables (Markdown)
    .venv/bin/python benchmarks/cost_model.py --layers   # also the per-layer tables

No data or trained weights are needed: the cost model walks each network once on a dummy input.
"""

from __future__ import annotations

import argparse
import dataclasses

from xbarlab.analysis.cost import CostConfig, EnergyConstants, training_cost
from xbarlab.models import build_model

CASES = (
    ("VGG16-BN / CIFAR-10", "vgg16-bn", (3, 32, 32), 10, "~95 %", "~8 %"),
    ("ResNet-18 / TinyImageNet", "resnet18", (3, 64, 64), 200, "~52 %", "~8 %"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", action="store_true", help="print the per-layer tables too")
    args = parser.parse_args()
    base = CostConfig()
    variants: list[tuple[str, CostConfig]] = [
        ("default (OPU cell 0.01 pJ)", base),
        ("OPU cell 0.001 pJ", dataclasses.replace(base, energy=EnergyConstants(opu_cell_pj=0.001))),
        ("OPU cell 0.1 pJ", dataclasses.replace(base, energy=EnergyConstants(opu_cell_pj=0.1))),
        ("ADC 0.5 pJ", dataclasses.replace(base, energy=EnergyConstants(adc_pj=0.5))),
        ("digital dW + program-verify", dataclasses.replace(base, update_scheme="digital")),
        ("no dW buffer (strict in-array OPU)", dataclasses.replace(base, count_weight_gradient_memory=False)),
        ("1 slice per weight", dataclasses.replace(base, slices_per_weight=1)),
        ("batch 16", dataclasses.replace(base, batch_size=16)),
    ]
    print(
        "| model | params | MACs | training memory full → BN (kB) | memory saving | "
        "energy/step full → BN (µJ) | energy saving | P1 memory / energy |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    reports = {}
    for label, name, shape, classes, p1_mem, p1_energy in CASES:
        model = build_model(name, num_classes=classes, in_channels=shape[0])
        r = training_cost(model, shape, config=base)
        reports[label] = (model, shape, r)
        s = r.summary()
        print(
            f"| {label} | {s['params'] / 1e6:.2f} M | {s['macs'] / 1e6:.0f} M | "
            f"{s['full']['training_memory_bytes'] / 1e3:,.0f} → "
            f"{s['bn']['training_memory_bytes'] / 1e3:,.0f} | {r.memory_saving_pct:.1f} % | "
            f"{s['full']['total_energy_uj']:.1f} → {s['bn']['total_energy_uj']:.1f} | "
            f"{r.energy_saving_pct:.1f} % | {p1_mem} / {p1_energy} |"
        )
    print()
    print("| variant | " + " | ".join(f"{lab}: memory / energy saving" for lab in reports) + " |")
    print("|---|" + "---:|" * len(reports))
    for vlabel, cfg in variants:
        cells = []
        for model, shape, _ in reports.values():
            r = training_cost(model, shape, config=cfg)
            cells.append(f"{r.memory_saving_pct:.1f} % / {r.energy_saving_pct:.1f} %")
        print(f"| {vlabel} | " + " | ".join(cells) + " |")
    for label, (_, _, r) in reports.items():
        print(f"\n### {label}\n")
        print(r.to_markdown(per_layer=args.layers))


if __name__ == "__main__":
    main()
