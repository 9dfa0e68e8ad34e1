#!/usr/bin/env python3
"""Regenerate ``src/xbarlab/assets/fmnist_subset.npz``, the built-in ``fashion-mnist-mini`` data set.

Selection (deterministic, no RNG): the first 100 images of each class, in file order, of the official
training set (1,000 images, for calibration / fine-tuning) and the first 200 of each class of the official
test set (2,000 images). Arrays: ``{train,test}_images`` (uint8, N×28×28), ``{train,test}_labels`` (uint8)
and ``{train,test}_indices`` (int32 positions in the official files). The archive is written with fixed
zip timestamps, so the output is byte-identical on every run.

Usage: python scripts/make_fmnist_subset.py [--data-dir /usr/share/datasets/fashion-mnist] [--out PATH]
"""

from __future__ import annotations

import argparse
import io
import zipfile
from pathlib import Path

import numpy as np

PER_CLASS = {"train": 100, "test": 200}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "xbarlab" / "assets" / "fmnist_subset.npz"


def select(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` items of every class, sorted by position."""
    chosen = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)[:per_class]
        if len(idx) < per_class:
            raise SystemExit(f"class {c}: only {len(idx)} images, need {per_class}")
        chosen.append(idx)
    return np.sort(np.concatenate(chosen)).astype(np.int32)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Compressed .npz with a fixed timestamp (reproducible bytes); readable by ``np.load``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def main() -> None:
    from xbarlab.data.idx import load_idx_pair
    from xbarlab.data.registry import FASHION_MNIST_DIR, FASHION_MNIST_HOW

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(FASHION_MNIST_DIR))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    arrays: dict[str, np.ndarray] = {}
    for split, per_class in PER_CLASS.items():
        images, labels = load_idx_pair(args.data_dir, split, "fashion-mnist", FASHION_MNIST_HOW)
        lab = labels.numpy()
        idx = select(lab, per_class)
        arrays[f"{split}_images"] = images.numpy()[idx, 0]
        arrays[f"{split}_labels"] = lab[idx].astype(np.uint8)
        arrays[f"{split}_indices"] = idx
    write_npz(args.out, arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
