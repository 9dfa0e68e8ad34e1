"""ResNet-20 (CIFAR-style, He et al. 2016) and ResNet-18 (TinyImageNet-style, 64×64 input).

ResNet-20: a 3×3 stem conv with 16 channels, three stages of three basic blocks (16, 32, 64 channels,
strides 1, 2, 2), global average pooling and one linear classifier. The shortcuts where the shape changes
use **option A** by default (as in the paper's CIFAR experiments): identity with stride-2 subsampling and
zero-padded extra channels. Option A has no weights, so every weight layer of the network is an ordinary
``nn.Conv2d``/``nn.Linear`` that the converter maps to crossbars, and the parameter count is the paper's
0.27 M (269,722 for 3 input channels and 10 classes). ``shortcut="B"`` uses 1×1 convolution + BN shortcuts.

ResNet-18: the standard four stages of two basic blocks (64, 128, 256, 512 channels) with 1×1 conv + BN
projection shortcuts. ``stem="cifar"`` (default) is a 3×3 stride-1 conv without max-pooling, the usual
adaptation for 64×64 TinyImageNet (and 32×32 CIFAR) inputs; ``stem="imagenet"`` is the original 7×7
stride-2 conv + 3×3 max-pool. 11.27 M parameters for 200 classes (11,173,962 for 10 classes).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from xbarlab.models.common import check_common, init_weights, scaled

__all__ = ["BasicBlock", "ResNet", "ZeroPadShortcut", "resnet18", "resnet20"]


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially by ``stride`` and zero-pad the channels to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"option-A shortcut needs out_channels >= in_channels, got {out_channels}")
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_before = extra // 2
        self.pad_after = extra - extra // 2

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN layers with a residual connection (ReLU after the addition)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem → stages of :class:`BasicBlock` → global average pooling → ``fc`` (the classifier)."""

    def __init__(
        self,
        stage_channels: list[int],
        blocks_per_stage: list[int],
        *,
        num_classes: int,
        in_channels: int,
        shortcut: str,
        stem: str,
    ) -> None:
        super().__init__()
        stem_channels = stage_channels[0]
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        self.bn1 = nn.BatchNorm2d(stem_channels)
        stages = []
        current = stem_channels
        for i, (channels, blocks) in enumerate(zip(stage_channels, blocks_per_stage, strict=True)):
            layers = []
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(BasicBlock(current, channels, stride, shortcut))
                current = channels
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(current, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        return self.fc(self.avgpool(x).flatten(1))


def resnet20(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, shortcut: str = "A") -> ResNet:
    """ResNet-20 for 32×32 (CIFAR) or 28×28 (MNIST-like) inputs; 0.27 M parameters at width 1."""
    check_common(num_classes, in_channels, width)
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' (zero-padding identity) or 'B' (1×1 conv), got {shortcut!r}")
    channels = [scaled(c, width) for c in (16, 32, 64)]
    return ResNet(
        channels, [3, 3, 3], num_classes=num_classes, in_channels=in_channels, shortcut=shortcut, stem="cifar"
    )


def resnet18(num_classes: int = 200, in_channels: int = 3, width: float = 1.0, stem: str = "cifar") -> ResNet:
    """ResNet-18 with projection (1×1 conv) shortcuts; default stem suits 64×64 TinyImageNet inputs."""
    check_common(num_classes, in_channels, width)
    channels = [scaled(c, width) for c in (64, 128, 256, 512)]
    return ResNet(channels, [2, 2, 2, 2], num_classes=num_classes, in_channels=in_channels, shortcut="B", stem=stem)
