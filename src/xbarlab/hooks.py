"""Forward hooks that are always removed: :func:`forward_hooks` registers them for one ``with`` block.

Several parts of xbarlab run a model once with hooks on selected modules (execution order in
:mod:`xbarlab.conversion`, ADC positions in :mod:`xbarlab.adc_power`, MACs in
:mod:`xbarlab.mitigation.compensation`, the cost model's graph walk in :mod:`xbarlab.analysis.cost_trace`).
They all register through this helper, so that no hook survives an exception in the forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["ForwardHook", "ForwardPreHook", "forward_hooks"]

ForwardHook = Callable[[nn.Module, tuple[Any, ...], Any], Any]
"""``hook(module, inputs, output)``, as :meth:`torch.nn.Module.register_forward_hook` takes it."""

ForwardPreHook = Callable[[nn.Module, tuple[Any, ...]], Any]
"""``hook(module, inputs)``, as :meth:`torch.nn.Module.register_forward_pre_hook` takes it."""


@contextmanager
def forward_hooks(
    hooks: Iterable[tuple[nn.Module, ForwardHook]] = (),
    pre_hooks: Iterable[tuple[nn.Module, ForwardPreHook]] = (),
) -> Iterator[list[RemovableHandle]]:
    """Register ``(module, hook)`` forward hooks and forward pre-hooks; remove every one on leaving the block.

    Pairs are registered in the order given (pre-hooks first); a module may appear several times. The hooks are
    removed also when registration or the block raises. Yields the handles.
    """
    handles: list[RemovableHandle] = []
    try:
        for module, pre in pre_hooks:
            handles.append(module.register_forward_pre_hook(pre))
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook))
        yield handles
    finally:
        for handle in handles:
            handle.remove()
