"""xbarlab.hooks.forward_hooks: hooks run inside the block and are removed afterwards, also after an error."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from xbarlab.analysis.cost_trace import _trace
from xbarlab.hooks import forward_hooks
from xbarlab.mitigation.compensation import count_macs


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _n_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_hooks_run_in_order_and_are_removed() -> None:
    net = _net()
    seen: list[str] = []
    hooks: list[tuple[nn.Module, Any]] = [(net[0], lambda m, i, o: seen.append(f"post0:{tuple(o.shape)}"))]
    hooks.append((net[2], lambda m, i, o: seen.append(f"post2:{tuple(o.shape)}")))
    pre = [(net[0], lambda m, i: seen.append(f"pre0:{tuple(i[0].shape)}"))]
    with forward_hooks(hooks, pre) as handles:
        assert len(handles) == 3
        net(torch.zeros(5, 4))
    assert seen == ["pre0:(5, 4)", "post0:(5, 3)", "post2:(5, 2)"]
    assert _n_hooks(net) == 0
    net(torch.zeros(1, 4))
    assert len(seen) == 3


def test_hooks_removed_when_forward_raises() -> None:
    net = _net()

    def boom(m: nn.Module, i: Any, o: Any) -> None:
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError, match="hook failed"), forward_hooks([(net[0], boom)]):
        net(torch.zeros(1, 4))
    assert _n_hooks(net) == 0


def test_walkers_leave_no_hook_even_on_error() -> None:
    net = _net()
    assert count_macs(net, torch.zeros(2, 4)) == {"0": 4 * 3, "2": 3 * 2}  # per sample
    calls = _trace(net, (4,), 1)
    assert [(c.name, c.kind, c.in_numel, c.out_numel) for c in calls] == [
        ("0", "linear", 4, 3),
        ("1", "relu", 3, 3),
        ("2", "linear", 3, 2),
    ]
    with pytest.raises(RuntimeError):
        count_macs(net, torch.zeros(2, 5))  # wrong input width: the forward pass fails
    assert _n_hooks(net) == 0
    assert net.training
