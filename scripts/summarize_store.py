"""Print Markdown tables (mean ± std over chips, PC2) of a results store, grouped by the swept keys.

Usage: python scripts/summarize_store.py STORE SWEEP KEY [KEY ...]
"""

from __future__ import annotations

import csv
import io
import statistics as st
import subprocess
import sys
from collections import defaultdict


def main() -> None:
    store, sweep, *keys = sys.argv[1:]
    out = subprocess.run(
        [sys.executable, "-m", "xbarlab.cli", "results", store, "--format", "csv", "--sweep", sweep],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    acc: dict[tuple[str, ...], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    pc2: dict[tuple[str, ...], list[float]] = defaultdict(list)
    proj: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for r in rows:
        k = tuple(r[key] for key in keys)
        acc[k][r["mitigation"]].append(float(r["accuracy"]))
        if r.get("pc2"):
            pc2[k].append(float(r["pc2"]))
        if r.get("pc2_proj"):
            proj[k].append(float(r["pc2_proj"]))
    methods = [m for m in ("none", "bn_adapt", "bn_finetune", "drift_comp_global", "drift_comp_column")
               if any(m in v for v in acc.values())]
    print(f"clean accuracy: {rows[0].get('clean_accuracy')} %, test samples {rows[0].get('test_samples')}")
    extra = " PC2-proj |" if proj else ""
    print("| " + " | ".join(keys) + " | PC2 |" + extra + " " + " | ".join(methods) + " |")
    print("|" + "---|" * (len(keys) + 1 + bool(proj) + len(methods)))
    for k in acc:
        cells = []
        for m in methods:
            v = acc[k].get(m, [])
            cells.append(f"{st.mean(v):.2f} ± {st.stdev(v) if len(v) > 1 else 0:.2f}" if v else "")
        p = f"{st.mean(pc2[k]):.2e}" if pc2[k] else ""
        if proj:
            p += f" | {st.mean(proj[k]):.2e}" if proj[k] else " | "
        print("| " + " | ".join(k) + f" | {p} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
