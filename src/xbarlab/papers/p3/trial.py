"""The ``p3_chip`` trial kind: one chip of the P3 σ sweep, run by the generic sweep engine.

The P3 pipeline's ``sweep`` stage (``xbarlab.papers.p3.stages._stage_sweep``) writes one sweep per model
(``p3-sweep-plain``, ``p3-sweep-lipschitz``) into the run's results store ``<out_dir>/p3.sqlite``: one trial
per (σ, chip). The stage's table rows are read back from the store, and ``xbarlab report <out_dir>/p3.sqlite``
renders them with the generic report.

A trial uses P3's own data choices (:class:`xbarlab.papers.p3.data._Data`), so its accuracy equals the
pipeline's Monte-Carlo evaluation of the same chip seed (tests/test_p3_trial.py checks this bit for bit):

* ``data.test_samples``: the first N test images (P3's ``sweep_images``), in batches of ``data.batch_size``;
* ``data.calib_samples``: the first N training images without augmentation (P3's ``calib_images``, at most the
  images left after ``val_images``), read in batches of ``data.calib_batch_size`` (128) for the converter
  calibration, ``data.calib_batches`` batches (4);
* the model as loaded (no channels-last conversion), the chip seed ``eval_seed + k``;
* ``model.compensation`` (optional): digital compensation branches after the named analog layers, as the
  placement stage trained them: ``{layers, branches, sha256, config}`` (a safetensors file of
  :func:`xbarlab.mitigation.compensation.compensation_state`, its SHA-256, checked before the sweep starts and
  again when the trial reads it, and the :class:`~xbarlab.mitigation.compensation.CompensationConfig`);
* ``mitigation``: ``none``, a registered method that needs at most unlabelled images (``bn_adapt`` with
  ``augment: false``, ``bn_online``, ``drift_comp_*``) or ``p3_branch_finetune``
  (:mod:`xbarlab.papers.p3.finetune`: the branches fine-tuned on the chip with the first ``images``
  training images, augmented); ``bn_adapt`` reads the first ``data.bn_samples``
  training images in order (P3's ``bn_images``), as the pipeline's per-chip stage does.

Metrics: ``accuracy`` (%), ``test_samples`` and what the mitigation reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xbarlab.conversion import convert
from xbarlab.data import get_dataset, make_loader
from xbarlab.evaluation import accuracy
from xbarlab.experiments.registry import register_trial_kind
from xbarlab.hardware import HardwareConfig
from xbarlab.mitigation.compensation import CompensationConfig, attach_compensation
from xbarlab.mitigation.registry import get_mitigation
from xbarlab.papers.p3 import finetune as _finetune  # registers p3_branch_finetune
from xbarlab.runner import RegisteredMitigation, run_chip
from xbarlab.schema import Field

__all__ = ["P3_CHIP_MITIGATIONS", "load_verified_branches", "p3_chip_trial"]

_CACHE: dict[str, Any] = {}
"""Per-process cache: models and data subsets (a worker reads each once)."""


def _model(model: Mapping[str, Any]) -> nn.Module:
    from xbarlab.papers.p3.data import load_model

    spec = str(model.get("pretrained") or model.get("checkpoint"))
    key = f"model:{spec}:{model.get('sha256')}"
    if key not in _CACHE:
        _CACHE[key] = load_model(spec)[0]
    net: nn.Module = _CACHE[key]
    return net


def _subset(data: Mapping[str, Any], split: str, count: int, *, augment: bool = False) -> Any:
    key = f"data:{data['dataset']}:{data.get('data_dir')}:{split}:{count}:{augment}"
    if key not in _CACHE:
        ds = get_dataset(str(data["dataset"]), split, data_dir=data.get("data_dir"), augment=augment)
        _CACHE[key] = ds.subset(range(min(count, len(ds))))
    return _CACHE[key]


_COMPENSATION_KEYS = ("layers", "branches", "sha256", "config")


def _check_compensation(comp: Any) -> tuple[list[str], CompensationConfig, Path, str]:
    """The parts of a ``model.compensation`` mapping; ``ValueError`` naming the key when one is wrong."""
    if not isinstance(comp, Mapping) or sorted(comp) != sorted(_COMPENSATION_KEYS):
        keys = sorted(comp) if isinstance(comp, Mapping) else comp
        raise ValueError(
            f"model.compensation: invalid value {keys!r}; allowed: a mapping with keys {', '.join(_COMPENSATION_KEYS)}"
        )
    layers = comp["layers"]
    if not isinstance(layers, list) or not layers or not all(isinstance(n, str) and n for n in layers):
        raise ValueError(f"model.compensation.layers: invalid value {layers!r}; allowed: a non-empty list of names")
    if not isinstance(comp["config"], Mapping):
        raise ValueError(f"model.compensation.config: invalid value {comp['config']!r}; allowed: a mapping")
    try:
        config = CompensationConfig(**comp["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model.compensation.config: {exc}") from None
    return list(layers), config, Path(str(comp["branches"])), str(comp["sha256"])


def load_verified_branches(path: Path, recorded: str, *, where: str, fix: str = "") -> dict[str, torch.Tensor]:
    """The branch weights stored in ``path`` after checking the file against its recorded SHA-256; a missing or
    altered file raises ``ValueError`` naming ``where`` the hash was recorded, followed by ``fix``."""
    from safetensors.torch import load_file

    from xbarlab.checkpoint import sha256_file

    if not path.is_file():
        raise ValueError(f"{path}: missing{fix}")
    actual = sha256_file(path)
    if actual != recorded:
        raise ValueError(f"{path}: SHA-256 {actual} does not match {where} {recorded} (file corrupt or replaced){fix}")
    return load_file(str(path))


Branches = tuple[list[str], CompensationConfig, dict[str, torch.Tensor]]
"""Compensation branches: the layers, the branch configuration and the trained weights."""


def _branches(comp: Any) -> Branches:
    """The checked branch layers, config and weights of ``model.compensation`` (file and SHA-256 verified; the
    file must hold branches for exactly the listed layers)."""
    layers, config, path, recorded = _check_compensation(comp)
    state = load_verified_branches(path, recorded, where="model.compensation.sha256")
    stored = sorted({key.partition("/")[0] for key in state})
    if stored != sorted(layers):
        raise ValueError(
            f"model.compensation.layers: invalid value {layers!r}; allowed: the layers whose branches "
            f"{path.name} holds ({', '.join(stored) or 'none'})"
        )
    return layers, config, state


def _compensated_base(net: nn.Module, hardware: HardwareConfig, comp: Any) -> tuple[nn.Module, Branches]:
    """``net`` converted with ``hardware`` and given the trained branches of ``model.compensation`` (each chip of
    the trial is a copy of it), and the checked branches. A listed layer that is not analog on this hardware
    (unknown, or kept digital) is refused, naming the analog layers."""
    from xbarlab.layers import analog_layers

    branches = _branches(comp)
    base = convert(net, hardware)
    analog = [la.layer_name for la in analog_layers(base)]
    missing = [name for name in branches[0] if name not in analog]
    if missing:
        raise ValueError(
            f"model.compensation.layers: {missing} are not analog layers of this chip (unknown or kept digital); "
            f"allowed: {', '.join(analog)}"
        )
    attach_compensation(base, branches[0], branches[1], state=branches[2])
    return base, branches


def _check_inputs(settings: Mapping[str, Any]) -> None:
    """Planning check (before any trial runs): a mitigation P3's chips can run; the branches file of
    ``model.compensation`` there, intact, holding the listed layers, each an analog layer of the chip; and
    ``p3_branch_finetune`` given branches to fine-tune."""
    from xbarlab.experiments.settings import build_hardware

    name = settings["mitigation"]
    if name not in P3_CHIP_MITIGATIONS:
        raise ValueError(f"mitigation: invalid value {name!r}; allowed: {', '.join(P3_CHIP_MITIGATIONS)}")
    comp = settings["model"].get("compensation")
    if comp is not None:
        _compensated_base(_model(settings["model"]), build_hardware(settings["hardware"]), comp)
    elif name == _finetune.P3_BRANCH_FINETUNE:
        raise ValueError(
            "mitigation: invalid value 'p3_branch_finetune' without model.compensation; allowed: a model with "
            "compensation branches (the method fine-tunes them)"
        )


P3_CHIP_MITIGATIONS = (
    "none",
    "bn_adapt",
    "bn_online",
    "drift_comp_global",
    "drift_comp_column",
    _finetune.P3_BRANCH_FINETUNE,
)
"""Mitigations a ``p3_chip`` trial accepts: those that need no labelled, shuffled or augmented batches, and P3's
per-chip branch fine-tuning (the option ``images``: the first N training images, augmented)."""


@dataclass
class _P3Context:
    """The mitigation context of a P3 chip: the chip seed, the device, P3's BN-adaptation images and, for
    :mod:`xbarlab.papers.p3.finetune`, what fine-tuning the chip's branches needs."""

    config: Mapping[str, Any]
    seed: int
    device: torch.device
    bn_set: Any
    branch_data: _finetune.BranchData | None = None

    def train_loader(self, batch_size: int, *, augment: bool, purpose: str) -> Any:
        """The first ``data.bn_samples`` training images, in order (P3's BN-adaptation loader)."""
        if augment:
            raise ValueError(f"{purpose}: augment: invalid value true; allowed: false (P3 adapts on plain images)")
        if len(self.bn_set) == 0:
            raise ValueError(f"{purpose}: data.bn_samples: invalid value 0; allowed: >= 1 for this mitigation")
        return make_loader(self.bn_set, batch_size, device=self.device)


