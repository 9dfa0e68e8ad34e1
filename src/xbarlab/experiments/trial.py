"""The trial runner: one chip instance of one resolved configuration → metrics.

:func:`run_trial` is a top-level function taking the resolved configuration (a JSON-like dict), so worker
processes (process pool, Ray) can import and call it. It dispatches to the trial kind (``accuracy`` by
default, :func:`accuracy_trial`), never raises for a failing trial (the error and traceback are returned), and
reports phase timings and the worker's environment.

Models and data sets are cached per worker process (:data:`_CACHE`): loaded once, reused by every trial the
worker runs. With Ray, the driver puts them in the object store once (:func:`shared_payloads`) and workers
install them with :func:`install_payload` instead of reading files.

The accuracy trial: load the digital model, then the per-chip runner (:func:`xbarlab.runner.run_chip`):
:func:`xbarlab.convert` with the resolved hardware → :func:`xbarlab.program` (chip seed) → optional
:func:`xbarlab.drift` → :func:`xbarlab.calibrate` when converters are enabled → PC2 of a probe layer (when
requested) → the mitigation → test-set accuracy (plus the digital model's clean accuracy, when requested).
All randomness derives from the chip seed, so a trial gives the same metrics on every executor.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import socket
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from xbarlab import __version__
from xbarlab.checkpoint import (
    CheckpointNotFoundError,
    checkpoint_paths,
    load_checkpoint,
    load_model_state,
    load_pretrained,
    sha256_file,
)
from xbarlab.data import AUGMENTATIONS, ImageDataset, dataset_info, get_dataset, make_loader
from xbarlab.evaluation import accuracy
from xbarlab.experiments.registry import get_mitigation, get_trial_kind, import_plugins
from xbarlab.hardware import HardwareConfig
from xbarlab.layers import analog_layers
from xbarlab.metrics import pc2, pc2_proj
from xbarlab.models import build_model
from xbarlab.models.common import channels_last
from xbarlab.models.registry import KWARGS_ATTR, NAME_ATTR
from xbarlab.runner import RegisteredMitigation, run_chip
from xbarlab.seeding import derive_seed
from xbarlab.timing import StageClock

__all__ = [
    "TrialContext",
    "accuracy_trial",
    "clear_cache",
    "environment",
    "install_payload",
    "model_fingerprint",
    "run_trial",
    "shared_payloads",
    "trial_mitigation",
]

_CACHE: dict[str, Any] = {}
"""Per-process cache: digital models, data splits, clean accuracies, the environment record."""


def clear_cache() -> None:
    """Forget every cached model and data set of this process."""
    _CACHE.clear()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


# ------------------------------------------------------------------------------------------------------------
# environment


def environment() -> dict[str, Any]:
    """Versions, host and device of this worker process (cached)."""
    if "env" not in _CACHE:
        _CACHE["env"] = {
            "xbarlab": __version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "host": socket.gethostname(),
            "cpu_count": os.cpu_count(),
            "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        }
    return dict(_CACHE["env"])


# ------------------------------------------------------------------------------------------------------------
# models


def model_fingerprint(model: Mapping[str, Any]) -> str:
    """SHA-256 of a model's weights file (as recorded in its checkpoint JSON, else computed).

    ``model`` is ``{"pretrained": name}`` or ``{"checkpoint": path}``. Raises ``FileNotFoundError`` (a
    :class:`xbarlab.checkpoint.CheckpointNotFoundError`) naming the missing file.
    """
    if model.get("pretrained"):
        net, meta = load_pretrained(str(model["pretrained"]))
        sha = str(meta.get("weights_sha256") or _state_sha256(net))
        _CACHE[_model_key({**model, "sha256": sha})] = net
        return sha
    st_path, js_path = checkpoint_paths(str(model["checkpoint"]))
    for p in (js_path, st_path):
        if not p.is_file():
            raise CheckpointNotFoundError(
                f"model.checkpoint: file {p} not found (a checkpoint is .json + .safetensors)"
            )
    meta = json.loads(js_path.read_text())
    return str(meta.get("weights_sha256") or sha256_file(st_path))


def _state_sha256(net: nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(net.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _model_key(model: Mapping[str, Any]) -> str:
    sha = model.get("sha256")
    if sha:
        return f"model:{sha}"
    return "model:" + json.dumps({k: model.get(k) for k in ("pretrained", "checkpoint")}, sort_keys=True)


def _load_model(model: Mapping[str, Any]) -> nn.Module:
    key = _model_key(model)
    if key not in _CACHE:
        if model.get("pretrained"):
            net, _ = load_pretrained(str(model["pretrained"]))
        else:
            net, _ = load_checkpoint(str(model["checkpoint"]))
        net.eval()
        _CACHE[key] = net
    net = _CACHE[key]
    # zoo models accept NHWC: 25–35 % faster convolutions on CPU (also for the analog layers converted from them)
    return channels_last(net)


# ------------------------------------------------------------------------------------------------------------
# data


def _data_key(data: Mapping[str, Any], split: str) -> str:
    return f"data:{dataset_info(str(data['dataset'])).name}:{split}:{data.get('data_dir') or ''}"


def _load_split(data: Mapping[str, Any], split: str) -> ImageDataset:
    """The split with the data set's training augmentation for ``train`` (cached per process)."""
    key = _data_key(data, split)
    if key not in _CACHE:
        _CACHE[key] = get_dataset(str(data["dataset"]), split, data.get("data_dir"), augment=(split == "train"))
    ds = _CACHE[key]
    return ds  # type: ignore[no-any-return]


