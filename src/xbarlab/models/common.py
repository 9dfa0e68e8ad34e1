"""Helpers shared by the model definitions."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["channels_last", "check_common", "get_classifier", "init_weights", "scaled"]


def scaled(channels: int, width: float) -> int:
    """``channels × width`` rounded, at least 1."""
    return max(1, round(channels * width))


def check_common(num_classes: int, in_channels: int, width: float) -> None:
    """Validate the arguments every model builder takes."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be an int >= 1, got {in_channels!r}")
    if not isinstance(width, (int, float)) or not 0 < width <= 16:
        raise ValueError(f"width must be a number in (0, 16], got {width!r}")


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal conv weights (fan_out, ReLU), BN γ=1 β=0, default PyTorch init for Linear layers."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def get_classifier(model: nn.Module) -> nn.Linear:
    """The classifier of a model: its last :class:`nn.Linear` (in module registration order)."""
    last: nn.Linear | None = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer (no classifier)")
    return last


def channels_last(model: nn.Module) -> nn.Module:
    """A zoo model with its 2-D convolution weights in channels-last (NHWC) memory format (in place).

    On CPU, oneDNN convolutions run 25–35 % faster in NHWC (ResNet-20 and the small VGG at batch 500, one thread;
    docs/simulator.md, "Speed"); analog layers converted from such a model keep the format for their effective
    weights. Only for models whose code accepts NHWC activations (every zoo model does: they are trained that
    way); models without Conv2d are returned unchanged.
    """
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model
