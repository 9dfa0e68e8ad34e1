"""The two built-in data sets (no download, no extra dependency): the 8×8 digits and a Fashion-MNIST subset."""

from __future__ import annotations

import zipfile
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from xbarlab.data.errors import DatasetCorruptError, DatasetNotFoundError

__all__ = [
    "DIGITS_FILE",
    "DIGITS_SPLIT_SEED",
    "DIGITS_SPLIT_SIZES",
    "DIGITS_TEST_FRACTION",
    "FMNIST_SUBSET_FILE",
    "FMNIST_SUBSET_SIZES",
    "digits_path",
    "fmnist_subset_path",
    "load_digits_split",
    "load_fmnist_subset",
]

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25
DIGITS_FILE = "digits.npz"
DIGITS_SPLIT_SIZES = {"train": 1347, "test": 450}

FMNIST_SUBSET_FILE = "fmnist_subset.npz"
# Images per split of the subset: class-balanced (100 resp. 200 per class).
FMNIST_SUBSET_SIZES = {"train": 1000, "test": 2000}


def _read_npz_split(name: str, path: Path, split: str, how: str) -> tuple[np.ndarray, np.ndarray]:
    """``<split>_images`` and ``<split>_labels`` of a built-in ``.npz`` (``allow_pickle=False``); a missing or
    unreadable file raises the data set error naming it and ``how`` to regenerate it."""
    if not path.is_file():
        raise DatasetNotFoundError(name, path.parent, f"file {path.name}", how)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return np.asarray(npz[f"{split}_images"]), np.asarray(npz[f"{split}_labels"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DatasetCorruptError(name, path, f"cannot read {split} arrays ({exc})", how) from exc


def digits_path() -> Path:
    """Path of the built-in digits file inside the installed package."""
    return Path(str(resources.files("xbarlab") / "assets" / DIGITS_FILE))


def load_digits_split(split: str, path: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The UCI 8×8 digits as shipped by scikit-learn (1,797 images), as ``uint8 (N, 1, 8, 8)`` and ``int64`` labels.

    Read from the built-in ``assets/digits.npz`` (``allow_pickle=False``; no scikit-learn at run time). Pixel values
    0..16 are rescaled to 0..255. The train/test split is fixed: stratified, 25 % test, ``random_state=0``
    (1,347 train / 450 test images); regenerate the file with ``scripts/make_digits_npz.py``.
    """
    if split not in DIGITS_SPLIT_SIZES:
        raise ValueError(f"digits: split must be 'train' or 'test', got {split!r}")
    name = "digits"
    path = digits_path() if path is None else path
    how = "Regenerate it with `python scripts/make_digits_npz.py` (needs scikit-learn)."
    images, labels = _read_npz_split(name, path, split, how)
    n = DIGITS_SPLIT_SIZES[split]
    if images.dtype != np.uint8 or images.shape != (n, 8, 8) or labels.shape != (n,) or int(labels.max()) > 9:
        raise DatasetCorruptError(
            name,
            path,
            f"expected uint8 images ({n}, 8, 8) and {n} labels in 0..9, got {images.dtype} {images.shape} and "
            f"{labels.shape}",
            how,
        )
    return torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.astype(np.int64))


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
    images, labels = _read_npz_split(name, path, split, how)
    n = FMNIST_SUBSET_SIZES[split]
    if images.dtype != np.uint8 or images.shape != (n, 28, 28) or labels.shape != (n,):
        raise DatasetCorruptError(
            name,
            path,
            f"expected uint8 images ({n}, 28, 28) and {n} labels, got {images.dtype} {images.shape} and {labels.shape}",
            how,
        )
    return torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.astype(np.int64))
