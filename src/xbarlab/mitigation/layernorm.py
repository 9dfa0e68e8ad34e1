"""LayerNorm γ/β fine-tuning on the chip (P1's BN fine-tuning transferred to transformers), and a label-free variant.

LayerNorm keeps no running statistics, so BN re-estimation has nothing to re-estimate; what transfers from P1 is
fine-tuning the affine parameters (γ = ``weight``, β = ``bias``) of every LayerNorm with the chip in the loop,
on the same few-shot protocol (``max_samples`` training samples) and P1's schedule: SGD momentum 0.9,
lr 0.01, ×0.2 every 2 epochs, 5 epochs. Every other parameter and all chip state stay untouched.

* :func:`finetune_ln` -- cross-entropy on labelled training samples (P1 §1.7 B with LayerNorm for BN).
* :func:`distill_ln` -- label-free: the same γ/β training, but the target is the *digital* model's output on the
  same (unlabelled) images, ``T²·KL(softmax(z_digital/T) ‖ softmax(z_chip/T))``. The operator of a chip always
  has the digital weights (they were programmed), so this needs no labels, and its optimum is the digital
  model's function itself (TENT's entropy objective has no such anchor: it rewards confident outputs, right or
  wrong). See ``docs/transformers.md``.

Both register as sweep mitigations ``ln_finetune`` and ``ln_distill`` (:func:`register_sweep_mitigations`,
declared lazily in :mod:`xbarlab.experiments.registry`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xbarlab.checkpoint import load_checkpoint, load_pretrained
from xbarlab.mitigation.registry import (
    P1_SCHEDULE,
    P1_SCHEDULE_LIMITS,
    MitigationDef,
    MitigationOutcome,
    OptionLimit,
    register_mitigation,
)
from xbarlab.models.common import channels_last

__all__ = ["LNFinetuneResult", "distill_ln", "finetune_ln", "ln_modules", "register_sweep_mitigations"]


def ln_modules(model: nn.Module, fn: str = "ln_finetune") -> list[tuple[str, nn.LayerNorm]]:
    """The LayerNorm modules with affine parameters; refuses (ValueError) a model without any."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.LayerNorm) and m.weight is not None]
    if not found:
        raise ValueError(
            f"{fn}: model {type(model).__name__} has no nn.LayerNorm with affine γ/β, so there is nothing to "
            "fine-tune; allowed: a model with at least one affine LayerNorm (e.g. vit-tiny)"
        )
    return found


@dataclass
class LNFinetuneResult:
    """Per-epoch loss/accuracy on the fine-tuning samples, steps, samples used/seen and wall time (s).

    ``epoch_accuracy`` is against the labels (:func:`finetune_ln`) or against the digital model's top-1 class
    (:func:`distill_ln`, the agreement with the teacher).
    """

    epochs: int
    samples_used: int
    steps: int
    samples_seen: int = 0
    wall_time_s: float = 0.0
    epoch_loss: list[float] = field(default_factory=list)
    epoch_accuracy: list[float] = field(default_factory=list)
    epoch_lr: list[float] = field(default_factory=list)


def _check_args(fn: str, **values: Any) -> None:
    rules = {
        "epochs": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, ">= 1 (an integer)"),
        "lr": (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0, "> 0"),
        "lr_step_epochs": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, ">= 1"),
        "lr_gamma": (lambda v: isinstance(v, (int, float)) and 0 < v <= 1, "in (0, 1]"),
        "momentum": (lambda v: isinstance(v, (int, float)) and 0 <= v < 1, "in [0, 1)"),
        "max_samples": (lambda v: v is None or (isinstance(v, int) and v >= 1), ">= 1 or None"),
        "temperature": (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0, "> 0"),
    }
    for name, value in values.items():
        ok, allowed = rules[name]
        if not ok(value):
            raise ValueError(f"{fn}: {name}={value!r}; allowed: {allowed}")


def _first_samples(loader: Iterable[Any], max_samples: int, dev: torch.device, fn: str) -> list[tuple[Any, Any]]:
    """The first ``max_samples`` samples of ``loader`` in its batches (the last one truncated)."""
    batches: list[tuple[Any, Any]] = []
    seen = 0
    for x, y in loader:
        x, y = x[: max_samples - seen], y[: max_samples - seen]
        batches.append((x.to(dev), y.to(dev)))
        seen += len(x)
        if seen >= max_samples:
            break
    if seen == 0:
        raise ValueError(f"{fn}: loader yielded no samples; allowed: a loader of batches (x, y)")
    return batches


