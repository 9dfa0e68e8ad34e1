"""Model registry: :func:`build_model`, :func:`list_models`, :func:`model_spec`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from xbarlab.models.lenet import lenet5
from xbarlab.models.resnet import resnet18, resnet20
from xbarlab.models.vgg import vgg16_bn, vgg_small
from xbarlab.models.vit import vit_tiny

__all__ = ["ModelSpec", "build_model", "list_models", "model_spec"]

# Attributes set on every model built through the registry (used by the checkpoints).
NAME_ATTR = "xbarlab_model_name"
KWARGS_ATTR = "xbarlab_model_kwargs"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: name, one-line description, builder and its default keyword arguments."""

    name: str
    description: str
    builder: Callable[..., nn.Module]
    aliases: tuple[str, ...] = ()

    @property
    def default_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the builder with their defaults."""
        sig = inspect.signature(self.builder)
        return {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {"name": self.name, "description": self.description, "default_kwargs": self.default_kwargs}


_SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            "resnet20",
            "ResNet-20 (He et al. 2016, CIFAR-style, 16/32/64 channels, option-A shortcuts), 0.27 M params",
            resnet20,
            ("resnet-20",),
        ),
        ModelSpec(
            "resnet18",
            "ResNet-18 (TinyImageNet-style 3×3 stem, no max-pool, 1×1-conv shortcuts), 11.3 M params",
            resnet18,
            ("resnet-18",),
        ),
        ModelSpec(
            "vgg16-bn",
            "VGG16 with BN, CIFAR-style head (GAP + one linear layer), 14.7 M params",
            vgg16_bn,
            ("vgg16", "vgg16bn", "vgg-16-bn"),
        ),
        ModelSpec(
            "vgg-small",
            "Small VGG-style net with BN (32-32-M-64-64-M-128-128-M, GAP, linear), 0.29 M params",
            vgg_small,
            ("vggsmall",),
        ),
        ModelSpec(
            "lenet5",
            "LeNet-5 as in CorrectNet (6@5×5, pool, 16@5×5, pool, fc 120-84-classes, ReLU), 61.7 k params",
            lenet5,
            ("lenet-5", "lenet"),
        ),
        ModelSpec(
            "vit-tiny",
            "ViT-tiny (7×7 patches via Conv2d, width 128, 4 pre-norm blocks, 4 heads, MLP 256, mean pool)",
            vit_tiny,
            ("vittiny", "vit"),
        ),
    )
}
_ALIASES = {a: s.name for s in _SPECS.values() for a in (s.name, *s.aliases)}


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name`` (case-insensitive; ``_`` and ``-`` are interchangeable)."""
    key = name.strip().lower().replace("_", "-")
    if key not in _ALIASES:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(sorted(_SPECS))}")
    return _SPECS[_ALIASES[key]]


def list_models() -> list[ModelSpec]:
    """All registered models, sorted by name."""
    return [_SPECS[n] for n in sorted(_SPECS)]


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Common keyword arguments: ``num_classes``, ``in_channels``, ``width`` (channel multiplier); see
    :func:`list_models` for each model's own options and defaults. The returned module remembers its
    registry name and the full keyword arguments (``xbarlab_model_name``/``xbarlab_model_kwargs``), which
    :func:`xbarlab.checkpoint.save_checkpoint` records to rebuild it later.

    Raises:
        KeyError: unknown model name.
        TypeError: unknown keyword argument (the message lists the allowed ones).
    """
    spec = model_spec(name)
    defaults = spec.default_kwargs
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise TypeError(
            f"{spec.name}: unknown argument(s) {', '.join(unknown)}; allowed: {', '.join(sorted(defaults))}"
        )
    full = {**defaults, **kwargs}
    model = spec.builder(**full)
    setattr(model, NAME_ATTR, spec.name)
    setattr(model, KWARGS_ATTR, dict(full))
    return model
