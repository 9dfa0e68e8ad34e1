"""LeNet-5 as used by CorrectNet: conv 6@5×5 → pool → conv 16@5×5 → pool → fc 120 → fc 84 → fc classes.

Differences from LeCun et al. (1998), as in most modern re-implementations: ReLU instead of scaled tanh,
2×2 max-pooling instead of trainable sub-sampling, full C3 connectivity, and a plain linear output layer
instead of RBF units. ``padding=2`` (default) on the first conv reproduces the classic 32×32 geometry for
28×28 inputs (the 5×5 feature maps of C3/S4 → 400 inputs to fc1); with 32×32 inputs use ``padding=0``.
Any other input size works: S4 is an adaptive max-pool to 5×5. ``batch_norm=True`` adds BatchNorm after
both convolutions and the two hidden linear layers (whose biases are then dropped).
61,706 parameters for 1 input channel and 10 classes (width 1, no BN).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from xbarlab.models.common import check_common, scaled

__all__ = ["LeNet5", "lenet5"]


class LeNet5(nn.Module):
    """LeNet-5 (see the module docstring); the classifier is ``fc3``."""

    def __init__(self, *, num_classes: int, in_channels: int, width: float, batch_norm: bool, padding: int) -> None:
        super().__init__()
        c1, c2, f1, f2 = (scaled(c, width) for c in (6, 16, 120, 84))
        bias = not batch_norm
        self.conv1 = nn.Conv2d(in_channels, c1, 5, padding=padding, bias=bias)
        self.bn1: nn.Module = nn.BatchNorm2d(c1) if batch_norm else nn.Identity()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(c1, c2, 5, bias=bias)
        self.bn2: nn.Module = nn.BatchNorm2d(c2) if batch_norm else nn.Identity()
        self.pool2 = nn.AdaptiveMaxPool2d(5)
        self.fc1 = nn.Linear(c2 * 25, f1, bias=bias)
        self.bn3: nn.Module = nn.BatchNorm1d(f1) if batch_norm else nn.Identity()
        self.fc2 = nn.Linear(f1, f2, bias=bias)
        self.bn4: nn.Module = nn.BatchNorm1d(f2) if batch_norm else nn.Identity()
        self.fc3 = nn.Linear(f2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        pad = int(self.conv1.padding[0])  # type: ignore[index]
        if min(x.shape[-2:]) + 2 * pad < 14:
            raise ValueError(
                f"LeNet-5 with padding={pad} needs inputs of at least {14 - 2 * pad}×{14 - 2 * pad} pixels, "
                f"got {tuple(x.shape[-2:])} (use a larger padding, up to 4, for smaller images)"
            )
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))
        x = self.pool2(F.relu(self.bn2(self.conv2(x))))
        x = F.relu(self.bn3(self.fc1(x.flatten(1))))
        x = F.relu(self.bn4(self.fc2(x)))
        return self.fc3(x)


def lenet5(
    num_classes: int = 10,
    in_channels: int = 1,
    width: float = 1.0,
    batch_norm: bool = False,
    padding: int = 2,
) -> LeNet5:
    """LeNet-5 (CorrectNet variant: ReLU, max-pooling); 61,706 parameters for MNIST-like inputs."""
    check_common(num_classes, in_channels, width)
    if not isinstance(padding, int) or not 0 <= padding <= 4:
        raise ValueError(f"padding must be an int in [0, 4], got {padding!r}")
    return LeNet5(num_classes=num_classes, in_channels=in_channels, width=width, batch_norm=batch_norm, padding=padding)
