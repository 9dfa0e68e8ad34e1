"""VGG-style networks with batch normalisation: VGG16-BN (CIFAR-style) and the small VGG for Fashion-MNIST.

Each 3×3 convolution (``bias=False``) is followed by BatchNorm and ReLU; ``"M"`` is a 2×2 max-pool with
``ceil_mode=True`` so that 28×28 inputs survive all five pools of VGG16 (28→14→7→4→2→1; 32×32 inputs give
the usual 32→16→8→4→2→1). A global average pool and a single linear classifier follow (the CIFAR-style
VGG16 head: 14,728,266 parameters for 3 input channels and 10 classes).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from xbarlab.models.common import check_common, init_weights, scaled

__all__ = ["VGG", "VGG16_CFG", "VGG_SMALL_CFG", "vgg16_bn", "vgg_small"]

VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
# Six conv layers in three blocks: the classic small VGG-style Fashion-MNIST network.
VGG_SMALL_CFG: tuple[int | str, ...] = (32, 32, "M", 64, 64, "M", 128, 128, "M")


class VGG(nn.Module):
    """``features`` (conv-BN-ReLU stacks and max-pools) → global average pool → ``classifier``."""

    def __init__(self, cfg: Sequence[int | str], *, num_classes: int, in_channels: int, width: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        current = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
            else:
                out = scaled(int(item), width)
                layers += [nn.Conv2d(current, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
                current = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(current, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def vgg16_bn(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> VGG:
    """CIFAR-style VGG16 with BN (13 conv layers, one linear classifier); 14.7 M parameters at width 1."""
    check_common(num_classes, in_channels, width)
    return VGG(VGG16_CFG, num_classes=num_classes, in_channels=in_channels, width=width)


def vgg_small(num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> VGG:
    """Small VGG-style net with BN: 32-32-M-64-64-M-128-128-M, GAP, linear; 0.29 M parameters at width 1."""
    check_common(num_classes, in_channels, width)
    return VGG(VGG_SMALL_CFG, num_classes=num_classes, in_channels=in_channels, width=width)
