"""Graph walk of the on-chip training cost model (:mod:`xbarlab.analysis.cost`).

One forward pass of a dummy input through the network with forward (pre-)hooks on every module and a
:class:`~torch.overrides.TorchFunctionMode` recording the functional ops (``F.relu``, residual additions,
functional pooling) called outside accounted modules. The result is the list of executed leaf calls with
their input/output element counts and shapes; :func:`xbarlab.analysis.cost.training_cost` counts memory and
energy from it. No data are needed and the model's train/eval flags are restored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode

from xbarlab.hooks import forward_hooks

# ----------------------------------------------------------------------------------------------------
# Graph walk
# ----------------------------------------------------------------------------------------------------

_RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.Threshold)
_MAXPOOL = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)
_AVGPOOL = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
_RESHAPE = (
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
)
_ACT = (
    nn.Sigmoid,
    nn.Tanh,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.SELU,
    nn.Softplus,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softmax,
    nn.LogSoftmax,
)


def _is_analog(m: nn.Module) -> bool:
    return callable(getattr(m, "effective_weight", None)) and isinstance(getattr(m, "weight", None), torch.Tensor)


def _kind(m: nn.Module) -> str:
    w = getattr(m, "weight", None)
    if isinstance(m, nn.modules.conv._ConvNd) or (_is_analog(m) and isinstance(w, torch.Tensor) and w.dim() >= 3):
        return "conv"
    if isinstance(m, nn.Linear) or (_is_analog(m) and isinstance(w, torch.Tensor) and w.dim() == 2):
        return "linear"
    if isinstance(m, _BatchNorm):
        return "bn"
    if isinstance(m, _RELU_LIKE):
        return "relu"
    if isinstance(m, _MAXPOOL):
        return "maxpool"
    if isinstance(m, _AVGPOOL):
        return "avgpool"
    if isinstance(m, _RESHAPE):
        return "reshape"
    if isinstance(m, _ACT):
        return "act"
    return "other"


@dataclass
class _Call:
    name: str
    module: nn.Module | None  # None for a functional op (F.relu, residual add, ...)
    kind: str
    in_numel: int
    out_numel: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    window: int | None = None  # pooling window (elements) of a functional pool


def _targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules to account for: known kinds are not descended into; unknown containers are."""
    out: list[tuple[str, nn.Module]] = []
    skip_prefixes: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(p + ".") for p in skip_prefixes):
            continue
        kind = _kind(m)
        has_children = any(True for _ in m.children())
        if kind != "other":
            out.append((name or type(m).__name__, m))
            skip_prefixes.append(name)
        elif not has_children:
            out.append((name or type(m).__name__, m))
    return out


#: Functional ops (by ``__name__``) recorded when called outside an accounted module, e.g. ``F.relu`` in a
#: ResNet block's ``forward`` or the residual addition.
_FUNCTIONAL_KINDS = {
    "relu": "relu",
    "relu_": "relu",
    "relu6": "relu",
    "leaky_relu": "relu",
    "leaky_relu_": "relu",
    "hardtanh": "relu",
    "max_pool1d": "maxpool",
    "max_pool2d": "maxpool",
    "max_pool3d": "maxpool",
    "adaptive_max_pool1d": "maxpool",
    "adaptive_max_pool2d": "maxpool",
    "adaptive_max_pool3d": "maxpool",
    "avg_pool1d": "avgpool",
    "avg_pool2d": "avgpool",
    "avg_pool3d": "avgpool",
    "adaptive_avg_pool1d": "avgpool",
    "adaptive_avg_pool2d": "avgpool",
    "adaptive_avg_pool3d": "avgpool",
    "add": "add",
    "add_": "add",
    "__add__": "add",
    "__iadd__": "add",
    "__radd__": "add",
}


class _FunctionalRecorder(TorchFunctionMode):
    """Records the functional ops of :data:`_FUNCTIONAL_KINDS` called outside accounted modules."""

    def __init__(self, record: Any) -> None:
        super().__init__()
        self.depth = 0
        self.record = record

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        kind = _FUNCTIONAL_KINDS.get(getattr(func, "__name__", ""))
        if self.depth == 0 and kind is not None and isinstance(out, torch.Tensor):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            if kind == "add" and (len(tensors) < 2 or tensors[0].shape != tensors[1].shape):
                return out  # only tensor + tensor of one shape (residual additions)
            if tensors:
                window = None
                if kind == "maxpool" and "adaptive" not in func.__name__:
                    ks = kwargs.get("kernel_size", args[1] if len(args) > 1 else None)
                    if ks is not None:
                        spatial = tensors[0].dim() - 2
                        window = math.prod(ks) if isinstance(ks, (tuple, list)) else int(ks) ** spatial
                in_numel = sum(int(t.numel()) for t in tensors[:2]) if kind == "add" else int(tensors[0].numel())
                self.record(func.__name__, None, kind, in_numel, out, tuple(tensors[0].shape), window)
        return out


def _trace(model: nn.Module, input_shape: Sequence[int], batch_size: int) -> list[_Call]:
    calls: list[_Call] = []
    counts: dict[str, int] = {}
    stack: list[str] = []

    def record(
        name: str,
        mod: nn.Module | None,
        kind: str,
        in_numel: int,
        output: torch.Tensor,
        in_shape: tuple[int, ...],
        window: int | None = None,
    ) -> None:
        if mod is None:  # functional op: label it with the enclosing module
            name = f"{stack[-1] + ':' if stack and stack[-1] else ''}{name}"
        counts[name] = counts.get(name, 0) + 1
        label = name if counts[name] == 1 else f"{name}#{counts[name]}"
        calls.append(_Call(label, mod, kind, in_numel, int(output.numel()), in_shape, tuple(output.shape), window))

    recorder = _FunctionalRecorder(record)

    def make_pre_hook(name: str, target: bool) -> Any:
        def pre_hook(mod: nn.Module, inputs: tuple[Any, ...]) -> None:
            stack.append(name)
            if target:
                recorder.depth += 1

        return pre_hook

    def make_hook(name: str, target: bool) -> Any:
        def hook(mod: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            stack.pop()
            if not target:
                return
            recorder.depth -= 1
            x = inputs[0] if inputs else None
            if isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor):
                record(name, mod, _kind(mod), int(x.numel()), output, tuple(x.shape))

        return hook

    targets = {id(m): n for n, m in _targets(model)}
    pre_hooks, hooks = [], []
    for n, m in model.named_modules():
        is_target = id(m) in targets
        label = targets.get(id(m), n)
        pre_hooks.append((m, make_pre_hook(label, is_target)))
        hooks.append((m, make_hook(label, is_target)))
    training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        p = next(iter(model.parameters()), None)
        dev = p.device if p is not None else torch.device("cpu")
        dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
        with forward_hooks(hooks, pre_hooks), torch.no_grad(), recorder:
            model(torch.zeros((batch_size, *input_shape), device=dev, dtype=dtype))
    finally:
        for m, flag in training:
            m.training = flag
    return calls
