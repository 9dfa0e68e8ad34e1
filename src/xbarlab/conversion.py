"""Convert a PyTorch model to an analog model: Conv1d/Conv2d/Linear become analog layers.

BN, pooling, activations and every other module stay digital. The conversion report lists every layer that was
converted and every weight-bearing layer that stayed digital, with the reason; nothing is skipped silently.
Conversion works on a deep copy: the input model is never modified and nothing is half-converted.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field

import torch
from torch import nn

from xbarlab.hardware import CLASSIFIER_TOKEN, HardwareConfig
from xbarlab.layers import AnalogConv, AnalogLayer, AnalogLinear

CONVERTIBLE = (nn.Conv1d, nn.Conv2d, nn.Linear)
WEIGHTED_UNSUPPORTED = (nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Bilinear)


class ConversionError(ValueError):
    """The model cannot be converted; the message names the layer."""


@dataclass(frozen=True)
class LayerRecord:
    """One weight-bearing layer: converted to analog or kept digital, and why."""

    name: str
    kind: str
    analog: bool
    reason: str
    weight_shape: tuple[int, ...]
    arrays: int = 0


@dataclass(frozen=True)
class ConversionReport:
    """What :func:`convert` did to each weight-bearing layer."""

    hardware: str
    layers: tuple[LayerRecord, ...] = field(default_factory=tuple)

    @property
    def analog(self) -> list[LayerRecord]:
        return [r for r in self.layers if r.analog]

    @property
    def digital(self) -> list[LayerRecord]:
        return [r for r in self.layers if not r.analog]

    def table(self) -> str:
        """A plain-text table of the report."""
        lines = [f"{'layer':<32} {'type':<10} {'where':<8} {'arrays':>6}  reason"]
        for r in self.layers:
            where = "analog" if r.analog else "digital"
            lines.append(f"{r.name:<32} {r.kind:<10} {where:<8} {r.arrays:>6}  {r.reason}")
        return "\n".join(lines)


def _classifier_name(model: nn.Module) -> str | None:
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return last


def _keep_digital_reason(name: str, hw: HardwareConfig, classifier: str | None) -> str | None:
    for pattern in hw.keep_digital:
        if pattern == CLASSIFIER_TOKEN:
            if name == classifier:
                return "classifier kept digital (keep_digital: @classifier)"
        elif fnmatch.fnmatchcase(name, pattern):
            return f"kept digital (keep_digital: {pattern})"
    return None


def convert(model: nn.Module, hw: HardwareConfig) -> nn.Module:
    """Return an analog copy of ``model`` for hardware ``hw``.

    The copy carries ``xbarlab_hw`` (the config) and ``xbarlab_report`` (a :class:`ConversionReport`).
    Raises :class:`ConversionError` when no layer can be converted or a weight is NaN/Inf.
    """
    if not isinstance(hw, HardwareConfig):
        raise TypeError(f"hw: expected a HardwareConfig, got {type(hw).__name__}")
    if any(isinstance(m, AnalogLayer) for m in model.modules()):
        raise ConversionError("model: already contains analog layers; convert the digital model")
    result = copy.deepcopy(model)
    classifier = _classifier_name(result)
    records: list[LayerRecord] = []
    replacements: list[tuple[str, AnalogLayer]] = []
    for name, module in result.named_modules():
        if isinstance(module, CONVERTIBLE):
            kind = type(module).__name__
            shape = tuple(module.weight.shape)
            if not torch.isfinite(module.weight).all() or (
                module.bias is not None and not torch.isfinite(module.bias).all()
            ):
                raise ConversionError(f"layer '{name}' ({kind}): weights contain NaN or Inf; allowed: finite values")
            reason = _keep_digital_reason(name, hw, classifier)
            if reason is not None:
                records.append(LayerRecord(name, kind, False, reason, shape))
                continue
            layer_hw = hw.for_layer(name)
            analog: AnalogLayer
            if isinstance(module, nn.Linear):
                analog = AnalogLinear(module, name, layer_hw)
            else:
                analog = AnalogConv(module, name, layer_hw)
            replacements.append((name, analog))
            records.append(
                LayerRecord(name, kind, True, f"on crossbars ({layer_hw.name})", shape, analog.layout.num_arrays)
            )
        elif isinstance(module, WEIGHTED_UNSUPPORTED):
            shape = tuple(module.weight.shape)
            records.append(
                LayerRecord(
                    name,
                    type(module).__name__,
                    False,
                    "layer type not supported on crossbars: digital",
                    shape,
                )
            )
    if not replacements:
        raise ConversionError(
            "model: no convertible layer (Conv1d, Conv2d, Linear) outside keep_digital; nothing would run on crossbars"
        )
    for name, replacement in replacements:
        parent_name, _, child = name.rpartition(".")
        parent = result.get_submodule(parent_name) if parent_name else result
        setattr(parent, child, replacement)
    result.xbarlab_hw = hw  # type: ignore[assignment]
    result.xbarlab_report = ConversionReport(hardware=hw.name, layers=tuple(records))  # type: ignore[assignment]
    return result
