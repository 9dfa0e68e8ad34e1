"""LayerNorm γ/β fine-tuning on the chip (P1's BN fine-tuning transferred to transformers).

LayerNorm keeps no running statistics, so BN re-estimation has nothing to re-estimate; what transfers from P1 is
fine-tuning the affine parameters (γ = ``weight``, β = ``bias``) of every LayerNorm with the chip in the loop,
on the same few-shot protocol (``max_samples`` labelled training samples) and P1's schedule: SGD momentum 0.9,
lr 0.01, ×0.2 every 2 epochs, 5 epochs. Every other parameter and all chip state stay untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["LNFinetuneResult", "finetune_ln", "ln_modules"]


def ln_modules(model: nn.Module, fn: str = "ln_finetune") -> list[tuple[str, nn.LayerNorm]]:
    """The LayerNorm modules with affine parameters; refuses (ValueError) a model without any."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.LayerNorm) and m.weight is not None]
    if not found:
        raise ValueError(
            f"{fn}: model {type(model).__name__} has no nn.LayerNorm with affine γ/β; allowed: a model with one"
        )
    return found


@dataclass
class LNFinetuneResult:
    """Per-epoch loss/accuracy on the fine-tuning samples, steps and samples used."""

    epochs: int
    samples_used: int
    steps: int
    epoch_loss: list[float] = field(default_factory=list)
    epoch_accuracy: list[float] = field(default_factory=list)


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
    """Fine-tune only the LayerNorm γ/β of ``model`` (in place) with cross-entropy on labelled batches ``(x, y)``."""
    fn = "finetune_ln"
    for name, value, ok, allowed in (
        ("epochs", epochs, isinstance(epochs, int) and epochs >= 1, ">= 1"),
        ("lr", lr, lr > 0, "> 0"),
        ("lr_step_epochs", lr_step_epochs, isinstance(lr_step_epochs, int) and lr_step_epochs >= 1, ">= 1"),
        ("lr_gamma", lr_gamma, 0 < lr_gamma <= 1, "in (0, 1]"),
        ("momentum", momentum, 0 <= momentum < 1, "in [0, 1)"),
        ("max_samples", max_samples, max_samples is None or max_samples >= 1, ">= 1 or None"),
    ):
        if not ok:
            raise ValueError(f"{fn}: {name}={value!r}; allowed: {allowed}")
    params = [p for _, m in ln_modules(model, fn) for p in (m.weight, m.bias) if p is not None]
    dev = torch.device(device) if device is not None else params[0].device
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    seen = 0
    for x, y in loader:
        if max_samples is not None:
            x, y = x[: max_samples - seen], y[: max_samples - seen]
        batches.append((x.to(dev), y.to(dev)))
        seen += len(y)
        if max_samples is not None and seen >= max_samples:
            break
    if seen == 0:
        raise ValueError(f"{fn}: loader yielded no samples; allowed: a loader of labelled batches (x, y)")
    saved_grad = {id(p): p.requires_grad for p in model.parameters()}
    was_training = model.training
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        model.eval()  # dropout off; LayerNorm behaves the same in both modes
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step_epochs, gamma=lr_gamma)
        crit = nn.CrossEntropyLoss()
        res = LNFinetuneResult(epochs=epochs, samples_used=seen, steps=0)
        for _ in range(epochs):
            total, correct = 0.0, 0
            for x, y in batches:
                out = model(x)
                loss = crit(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                res.steps += 1
                total += float(loss.detach()) * len(y)
                correct += int((out.argmax(1) == y).sum())
            sched.step()
            res.epoch_loss.append(total / seen)
            res.epoch_accuracy.append(correct / seen)
    finally:
        for p in model.parameters():
            p.requires_grad_(saved_grad[id(p)])
        model.train(was_training)
    return res
