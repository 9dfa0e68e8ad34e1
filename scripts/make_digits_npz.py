#!/usr/bin/env python3
"""Regenerate ``src/xbarlab/assets/digits.npz``, the built-in ``digits`` data set (scikit-learn's 8×8 digits).

scikit-learn is needed only here (and in the test that checks the shipped file against it), not at run time.
Split: stratified, 25 % test, ``random_state=0`` (1,347 train / 450 test images), each split in original order.
Pixels 0..16 are rescaled to 0..255 (rounded). Arrays: ``{train,test}_images`` (uint8, N×8×8),
``{train,test}_labels`` (uint8) and ``{train,test}_indices`` (int32 positions in scikit-learn's 1,797 images).
Written with fixed zip timestamps (byte-identical on every run), like ``make_fmnist_subset.py``.

Usage: python scripts/make_digits_npz.py [--out PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "xbarlab" / "assets" / "digits.npz"
TEST_FRACTION = 0.25
SPLIT_SEED = 0


def digits_arrays() -> dict[str, np.ndarray]:
    """The arrays of the shipped file, computed from scikit-learn's copy of the UCI digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(np.asarray(bunch.images) * (255.0 / 16.0)).astype(np.uint8)
    targets = np.asarray(bunch.target, dtype=np.int64)
    idx = np.arange(len(targets))
    train_idx, test_idx = train_test_split(idx, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=targets)
    arrays: dict[str, np.ndarray] = {}
    for split, chosen in (("train", train_idx), ("test", test_idx)):
        sel = np.sort(chosen).astype(np.int32)
        arrays[f"{split}_images"] = images[sel]
        arrays[f"{split}_labels"] = targets[sel].astype(np.uint8)
        arrays[f"{split}_indices"] = sel
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    writer = Path(__file__).with_name("make_fmnist_subset.py")
    spec = importlib.util.spec_from_file_location("make_fmnist_subset", writer)
    assert spec is not None and spec.loader is not None
    subset = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(subset)
    subset.write_npz(args.out, digits_arrays())
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.1f} kB)")


if __name__ == "__main__":
    main()
