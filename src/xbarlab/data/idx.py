"""MNIST and Fashion-MNIST from the original IDX files (``*-idx3-ubyte.gz`` / ``*-idx1-ubyte.gz``).

The IDX header is parsed here: two zero bytes, a type byte (``0x08`` = unsigned byte), the number of
dimensions, then one big-endian ``uint32`` per dimension. Image files have magic number 2051 (3 dimensions),
label files 2049 (1 dimension). Uncompressed files (same names without ``.gz``) are accepted too.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from xbarlab.data.errors import DatasetCorruptError, DatasetNotFoundError

__all__ = ["FASHION_MNIST_CLASSES", "MNIST_CLASSES", "find_idx_file", "load_idx_pair", "read_idx"]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
_UBYTE = 0x08

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))

# File stems of the four IDX files, per split.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_idx_file(directory: Path, stem: str, dataset: str, how_to_get: str) -> Path:
    """``directory/stem.gz`` (preferred) or ``directory/stem``; :class:`DatasetNotFoundError` if neither."""
    if not directory.is_dir():
        raise DatasetNotFoundError(dataset, directory, "data directory", how_to_get)
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DatasetNotFoundError(dataset, directory, f"file {stem}.gz", how_to_get)


def read_idx(path: Path, expected_magic: int, dataset: str, how_to_get: str = "") -> np.ndarray:
    """Read one IDX file (gzip-compressed when the name ends in ``.gz``) into a ``uint8`` array.

    Raises:
        DatasetCorruptError: bad gzip stream, wrong magic number, or size not matching the header.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetCorruptError(dataset, path, f"cannot read/decompress ({exc})", how_to_get) from exc
    if len(raw) < 4:
        raise DatasetCorruptError(dataset, path, f"file too short for an IDX header ({len(raw)} bytes)")
    zero0, zero1, dtype_code, ndim = raw[0], raw[1], raw[2], raw[3]
    magic = struct.unpack(">I", raw[:4])[0]
    if zero0 != 0 or zero1 != 0 or dtype_code != _UBYTE or magic != expected_magic:
        raise DatasetCorruptError(
            dataset,
            path,
            f"IDX magic number is {magic} (bytes {raw[:4].hex()}), expected {expected_magic} "
            f"(0x{expected_magic:08x}: unsigned bytes, {expected_magic & 0xFF} dimensions)",
            how_to_get,
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DatasetCorruptError(dataset, path, f"truncated IDX header ({len(raw)} < {header_len} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64)) if dims else 0
    payload = len(raw) - header_len
    if payload != expected:
        raise DatasetCorruptError(
            dataset,
            path,
            f"IDX header declares shape {dims} = {expected} bytes of data but the file holds {payload}",
            how_to_get,
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def load_idx_pair(
    directory: Path, split: str, dataset: str, how_to_get: str, num_classes: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``uint8 (N, 1, H, W)`` and labels ``int64 (N,)`` of one split of an MNIST-style data set."""
    if split not in IDX_FILES:
        raise ValueError(f"{dataset}: split must be one of {sorted(IDX_FILES)}, got {split!r}")
    img_stem, lbl_stem = IDX_FILES[split]
    img_path = find_idx_file(directory, img_stem, dataset, how_to_get)
    lbl_path = find_idx_file(directory, lbl_stem, dataset, how_to_get)
    images = read_idx(img_path, IMAGES_MAGIC, dataset, how_to_get)
    labels = read_idx(lbl_path, LABELS_MAGIC, dataset, how_to_get)
    if images.shape[0] != labels.shape[0]:
        raise DatasetCorruptError(
            dataset,
            lbl_path,
            f"{labels.shape[0]} labels for {images.shape[0]} images in {img_path.name}",
            how_to_get,
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise DatasetCorruptError(
            dataset, lbl_path, f"label {int(labels.max())} outside [0, {num_classes})", how_to_get
        )
    img_t = torch.from_numpy(images.copy()).unsqueeze(1)
    lbl_t = torch.from_numpy(labels.astype(np.int64))
    return img_t, lbl_t