def shared_payloads(configs: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Models and data splits needed by ``configs`` as plain numpy payloads (for the Ray object store).

    Keys are the cache keys; :func:`install_payload` turns a payload back into the cached object.
    """
    out: dict[str, dict[str, Any]] = {}
    for config in configs:
        if str(config.get("kind", "accuracy")) != "accuracy":  # other kinds load their own models and data
            continue
        model = config["model"]
        mkey = _model_key(model)
        if mkey not in out:
            net = _load_model(model)
            out[mkey] = {
                "kind": "model",
                "key": mkey,
                "model": getattr(net, NAME_ATTR),
                "model_kwargs": dict(getattr(net, KWARGS_ATTR)),
                "state": {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()},
            }
        for split in ("train", "test"):
            dkey = _data_key(config["data"], split)
            if dkey not in out:
                ds = _load_split(config["data"], split)
                out[dkey] = {
                    "kind": "dataset",
                    "key": dkey,
                    "images": ds.images.numpy(),
                    "labels": ds.labels.numpy(),
                    "mean": list(ds.mean),
                    "std": list(ds.std),
                    "classes": list(ds.classes),
                    "name": ds.name,
                    "split": ds.split,
                    "augment": ds.augmentation is not None,
                }
    return out


def install_payload(payload: Mapping[str, Any]) -> None:
    """Put a :func:`shared_payloads` entry into this process's cache (no-op when already there)."""
    key = str(payload["key"])
    if key in _CACHE:
        return
    if payload["kind"] == "model":
        net = build_model(str(payload["model"]), **dict(payload["model_kwargs"]))
        state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in payload["state"].items()}
        load_model_state(net, state, "shared model")
        net.eval()
        _CACHE[key] = net
    elif payload["kind"] == "dataset":
        name = str(payload["name"])
        _CACHE[key] = ImageDataset(
            torch.from_numpy(np.array(payload["images"], copy=True)),
            torch.from_numpy(np.array(payload["labels"], copy=True)),
            mean=payload["mean"],
            std=payload["std"],
            augmentation=AUGMENTATIONS.get(name) if payload["augment"] else None,
            classes=payload["classes"],
            name=name,
            split=str(payload["split"]),
        )
    else:
        raise ValueError(f"payload kind: invalid value {payload['kind']!r}; allowed: 'model', 'dataset'")


# ------------------------------------------------------------------------------------------------------------
# the trial


@dataclass
class TrialContext:
    """What a mitigation may use: the chip seed, the device, and seeded training-data loaders."""

    config: Mapping[str, Any]
    seed: int
    device: torch.device
    train_set: ImageDataset

    def train_loader(self, batch_size: int, *, augment: bool, purpose: str) -> DataLoader[Any]:
        """A shuffled training-split loader seeded by (chip seed, ``purpose``); augmentation on request."""
        ds = self.train_set if augment else self.train_set.with_augmentation(None)
        return make_loader(ds, batch_size, shuffle=True, seed=derive_seed(self.seed, purpose), device=self.device)

    def digital_model(self) -> nn.Module:
        """The trial's digital model (cached per worker process), e.g. the teacher of ``ln_distill``."""
        return _load_model(self.config["model"])


def trial_mitigation(config: Mapping[str, Any], train: ImageDataset, device: torch.device) -> RegisteredMitigation:
    """The mitigation of a resolved configuration, ready for :func:`xbarlab.runner.run_chip`.

    ``config["mitigation"]`` names a registered mitigation and its full option set (already checked with
    :func:`xbarlab.mitigation.registry.check_options`; default: ``none``). Chip seed s gets a
    :class:`TrialContext` on ``config`` with seed s and training loaders from ``train``. Sweep trials
    (:func:`accuracy_trial`) and ``xbarlab mitigate`` apply every mitigation this way.
    """
    mitigation = config.get("mitigation", {"name": "none", "options": {}})
    return RegisteredMitigation(
        get_mitigation(str(mitigation["name"])),
        dict(mitigation.get("options", {})),
        lambda seed: TrialContext({**config, "seed": seed}, seed, device, train),
    )


