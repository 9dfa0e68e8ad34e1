"""CIFAR-10 and CIFAR-100 from the official "python version" archives, with a restricted unpickler.

Layout (as extracted from ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``)::

    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-100-python/train, test, meta

Each file is a Python 2 pickle (protocol 2) of a dict: ``data`` is a ``numpy.uint8`` array ``(N, 3072)``
(the 32×32 red, green then blue planes of each image), ``labels`` (CIFAR-10) or ``fine_labels`` /
``coarse_labels`` (CIFAR-100) are lists of ints, plus byte strings (``batch_label``, ``filenames``).

**Why pickle, and why it is safe here.** xbarlab never unpickles model checkpoints (those are safetensors +
JSON). Pickle is however the official format of these data files, so they are read with
:class:`RestrictedUnpickler`, whose ``find_class`` refuses every global except the three numpy functions
needed to rebuild a plain ``ndarray`` (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and
``numpy.dtype``; the ``numpy._core`` spelling written by NumPy 2 is accepted as the same function).
Dicts, lists, ints and strings need no globals. Anything else (``os.system``, ``builtins.eval``, arbitrary
classes...) raises :class:`pickle.UnpicklingError`, so a malicious file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xbarlab.data.errors import DatasetCorruptError, DatasetNotFoundError

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "load_cifar10", "load_cifar100", "restricted_loads"]


def _numpy_reconstruct() -> Any:
    core = getattr(np, "_core", None)
    if core is not None and hasattr(core, "multiarray"):
        return core.multiarray._reconstruct
    return np.core.multiarray._reconstruct  # type: ignore[attr-defined]  # pragma: no cover - NumPy 1.x


# (module, name) → object. The only globals an official CIFAR pickle refers to.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS` and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is not allowed in a data file "
                f"(allowed: {', '.join(sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS))})"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in a data file")


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (Python 2 strings decoded as latin-1)."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def _str_keys(obj: dict[Any, Any]) -> dict[str, Any]:
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _load_pickle_dict(path: Path, dataset: str, how_to_get: str) -> dict[str, Any]:
    try:
        obj = restricted_loads(path.read_bytes())
    except pickle.UnpicklingError as exc:
        raise DatasetCorruptError(dataset, path, f"refused or invalid pickle ({exc})", how_to_get) from exc
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OSError) as exc:
        raise DatasetCorruptError(dataset, path, f"cannot unpickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict):
        raise DatasetCorruptError(dataset, path, f"expected a pickled dict, got {type(obj).__name__}")
    return _str_keys(obj)


def _as_strings(values: Any) -> list[str]:
    return [v.decode("latin1") if isinstance(v, bytes) else str(v) for v in values]


def _batch_arrays(
    path: Path, label_key: str, dataset: str, how_to_get: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    d = _load_pickle_dict(path, dataset, how_to_get)
    for key in ("data", label_key):
        if key not in d:
            raise DatasetCorruptError(dataset, path, f"missing key {key!r} (keys: {sorted(d)})", how_to_get)
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetCorruptError(dataset, path, f"'data' must be a uint8 array (N, 3072), got {desc}")
    labels = np.asarray(d[label_key], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DatasetCorruptError(
            dataset, path, f"{labels.shape[0]} entries in {label_key!r} for {data.shape[0]} images"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetCorruptError(
            dataset, path, f"{label_key!r} values outside [0, {num_classes}): {labels.min()}..{labels.max()}"
        )
    return data, labels


def _require_file(directory: Path, name: str, dataset: str, how_to_get: str) -> Path:
    if not directory.is_dir():
        raise DatasetNotFoundError(dataset, directory, "data directory", how_to_get)
    path = directory / name
    if not path.is_file():
        raise DatasetNotFoundError(dataset, directory, f"file {name}", how_to_get)
    return path


def _resolve(data_dir: Path, subdir: str) -> Path:
    """Accept either the parent directory or the extracted archive directory itself."""
    return data_dir / subdir if (data_dir / subdir).is_dir() else data_dir


def _to_tensors(data: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels)


CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"


def load_cifar10(data_dir: Path, split: str, how_to_get: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images ``uint8 (N, 3, 32, 32)``, labels ``int64 (N,)`` and class names of one CIFAR-10 split."""
    name = "cifar10"
    directory = _resolve(data_dir, CIFAR10_DIR)
    if split == "train":
        files = [f"data_batch_{i}" for i in range(1, 6)]
    elif split == "test":
        files = ["test_batch"]
    else:
        raise ValueError(f"{name}: split must be 'train' or 'test', got {split!r}")
    paths = [_require_file(directory, f, name, how_to_get) for f in files]
    meta_path = _require_file(directory, "batches.meta", name, how_to_get)
    meta = _load_pickle_dict(meta_path, name, how_to_get)
    classes = _as_strings(meta.get("label_names", [str(i) for i in range(10)]))
    if len(classes) != 10:
        raise DatasetCorruptError(name, meta_path, f"'label_names' has {len(classes)} entries, expected 10")
    arrays = [_batch_arrays(p, "labels", name, how_to_get, 10) for p in paths]
    data = np.concatenate([a for a, _ in arrays])
    labels = np.concatenate([b for _, b in arrays])
    images, targets = _to_tensors(data, labels)
    return images, targets, classes


def load_cifar100(
    data_dir: Path, split: str, how_to_get: str, label_type: str = "fine"
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images, labels and class names of one CIFAR-100 split (``label_type``: ``fine`` or ``coarse``)."""
    name = "cifar100"
    if split not in ("train", "test"):
        raise ValueError(f"{name}: split must be 'train' or 'test', got {split!r}")
    if label_type not in ("fine", "coarse"):
        raise ValueError(f"{name}: label_type must be 'fine' or 'coarse', got {label_type!r}")
    directory = _resolve(data_dir, CIFAR100_DIR)
    path = _require_file(directory, split, name, how_to_get)
    meta_path = _require_file(directory, "meta", name, how_to_get)
    num_classes = 100 if label_type == "fine" else 20
    meta = _load_pickle_dict(meta_path, name, how_to_get)
    classes = _as_strings(meta.get(f"{label_type}_label_names", [str(i) for i in range(num_classes)]))
    if len(classes) != num_classes:
        raise DatasetCorruptError(
            name, meta_path, f"'{label_type}_label_names' has {len(classes)} entries, expected {num_classes}"
        )
    data, labels = _batch_arrays(path, f"{label_type}_labels", name, how_to_get, num_classes)
    images, targets = _to_tensors(data, labels)
    return images, targets, classes
