"""The ``p3_branch_finetune`` mitigation: P3's compensation branches fine-tuned on each test chip (an extension,
not in P3; docs/correctnet.md §8).

The branches were trained over random chips by the placement stage; here they are fine-tuned on the chip under
test with a few labelled training images, the chip's own static error fixed: the chip-in-the-loop counterpart
of P1's BN fine-tuning. Fine-tuning runs on a training copy of the chip: the same digital model converted with
the trial's hardware without the ADC (unless ``adc_in_training``, as the placement search trains), with the
same branches, programmed with the chip's seed (its effective weights are checked to equal the chip's) and
given the chip's DAC ranges. The trained branch weights are then loaded into the chip, which is tested with
its full hardware.

It runs only in ``p3_chip`` trials (:mod:`xbarlab.papers.p3.trial`), whose context carries
:class:`BranchData`; other trial kinds refuse it when a sweep is planned.

Seeds: the labelled images (the first ``images`` training images, augmented) are shuffled by a
loader seeded with ``shuffle_seed`` (the P3 pipeline passes its ``seed``), the same order on every chip; the
training uses ``seed`` (the pipeline passes ``seed + 2``); augmentation draws from the trial's seeded RNG.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from xbarlab.chip import program
from xbarlab.conversion import convert
from xbarlab.data import make_loader
from xbarlab.hardware import HardwareConfig
from xbarlab.layers import analog_layers
from xbarlab.mitigation.compensation import (
    CompensationConfig,
    attach_compensation,
    compensation_state,
    load_compensation_state,
    train_compensation,
)
from xbarlab.mitigation.compensation.training import LOSSES
from xbarlab.mitigation.registry import (
    MitigationContext,
    MitigationDef,
    MitigationOutcome,
    OptionLimit,
    register_mitigation,
)

__all__ = ["P3_BRANCH_FINETUNE", "BranchData", "copy_dac_ranges"]

P3_BRANCH_FINETUNE = "p3_branch_finetune"
"""The registered name of the method."""


@dataclass(frozen=True)
class BranchData:
    """What fine-tuning a chip's branches needs, beyond the chip: the digital model (converted for the training
    copy; also the teacher of the loss), the trial's hardware, the branches (layers, config, trained weights),
    the labelled training images (count → the first that many, augmented) and the converter-calibration
    batches."""

    model: nn.Module
    hardware: HardwareConfig
    layers: Sequence[str]
    config: CompensationConfig
    state: Mapping[str, torch.Tensor]
    images: Callable[[int], Any]
    calibration: Any


def copy_dac_ranges(src: nn.Module, dst: nn.Module) -> None:
    """Give ``dst``'s analog layers the DAC ranges of the same-named layers of ``src``."""
    ranges = {la.layer_name: (la.dac_range, la.dac_signed) for la in analog_layers(src)}
    for la in analog_layers(dst):
        dac_range, dac_signed = ranges[la.layer_name]
        la.dac_range = None if dac_range is None else dac_range.clone()
        la.dac_signed = None if dac_signed is None else dac_signed.clone()


def _training_copy(chip: nn.Module, data: BranchData, seed: int, adc: bool, device: torch.device) -> nn.Module:
    """The chip's training copy (module docstring), checked weight for weight against ``chip``."""
    hw = data.hardware if adc else data.hardware.override({"adc.bits": None, "adc.noise_lsb": 0.0})
    with torch.random.fork_rng(devices=[]):  # building the copy leaves the trial's RNG stream where it was
        trainer = convert(data.model, hw)
        attach_compensation(trainer, data.layers, data.config, state=dict(data.state))
    trainer.to(device)
    program(trainer, seed)
    for a, b in zip(analog_layers(trainer), analog_layers(chip), strict=True):
        if not torch.equal(a.effective_weight(), b.effective_weight()):
            raise RuntimeError(f"{P3_BRANCH_FINETUNE}: training copy differs from chip {seed} in {a.layer_name}")
    copy_dac_ranges(chip, trainer)
    return trainer


def _branch_finetune(chip: nn.Module, context: MitigationContext, options: Mapping[str, Any]) -> MitigationOutcome:
    data = getattr(context, "branch_data", None)
    if not isinstance(data, BranchData):
        raise ValueError(
            f"{P3_BRANCH_FINETUNE}: needs a p3_chip trial whose model has compensation branches (model.compensation)"
        )
    images = data.images(int(options["images"]))
    trainer = _training_copy(chip, data, context.seed, bool(options["adc_in_training"]), context.device)
    loader = make_loader(
        images, int(options["batch_size"]), shuffle=True, seed=int(options["shuffle_seed"]), device=context.device
    )
    teacher = copy.deepcopy(data.model).to(context.device)
    result = train_compensation(
        trainer,
        loader,
        steps=int(options["steps"]),
        lr=float(options["lr"]),
        seed=int(options["seed"]),
        resample=False,
        calib_loader=data.calibration,
        loss=str(options["loss"]),
        teacher=teacher,
        device=context.device,
    )
    load_compensation_state(chip, compensation_state(trainer))
    tail = result.losses[-10:]
    info = {
        "finetune_images": len(images),
        "finetune_loss": sum(tail) / len(tail),
        "finetune_s": result.wall_time_s,
    }
    return MitigationOutcome(info)


register_mitigation(
    MitigationDef(
        P3_BRANCH_FINETUNE,
        "P3 extension: the compensation branches fine-tuned on each chip with labelled training images",
        _branch_finetune,
        options={
            "steps": 100,
            "lr": 3e-3,
            "batch_size": 64,
            "seed": 2,
            "shuffle_seed": 0,
            "images": 1000,
            "loss": "ce_normalized",
            "adc_in_training": False,
        },
        limits={
            "steps": OptionLimit(lo=1),
            "lr": OptionLimit(lo=0.0, lo_open=True),
            "batch_size": OptionLimit(lo=1),
            "seed": OptionLimit(lo=0),
            "shuffle_seed": OptionLimit(lo=0),
            "images": OptionLimit(lo=1),
            "loss": OptionLimit(choices=LOSSES),
        },
        trial_kinds=("p3_chip",),
    ),
    replace=True,
)