def p3_chip_trial(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``p3_chip`` trial kind (see the module docstring); returns ``{"metrics", "timings"}``."""
    seed = int(config["seed"])
    device = torch.device(str(config.get("device", "cpu")))
    data = config["data"]
    net = _model(config["model"])
    hardware = HardwareConfig.from_dict(config["hardware"])
    comp = config["model"].get("compensation")
    chip_model: nn.Module = net
    chip_hw: HardwareConfig | None = hardware
    branches: Branches | None = None
    if comp is not None:
        chip_model, branches = _compensated_base(net, hardware, comp)
        chip_hw = None
    test = _subset(data, "test", int(data["test_samples"]))
    calib_set = _subset(data, "train", int(data["calib_samples"]))
    test_loader = make_loader(test, int(data["batch_size"]), device=device)
    calib = make_loader(calib_set, int(data["calib_batch_size"]), device=device)
    mitigation = config.get("mitigation", {"name": "none", "options": {}})
    name = str(mitigation["name"])
    if name not in P3_CHIP_MITIGATIONS:
        raise ValueError(f"mitigation: invalid value {name!r}; allowed: {', '.join(P3_CHIP_MITIGATIONS)}")
    bn_set = _subset(data, "train", int(data["bn_samples"]))
    branch_data = None
    if branches is not None:
        branch_data = _finetune.BranchData(
            net, hardware, *branches, lambda n: _subset(data, "train", n, augment=True), calib
        )
    registered = RegisteredMitigation(
        get_mitigation(name),
        dict(mitigation.get("options", {})),
        lambda s: _P3Context({**config, "seed": s}, s, device, bn_set, branch_data),
    )
    run = run_chip(
        chip_model,
        chip_hw,
        lambda chip: accuracy(chip, test_loader, device=device),
        seed=seed,
        calibration=calib,
        calib_batches=int(data["calib_batches"]),
        mitigation=registered,
        device=device,
    )
    return {"metrics": {"accuracy": run.value, "test_samples": len(test), **run.info}, "timings": dict(run.timings)}


register_trial_kind(
    "p3_chip",
    p3_chip_trial,
    data_fields={
        "calib_samples": Field("int", 512, lo=1, doc="first training images of the converter calibration"),
        "bn_samples": Field("int", 0, lo=0, doc="first training images of BN adaptation (bn_adapt)"),
    },
    model_fields={
        "compensation": Field(
            "mapping", optional=True, doc="compensation branches: layers, branches (safetensors), sha256, config"
        )
    },
    check_inputs=_check_inputs,
)
