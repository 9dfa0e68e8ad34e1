"""Coverage: proof that every layer called analog runs on the chip.

A converted model can bypass an analog layer without any error: a fused fast path (PyTorch's transformer
encoder), a module that is never called, a forward that uses a converted layer's ideal ``weight`` functionally.
Each would report digital numbers as the chip's. :func:`verify_coverage` (and :func:`xbarlab.chip.calibrate`,
which every evaluation path runs) counts the analog layers' forward calls and runs one forward under
:class:`IdealWeightGuard`; a layer that did not run raises :class:`CoverageError` naming it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from xbarlab.layers import AnalogLayer, require_analog_layers

__all__ = [
    "MVM_OPS",
    "VERIFIED_ATTR",
    "CoverageError",
    "IdealWeightGuard",
    "finish_verification",
    "forward_counts",
    "is_verified",
    "verify_coverage",
]

VERIFIED_ATTR = "xbarlab_coverage_verified"
"""Set (True) on a model by :func:`calibrate` / :func:`verify_coverage` once every analog layer was seen running."""

MVM_OPS = frozenset(
    {
        "linear", "bilinear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
        "conv_transpose3d", "convolution", "_convolution", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm",
        "addmm", "addmv", "mv", "baddbmm", "addbmm", "addr", "einsum", "tensordot", "inner", "outer", "dot",
        "vdot", "chain_matmul", "multi_dot", "_addmm_activation", "_transformer_encoder_layer_fwd",
        "_native_multi_head_attention", "multi_head_attention_forward", "_transformer_decoder_only_layer_fwd",
        "scaled_dot_product_attention",
    }
)  # fmt: skip
"""Names of the torch functions that compute a matrix-vector product with a weight (checked by the guard)."""


class CoverageError(RuntimeError):
    """A layer the conversion report calls analog does not run on the chip; the message names the layer."""


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _inside_ideal_forward(layer: AnalogLayer) -> bool:
    """True when ``layer.ideal_forward`` (its digital reference, which may use the ideal weights) is running."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "ideal_forward" and frame.f_locals.get("self") is layer:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class IdealWeightGuard(TorchFunctionMode):
    """Raise :class:`CoverageError` when an MVM-like op (:data:`MVM_OPS`) receives an analog layer's ideal
    ``weight`` (or a view of it) outside that layer's own ``ideal_forward``: a forward calling
    ``F.linear(x, self.fc.weight)`` would compute that layer digitally while the report says analog.

    Note: an active mode makes ``has_torch_function`` true, which disables PyTorch's fused fast paths; fused paths
    are therefore caught by the forward-call count (:func:`_check_counts`) of a pass without this mode."""

    def __init__(self, layers: list[AnalogLayer]) -> None:
        super().__init__()
        self._owners = {id(la.weight): la for la in layers}
        self._weights = [la.weight for la in layers]  # keep the objects alive: ids stay unique

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        op = getattr(func, "__name__", "")
        if op in MVM_OPS:
            for t in _tensors((args, kwargs)):
                layer = self._owners.get(id(t))
                if layer is None and t._base is not None:
                    layer = self._owners.get(id(t._base))
                if layer is not None and not _inside_ideal_forward(layer):
                    raise CoverageError(
                        f"layer '{layer.layer_name}': its ideal weight is used by {op}() outside the analog layer "
                        "(the model reads .weight directly), so it would be computed digitally; allowed: the "
                        "layer called as a module"
                    )
        return func(*args, **kwargs)


def _parent_types(model: nn.Module) -> dict[int, str]:
    """Type name of the (first) parent module of every analog layer, by the layer's id."""
    parents: dict[int, str] = {}
    for module in model.modules():
        for child in module.children():
            if isinstance(child, AnalogLayer):
                parents.setdefault(id(child), type(module).__name__)
    return parents


def _check_counts(model: nn.Module, layers: list[AnalogLayer], counts: dict[int, int], batches: int) -> None:
    """Every analog layer must have run (forward called) in at least one of ``batches`` batches."""
    missing = [la for la in layers if counts.get(id(la), 0) == 0]
    if not missing:
        return
    parents = _parent_types(model)
    layer = missing[0]
    parent = parents.get(id(layer))
    where = f"its parent {parent} reads the weight directly (a fused fast path or functional call) or never calls it"
    others = f"; also not run: {', '.join(repr(la.layer_name) for la in missing[1:])}" if missing[1:] else ""
    raise CoverageError(
        f"layer '{layer.layer_name}': converted to analog but did not run in any of {batches} calibration "
        f"batch(es) ({where if parent else 'the model never calls it'}){others}; allowed: every analog layer runs "
        "on the chip (keep it digital with keep_digital, or fix the model's forward)"
    )


def _reset_counts(layers: list[AnalogLayer]) -> dict[int, int]:
    """The analog forward-call counters now (they are never reset: a difference counts one pass)."""
    return {id(la): la.forward_calls for la in layers}


def _counts_since(layers: list[AnalogLayer], before: dict[int, int]) -> dict[int, int]:
    return {id(la): la.forward_calls - before[id(la)] for la in layers}


def _guarded_forward(model: nn.Module, layers: list[AnalogLayer], x: torch.Tensor) -> None:
    """One forward of ``x`` under :class:`IdealWeightGuard` that leaves the per-MVM noise streams untouched: the
    generators are restored afterwards, so checking coverage never shifts the noise of later forwards (a chip's
    per-MVM draws are the same as if the check had not run)."""
    states = [layer.mvm_rng_state() for layer in layers]
    try:
        with IdealWeightGuard(layers):
            model(x)
    finally:
        for layer, state in zip(layers, states, strict=True):
            layer.set_mvm_rng_state(state)


@torch.no_grad()
def verify_coverage(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Check on one input batch ``x`` that every analog layer of the (programmed, calibrated) ``model`` runs on the
    chip: one plain forward (fast paths as in use) counting analog forward calls, then one forward under
    :class:`IdealWeightGuard`. Raises :class:`CoverageError` naming the layer; marks the model verified and
    returns the plain forward's output. The model's mode (train/eval) is the caller's."""
    layers = require_analog_layers(model)
    before = _reset_counts(layers)
    out = model(x)
    counts = _counts_since(layers, before)
    _guarded_forward(model, layers, x)
    _check_counts(model, layers, counts, 1)
    setattr(model, VERIFIED_ATTR, True)
    return out


@torch.no_grad()
def forward_counts(layers: list[AnalogLayer]) -> dict[int, int]:
    """The analog forward-call counters now; pass them to :func:`finish_verification` after the passes."""
    return _reset_counts(layers)


def finish_verification(
    model: nn.Module, layers: list[AnalogLayer], before: dict[int, int], first: torch.Tensor, batches: int
) -> None:
    """After ``batches`` passes since ``before`` (:func:`forward_counts`): one guarded forward of ``first``, the
    per-layer call counts checked (:class:`CoverageError` naming a layer that never ran), the model marked
    verified."""
    counts = _counts_since(layers, before)
    _guarded_forward(model, layers, first)
    _check_counts(model, layers, counts, batches)
    setattr(model, VERIFIED_ATTR, True)


def is_verified(model: nn.Module) -> bool:
    """True when :func:`xbarlab.chip.calibrate` or :func:`verify_coverage` saw every analog layer of ``model`` run
    on the chip."""
    return bool(getattr(model, VERIFIED_ATTR, False))
