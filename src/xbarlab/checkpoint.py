"""Checkpoints as safetensors + JSON: never pickle, never ``torch.load``.

A checkpoint ``<path>`` is two files:

* ``<path>.safetensors``: the model's ``state_dict`` (floating-point tensors stored as float32 by default);
* ``<path>.json``: metadata: registry model name and keyword arguments (to rebuild the architecture),
  data set, epochs, clean test accuracy, seed, ``xbarlab`` version, training hyper-parameters / command,
  wall time, and the SHA-256 of the ``.safetensors`` file (``weights_sha256``, checked on load to detect
  corruption; a JSON without it is refused: re-hash a file you trust with :func:`rehash` / ``xbarlab rehash``).

:func:`save_state` / :func:`load_state` store arbitrary nested training state (optimizer momentum buffers,
RNG states, counters) the same way: every tensor goes into the safetensors file, everything else into JSON.

The pre-trained models shipped in ``xbarlab/assets/pretrained`` load with :func:`load_pretrained`.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from xbarlab import __version__
from xbarlab.atomic import atomic_write, atomic_write_text
from xbarlab.models.registry import KWARGS_ATTR, NAME_ATTR, build_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "CheckpointNotFoundError",
    "checkpoint_paths",
    "list_pretrained",
    "load_checkpoint",
    "load_pretrained",
    "load_state",
    "pretrained_dir",
    "rehash",
    "save_checkpoint",
    "save_state",
]

CHECKPOINT_FORMAT = "xbarlab-checkpoint"
STATE_FORMAT = "xbarlab-state"
TASK_MODEL_FORMAT = "xbarlab-task-model/1"
"""Format of a P2 task model (:func:`xbarlab.papers.p2.train_tasks.save_task_model`); its hash key is ``sha256``."""
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is corrupt, inconsistent or does not match the architecture."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """One of the two files of a checkpoint is missing."""


def _version() -> str:
    try:
        return str(__version__)
    except ImportError:  # pragma: no cover - only while the package __init__ is incomplete
        from importlib.metadata import version

        return version("xbarlab")


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(<path>.safetensors, <path>.json)``; ``path`` may carry either suffix or none."""
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def sha256_file(path: Path) -> str:
    """SHA-256 (64 hex digits) of a file's bytes, read in 1 MiB chunks: the hash of every shipped weights file."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_pair(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any], kind: str) -> Path:
    st_path, js_path = checkpoint_paths(path)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(st_path, lambda p: save_file(tensors, str(p), metadata={"format": kind}))
    doc = {"format": kind, "format_version": FORMAT_VERSION, **meta, "weights_sha256": sha256_file(st_path)}
    text = json.dumps(doc, indent=2, sort_keys=False, default=_json_default) + "\n"
    atomic_write_text(js_path, text)
    return st_path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, torch.dtype):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    raise TypeError(f"metadata value of type {type(obj).__name__} is not JSON-serialisable: {obj!r}")


def _read_meta(js_path: Path, kinds: tuple[str, ...], *, versioned: bool = True) -> dict[str, Any]:
    """The parsed JSON of a checkpoint whose ``format`` is one of ``kinds`` (and ``format_version`` 1)."""
    try:
        meta = json.loads(js_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(" ".join(f"corrupt checkpoint metadata {js_path}: {exc}".split())) from exc
    if not isinstance(meta, dict) or meta.get("format") not in kinds:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        expected = " or ".join(repr(k) for k in kinds)
        raise CheckpointError(f"{js_path}: 'format' is {got!r}, expected {expected}")
    version = meta.get("format_version")
    if versioned and version != FORMAT_VERSION:
        raise CheckpointError(f"{js_path}: format_version: {version!r}; expected {FORMAT_VERSION}")
    return meta


def _recorded_sha(js_path: Path, meta: dict[str, Any]) -> str:
    """The ``weights_sha256`` of the JSON; a checkpoint without one is refused (its weights cannot be verified)."""
    sha = meta.get("weights_sha256")
    if sha is None:
        raise CheckpointError(
            f"{js_path}: no weights_sha256; the weights cannot be verified. If you trust the file, re-hash it "
            f"with `xbarlab rehash {js_path}`"
        )
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise CheckpointError(f"{js_path}: weights_sha256: {sha!r}; expected 64 lower-case hex digits")
    return sha


def _read_pair(path: str | Path, kind: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and metadata of a checkpoint of format ``kind``, after checking the weights' SHA-256."""
    st_path, js_path = checkpoint_paths(path)
    for p in (js_path, st_path):
        if not p.is_file():
            raise CheckpointNotFoundError(f"checkpoint file {p} not found (a checkpoint is a .json + .safetensors)")
    meta = _read_meta(js_path, (kind,))
    expected_sha = _recorded_sha(js_path, meta)
    actual = sha256_file(st_path)
    if actual != expected_sha:
        raise CheckpointError(
            f"{st_path}: weights_sha256: {actual} does not match the SHA-256 recorded in {js_path.name}; expected "
            f"{expected_sha} (file corrupt or replaced)"
        )
    try:
        tensors = load_file(str(st_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(" ".join(f"corrupt safetensors file {st_path}: {exc}".split())) from exc
    return tensors, meta


def rehash(path: str | Path, *, force: bool = False) -> str:
    """Record the SHA-256 of ``<path>.safetensors`` (``weights_sha256``) in ``<path>.json``; returns the hash.

    For a checkpoint, state or task-model file (:func:`xbarlab.papers.p2.train_tasks.save_task_model`, whose key is
    ``sha256``) you trust that was written without a hash (or by hand). The tensors file must be a readable
    safetensors file. A recorded hash that differs from the file's is only replaced with ``force=True``: the
    weights changed since they were hashed.
    """
    st_path, js_path = checkpoint_paths(path)
    for p in (js_path, st_path):
        if not p.is_file():
            raise CheckpointNotFoundError(f"checkpoint file {p} not found (a checkpoint is a .json + .safetensors)")
    meta = _read_meta(js_path, (CHECKPOINT_FORMAT, STATE_FORMAT, TASK_MODEL_FORMAT), versioned=False)
    key = "sha256" if meta["format"] == TASK_MODEL_FORMAT else "weights_sha256"
    if key == "weights_sha256":
        _read_meta(js_path, (meta["format"],))  # checkpoints and states also need format_version 1
    try:
        load_file(str(st_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(" ".join(f"corrupt safetensors file {st_path}: {exc}".split())) from exc
    actual = sha256_file(st_path)
    old = meta.pop(key, None)
    if old is not None and old != actual and not force:
        raise CheckpointError(
            f"{js_path}: {key}: recorded {old} but {st_path.name} hashes to {actual} (the weights changed "
            "since they were hashed); expected the same hash, or force=True (`xbarlab rehash --force`) if you trust "
            "the new weights"
        )
    meta[key] = actual
    text = json.dumps(meta, indent=2, sort_keys=False, default=_json_default) + "\n"
    atomic_write_text(js_path, text)
    return actual


# -- model checkpoints -----------------------------------------------------------------------------------


def save_checkpoint(
    model: nn.Module,
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    *,
    dtype: torch.dtype | None = torch.float32,
) -> Path:
    """Write ``<path>.safetensors`` (the state dict) and ``<path>.json`` (metadata); returns the first.

    ``metadata`` must name the registry model (``"model"``) and its arguments (``"model_kwargs"``) unless
    the model was built with :func:`xbarlab.models.build_model`, which records both. Floating-point tensors
    are cast to ``dtype`` (float32; ``None`` keeps them as they are). ``xbarlab_version`` and ``saved_at``
    are added.
    """
    meta = dict(metadata or {})
    meta.setdefault("model", getattr(model, NAME_ATTR, None))
    meta.setdefault("model_kwargs", getattr(model, KWARGS_ATTR, None))
    if meta["model"] is None or meta["model_kwargs"] is None:
        raise CheckpointError(
            "save_checkpoint: metadata needs 'model' and 'model_kwargs' (or build the model with "
            "xbarlab.models.build_model, which records them)"
        )
    meta.setdefault("xbarlab_version", _version())
    meta.setdefault("torch_version", torch.__version__)
    meta.setdefault("saved_at", _now())
    state = {}
    for key, value in model.state_dict().items():
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        state[key] = value
    ordered = {"model": meta.pop("model"), "model_kwargs": meta.pop("model_kwargs"), **meta}
    return _write_pair(path, state, ordered, CHECKPOINT_FORMAT)


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _check_state_dict(model: nn.Module, state: dict[str, Tensor], where: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s) (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"shape mismatch: {'; '.join(wrong[:3])}")
        raise CheckpointError(f"{where} does not match the architecture: {'; '.join(parts)}")


def load_model_state(model: nn.Module, state: dict[str, Tensor], where: str = "checkpoint") -> None:
    """Load ``state`` into ``model`` after checking names and shapes (clear error on any mismatch)."""
    _check_state_dict(model, state, where)
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from the registry and load its weights (safetensors only).

    Returns:
        ``(model, metadata)``; the model is in eval mode on ``device``.

    Raises:
        CheckpointNotFoundError: a file is missing.
        CheckpointError: corrupt files, unknown model, or weights not matching the architecture.
    """
    tensors, meta = _read_pair(path, CHECKPOINT_FORMAT)
    name, kwargs = meta.get("model"), meta.get("model_kwargs")
    js_path = checkpoint_paths(path)[1]
    if not isinstance(name, str):
        raise CheckpointError(f"{js_path}: model: {name!r}; expected a registry model name (needs 'model' (str))")
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{js_path}: model_kwargs: {kwargs!r}; expected an object of the model's arguments")
    try:
        model = build_model(name, **kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint_paths(path)[1]}: cannot rebuild model {name!r}: {exc}") from exc
    load_model_state(model, tensors, f"checkpoint {checkpoint_paths(path)[0]}")
    model.to(device).eval()
    return model, meta


# -- generic training state ------------------------------------------------------------------------------


def _encode(obj: Any, key: str, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, Tensor):
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{key}.{k}", tensors) for k, v in obj.items()}
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"cannot store dict key of type {type(k).__name__} at {key}")
            items.append([k, _encode(v, f"{key}.{k}", tensors)])
        return {"__items__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a value of type {type(obj).__name__} at {key} (tensors and JSON values only)")


def _decode(obj: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            key = obj["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"state references tensor {key!r} missing from the safetensors file")
            return tensors[key]
        if "__items__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Store a nested dict of tensors and JSON values as ``<path>.safetensors`` + ``<path>.json``."""
    tensors: dict[str, Tensor] = {}
    tree = _encode(state, "state", tensors)
    return _write_pair(path, tensors, {"xbarlab_version": _version(), "state": tree}, STATE_FORMAT)


def load_state(path: str | Path) -> dict[str, Any]:
    """Inverse of :func:`save_state` (tuples come back as tuples, int dict keys as ints)."""
    tensors, meta = _read_pair(path, STATE_FORMAT)
    if "state" not in meta:
        raise CheckpointError(f"{checkpoint_paths(path)[1]}: state: missing; expected the saved state (an object)")
    try:
        state = _decode(meta["state"], tensors)
    except CheckpointError as exc:
        raise CheckpointError(f"{checkpoint_paths(path)[1]}: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{checkpoint_paths(path)[1]}: 'state' is not an object")
    return state


# -- pretrained models -----------------------------------------------------------------------------------

_DATASET_SHORT = {"fmnist": "fashion-mnist", "fashion-mnist": "fashion-mnist"}


def pretrained_dir() -> Path:
    """Folder of the pre-trained checkpoints shipped with the package."""
    return Path(str(resources.files("xbarlab") / "assets" / "pretrained"))


def list_pretrained() -> list[str]:
    """Names accepted by :func:`load_pretrained`, e.g. ``["lenet5-fmnist", "resnet20-fmnist", ...]``."""
    folder = pretrained_dir()
    if not folder.is_dir():
        return []
    names = []
    for js in sorted(folder.glob("*.json")):
        model, _, dataset = js.stem.partition("_")
        if js.with_suffix(".safetensors").is_file():
            short = "fmnist" if dataset == "fashion-mnist" else dataset
            names.append(f"{model}-{short}")
    return names


def load_pretrained(name: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a shipped pre-trained model, e.g. ``load_pretrained("resnet20-fmnist")``.

    ``name`` is ``<model>-<dataset>`` with dataset ``fmnist`` or ``fashion-mnist``
    (``"resnet20_fashion-mnist"``, the file stem, works too). Returns ``(model, metadata)``.
    """
    key = name.strip().lower()
    model, dataset = None, None
    if "_" in key:
        model, _, dataset = key.partition("_")
    else:
        for suffix in sorted(_DATASET_SHORT, key=len, reverse=True):
            if key.endswith("-" + suffix):
                model, dataset = key[: -len(suffix) - 1], suffix
                break
    if model is None or dataset is None:
        raise CheckpointNotFoundError(
            f"unknown pre-trained model {name!r}; available: {', '.join(list_pretrained()) or 'none'}"
        )
    dataset = _DATASET_SHORT.get(dataset, dataset)
    stem = pretrained_dir() / f"{model}_{dataset}"
    if not checkpoint_paths(stem)[1].is_file():
        raise CheckpointNotFoundError(
            f"no pre-trained model {name!r} (looked for {stem}.json); "
            f"available: {', '.join(list_pretrained()) or 'none'}"
        )
    return load_checkpoint(stem, device=device)
