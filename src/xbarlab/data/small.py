"""The two data sets that need no download: scikit-learn digits and the built-in Fashion-MNIST subset."""

from __future__ import annotations

import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from xbarlab.data.errors import DatasetCorruptError, DatasetNotFoundError

__all__ = [
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_FRACTION",
    "FMNIST_SUBSET_FILE",
    "FMNIST_SUBSET_SIZES",
    "fmnist_subset_path",
    "load_digits_split",
    "load_fmnist_subset",
]

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25

FMNIST_SUBSET_FILE = "fmnist_subset.npz"
# Images per split of the subset: class-balanced (100 resp. 200 per class).
FMNIST_SUBSET_SIZES = {"train": 1000, "test": 2000}


def load_digits_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits (1,797 images) as ``uint8 (N, 1, 8, 8)`` and ``int64`` labels.

    Pixel values 0..16 are rescaled to 0..255. The train/test split is fixed: stratified, 25 % test,
    ``random_state=0`` (1,347 train / 450 test images).
    """
    if split not in ("train", "test"):
        raise ValueError(f"digits: split must be 'train' or 'test', got {split!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(np.asarray(bunch.images) * (255.0 / 16.0)).astype(np.uint8)
    targets = np.asarray(bunch.target, dtype=np.int64)
    idx = np.arange(len(targets))
    train_idx, test_idx = train_test_split(
        idx, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=targets
    )
    sel = np.sort(train_idx if split == "train" else test_idx)
    return torch.from_numpy(images[sel][:, None].copy()), torch.from_numpy(targets[sel].copy())


def fmnist_subset_path() -> Path:
    """Path of the built-in subset file inside the installed package."""
    return Path(str(resources.files("xbarlab") / "assets" / FMNIST_SUBSET_FILE))


def load_fmnist_subset(split: str, path: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The built-in class-balanced Fashion-MNIST subset (1,000 train / 2,000 test images).

    The file is a compressed ``.npz`` read with ``allow_pickle=False``; regenerate it with
    ``scripts/make_fmnist_subset.py``.
    """
    if split not in FMNIST_SUBSET_SIZES:
        raise ValueError(f"fashion-mnist-mini: split must be 'train' or 'test', got {split!r}")
    name = "fashion-mnist-mini"
    path = fmnist_subset_path() if path is None else path
    how = "Regenerate it with `python scripts/make_fmnist_subset.py` (needs the full Fashion-MNIST)."
    if not path.is_file():
        raise DatasetNotFoundError(name, path.parent, f"file {path.name}", how)
    try:
        with np.load(path, allow_pickle=False) as npz:
            images = np.asarray(npz[f"{split}_images"])
            labels = np.asarray(npz[f"{split}_labels"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DatasetCorruptError(name, path, f"cannot read {split} arrays ({exc})", how) from exc
    n = FMNIST_SUBSET_SIZES[split]
    if images.dtype != np.uint8 or images.shape != (n, 28, 28) or labels.shape != (n,):
        raise DatasetCorruptError(
            name,
            path,
            f"expected uint8 images ({n}, 28, 28) and {n} labels, got {images.dtype} {images.shape} and {labels.shape}",
            how,
        )
    return torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.astype(np.int64))