def _kl_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T²·KL(softmax(teacher/T) ‖ softmax(student/T))``, mean over the batch."""
    t = float(temperature)
    log_p = nn.functional.log_softmax(student / t, dim=1)
    q = nn.functional.softmax(teacher / t, dim=1)
    return nn.functional.kl_div(log_p, q, reduction="batchmean") * (t * t)


def _train_ln(
    model: nn.Module,
    loader: Iterable[Any],
    fn: str,
    *,
    teacher: nn.Module | None,
    temperature: float,
    epochs: int,
    lr: float,
    lr_step_epochs: int,
    lr_gamma: float,
    momentum: float,
    max_samples: int | None,
    device: torch.device | str | None,
) -> LNFinetuneResult:
    _check_args(
        fn,
        epochs=epochs,
        lr=lr,
        lr_step_epochs=lr_step_epochs,
        lr_gamma=lr_gamma,
        momentum=momentum,
        max_samples=max_samples,
        temperature=temperature,
    )
    params = [p for _, m in ln_modules(model, fn) for p in (m.weight, m.bias) if p is not None]
    dev = torch.device(device) if device is not None else params[0].device
    t0 = time.perf_counter()
    cached = _first_samples(loader, max_samples, dev, fn) if max_samples is not None else None
    saved_grad = {id(p): p.requires_grad for p in model.parameters()}
    saved_values = [p.detach().clone() for p in params]
    modes = {m: m.training for m in model.modules()}
    teacher_modes = {m: m.training for m in teacher.modules()} if teacher is not None else {}
    teacher_dev = next(teacher.parameters()).device if teacher is not None else dev
    res = LNFinetuneResult(epochs=epochs, samples_used=0, steps=0)
    ok = False
    try:
        model.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        model.eval()  # dropout off; LayerNorm has no train/eval difference
        if teacher is not None:
            teacher.eval()
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step_epochs, gamma=lr_gamma)
        for _ in range(epochs):
            res.epoch_lr.append(float(opt.param_groups[0]["lr"]))
            total, correct, n = 0.0, 0, 0
            for x, y in cached if cached is not None else loader:
                x = x.to(dev)
                out = model(x)
                if teacher is None:
                    target = y.to(dev)
                    loss = nn.functional.cross_entropy(out, target)
                else:
                    with torch.no_grad():
                        z = teacher(x.to(teacher_dev)).to(dev)
                    target = z.argmax(1)
                    loss = _kl_loss(out, z, temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                res.steps += 1
                total += float(loss.detach()) * len(x)
                correct += int((out.detach().argmax(1) == target).sum())
                n += len(x)
            if n == 0:
                raise ValueError(f"{fn}: loader yielded no samples; allowed: a loader of batches (x, y)")
            sched.step()
            res.samples_seen += n
            res.samples_used = n
            res.epoch_loss.append(total / n)
            res.epoch_accuracy.append(correct / n)
        ok = True
    finally:
        for p in params:
            p.grad = None
        if not ok:  # roll γ/β back: a failed fine-tuning leaves the chip as it was
            with torch.no_grad():
                for p, v in zip(params, saved_values, strict=True):
                    p.copy_(v)
        for p in model.parameters():
            p.requires_grad_(saved_grad[id(p)])
        for m, mode in modes.items():
            m.training = mode
        for m, mode in teacher_modes.items():
            m.training = mode
    res.wall_time_s = time.perf_counter() - t0
    return res


def finetune_ln(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    epochs: int = 5,
    lr: float = 0.01,
    lr_step_epochs: int = 2,
    lr_gamma: float = 0.2,
    momentum: float = 0.9,
    max_samples: int | None = None,
    device: torch.device | str | None = None,
) -> LNFinetuneResult:
    """Fine-tune only the LayerNorm γ/β of ``model`` (in place) with cross-entropy on labelled batches ``(x, y)``.

    P1's schedule by default (SGD momentum 0.9, lr 0.01 ×0.2 every 2 epochs, 5 epochs). ``max_samples``: few-shot,
    the first N samples the loader yields, in the same batches every epoch; ``None`` re-iterates the whole loader
    every epoch. Gradients flow through the frozen (analog) layers to the inputs. Every other parameter and buffer
    is left bit-identical; ``requires_grad`` and ``training`` flags are restored, and on an exception γ/β too.
    """
    return _train_ln(
        model,
        loader,
        "finetune_ln",
        teacher=None,
        temperature=1.0,
        epochs=epochs,
        lr=lr,
        lr_step_epochs=lr_step_epochs,
        lr_gamma=lr_gamma,
        momentum=momentum,
        max_samples=max_samples,
        device=device,
    )


def distill_ln(
    model: nn.Module,
    teacher: nn.Module,
    loader: Iterable[Any],
    *,
    temperature: float = 1.0,
    epochs: int = 5,
    lr: float = 0.01,
    lr_step_epochs: int = 2,
    lr_gamma: float = 0.2,
    momentum: float = 0.9,
    max_samples: int | None = None,
    device: torch.device | str | None = None,
) -> LNFinetuneResult:
    """Label-free LayerNorm γ/β fine-tuning: match the chip's outputs to the digital ``teacher``'s (in place).

    Loss ``T²·KL(softmax(z_teacher/T) ‖ softmax(z_chip/T))`` (``temperature`` T, dimensionless) on the images of
    ``loader``; its labels are never read. Same schedule, few-shot protocol and guarantees as :func:`finetune_ln`;
    the teacher runs in eval mode without gradients and is not modified.
    """
    return _train_ln(
        model,
        loader,
        "distill_ln",
        teacher=teacher,
        temperature=temperature,
        epochs=epochs,
        lr=lr,
        lr_step_epochs=lr_step_epochs,
        lr_gamma=lr_gamma,
        momentum=momentum,
        max_samples=max_samples,
        device=device,
    )


# ------------------------------------------------------------------------------------------------ sweep registry


def _info(prefix: str, res: LNFinetuneResult) -> dict[str, Any]:
    return {
        f"{prefix}_samples": res.samples_used,
        f"{prefix}_steps": res.steps,
        f"{prefix}_s": res.wall_time_s,
        f"{prefix}_loss": res.epoch_loss[-1],
        f"{prefix}_train_acc": 100.0 * res.epoch_accuracy[-1],
    }


def _sweep_finetune(chip: nn.Module, ctx: Any, options: Mapping[str, Any]) -> Any:
    ln_modules(chip, "mitigation 'ln_finetune'")
    loader = ctx.train_loader(int(options["batch_size"]), augment=bool(options["augment"]), purpose="ln_finetune")
    ms = options["max_samples"]
    res = finetune_ln(
        chip,
        loader,
        epochs=int(options["epochs"]),
        lr=float(options["lr"]),
        lr_step_epochs=int(options["lr_step_epochs"]),
        lr_gamma=float(options["lr_gamma"]),
        momentum=float(options["momentum"]),
        max_samples=None if ms is None else int(ms),
        device=ctx.device,
    )
    return MitigationOutcome(_info("finetune", res))


def _teacher(model: Mapping[str, Any]) -> nn.Module:
    """The digital model named by a trial's ``model`` entry (pretrained name or checkpoint), loaded as the trial
    loads it (eval mode, NHWC)."""
    if model.get("pretrained"):
        net, _ = load_pretrained(str(model["pretrained"]))
    else:
        net, _ = load_checkpoint(str(model["checkpoint"]))
    return channels_last(net.eval())


def _sweep_distill(chip: nn.Module, ctx: Any, options: Mapping[str, Any]) -> Any:
    ln_modules(chip, "mitigation 'ln_distill'")
    digital_model = getattr(ctx, "digital_model", None)  # a sweep trial's context: its cached digital model
    teacher = digital_model() if digital_model is not None else _teacher(ctx.config["model"])
    # the same images as ln_finetune draws (same purpose seed), labels unused
    loader = ctx.train_loader(int(options["batch_size"]), augment=bool(options["augment"]), purpose="ln_finetune")
    ms = options["max_samples"]
    res = distill_ln(
        chip,
        teacher,
        loader,
        temperature=float(options["temperature"]),
        epochs=int(options["epochs"]),
        lr=float(options["lr"]),
        lr_step_epochs=int(options["lr_step_epochs"]),
        lr_gamma=float(options["lr_gamma"]),
        momentum=float(options["momentum"]),
        max_samples=None if ms is None else int(ms),
        device=ctx.device,
    )
    return MitigationOutcome(_info("distill", res))


def register_sweep_mitigations() -> None:
    """Register ``ln_finetune`` and ``ln_distill`` in the sweep mitigation registry (idempotent)."""
    limits = dict(P1_SCHEDULE_LIMITS)
    register_mitigation(
        MitigationDef(
            "ln_finetune",
            "LayerNorm γ/β fine-tuning on the chip with cross-entropy (P1 §1.7 B transferred to LayerNorm; "
            "xbarlab.mitigation.layernorm.finetune_ln); max_samples limits the labelled samples (few-shot).",
            _sweep_finetune,
            dict(P1_SCHEDULE),
            limits,
        ),
        replace=True,
    )
    register_mitigation(
        MitigationDef(
            "ln_distill",
            "Label-free LayerNorm γ/β fine-tuning: the chip's outputs matched to the digital model's on "
            "unlabelled training images (T²·KL; xbarlab.mitigation.layernorm.distill_ln).",
            _sweep_distill,
            {**P1_SCHEDULE, "temperature": 1.0},
            {**limits, "temperature": OptionLimit(lo=0.0, lo_open=True)},
        ),
        replace=True,
    )


# Importing this module registers its sweep mitigations (declared lazily in xbarlab.experiments.registry).
register_sweep_mitigations()
