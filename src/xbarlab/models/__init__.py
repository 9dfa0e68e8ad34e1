"""Model zoo: ResNet-20, ResNet-18, VGG16-BN, a small VGG, LeNet-5 (all built from ordinary torch layers).

>>> from xbarlab.models import build_model
>>> model = build_model("resnet20", in_channels=1, num_classes=10)

Every model takes ``num_classes``, ``in_channels`` and ``width`` and ends in an ``nn.Linear`` classifier
(the last ``nn.Linear`` of the module, see :func:`get_classifier`).
"""

from __future__ import annotations

from xbarlab.models.common import channels_last, get_classifier
from xbarlab.models.lenet import LeNet5, lenet5
from xbarlab.models.registry import ModelSpec, build_model, list_models, model_spec
from xbarlab.models.resnet import ResNet, resnet18, resnet20
from xbarlab.models.vgg import VGG, vgg16_bn, vgg_small
from xbarlab.models.vit import ViT, vit_tiny

__all__ = [
    "VGG",
    "LeNet5",
    "ModelSpec",
    "ResNet",
    "ViT",
    "build_model",
    "channels_last",
    "get_classifier",
    "lenet5",
    "list_models",
    "model_spec",
    "resnet18",
    "resnet20",
    "vgg16_bn",
    "vgg_small",
    "vit_tiny",
]