def run_trial(config: Mapping[str, Any]) -> dict[str, Any]:
    """Run one trial; returns a dict with metrics, timings, env, worker, started_at, finished_at, error.

    A failing trial returns its error message and traceback under ``error``/``traceback`` instead of raising.
    """
    started = _now()
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    timings: dict[str, float] = {}
    try:
        import_plugins(list(config.get("plugins", [])))
        fn = get_trial_kind(str(config.get("kind", "accuracy")))
        result = fn(config)
        metrics = dict(result.get("metrics", result))
        timings = dict(result.get("timings", {}))
        error = None
        tb = None
    except Exception as exc:
        metrics = {}
        error = f"{type(exc).__name__}: {exc}"
        tb = traceback.format_exc()
    timings["total_s"] = time.perf_counter() - t0
    timings["cpu_s"] = time.process_time() - cpu0  # CPU time of this process (all its threads)
    return {
        "metrics": metrics,
        "timings": timings,
        "env": environment(),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "started_at": started,
        "finished_at": _now(),
        "error": error,
        "traceback": tb,
    }


def _find_layer(chip: nn.Module, name: str) -> nn.Module:
    layers = {la.layer_name: la for la in analog_layers(chip)}
    if name not in layers:
        raise ValueError(
            f"metrics.pc2_layer: invalid value {name!r}; allowed: one of the analog layers " + ", ".join(layers)
        )
    return layers[name]


_TIMING_KEYS = {
    "convert_s": "convert_s",
    "program_s": "program_s",
    "calibrate_s": "calibrate_s",
    "probe_s": "pc2_s",
    "mitigate_s": "mitigation_s",
    "evaluate_s": "evaluate_s",
}
"""The runner's stage timings under the trial's (stored) timing names."""


def accuracy_trial(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``accuracy`` trial kind (see the module docstring); returns ``{"metrics", "timings"}``."""
    seed = int(config["seed"])
    device = torch.device(str(config.get("device", "cpu")))
    clock = StageClock(device)
    lap, timings = clock.lap, clock.timings
    data = config["data"]
    digital = _load_model(config["model"])
    train = _load_split(data, "train")
    test = _load_split(data, "test")
    n_test = data.get("test_samples")
    if n_test is not None and n_test < len(test):
        key = _data_key(data, "test") + f":first{n_test}"
        if key not in _CACHE:
            _CACHE[key] = test.subset(list(range(int(n_test))))
        test = _CACHE[key]
    test_loader = make_loader(test, int(data["batch_size"]), shuffle=False, device=device)
    lap("load_s")

    hw = HardwareConfig.from_dict(config["hardware"])
    calib = make_loader(
        train.with_augmentation(None),
        int(data["calib_batch_size"]),
        shuffle=True,
        seed=derive_seed(seed, "calibration"),
    )
    probe_layer = config.get("metrics", {}).get("pc2_layer")
    t = config.get("drift_s")

    def probe(chip: nn.Module) -> dict[str, Any]:
        layer = _find_layer(chip, str(probe_layer))
        with torch.no_grad():
            value = pc2(layer.weight, layer.effective_weight())  # type: ignore[operator]
        out: dict[str, Any] = {"pc2": value}
        if t is not None and hw.drift.kind == "power_law":
            out["pc2_proj"] = pc2_proj(value, float(t), hw.drift.t0_s, hw.drift.nu_mean)
        return out

    run = run_chip(
        digital,
        hw,
        lambda chip: accuracy(chip, test_loader, device=device),
        seed=seed,
        t_seconds=None if t is None else float(t),
        calibration=calib,
        calib_batches=int(data["calib_batches"]),
        probe=probe if probe_layer else None,
        mitigation=trial_mitigation(config, train, device),
        device=device,
    )
    for stage, key in _TIMING_KEYS.items():
        if stage in run.timings:
            timings[key] = run.timings[stage]
    clock.restart()
    metrics: dict[str, Any] = dict(run.probe)
    acc = run.value
    metrics["accuracy"] = acc
    metrics["test_samples"] = len(test)
    if hw.adc.bits is not None:
        # Walden scaling (docs/papers.md §4.9): energy per conversion ∝ 2^B, relative to 8-bit ADCs, same mapping
        metrics["adc_power_rel"] = 2.0 ** (hw.adc.bits - 8)
    metrics.update(run.info)
    if config.get("metrics", {}).get("clean_accuracy"):
        key = f"clean:{_model_key(config['model'])}:{_data_key(data, 'test')}:{n_test}:{data['batch_size']}"
        if key not in _CACHE:
            _CACHE[key] = accuracy(digital.to(device), test_loader, device=device)
        metrics["clean_accuracy"] = _CACHE[key]
        lap("clean_s")
    return {"metrics": metrics, "timings": timings}
