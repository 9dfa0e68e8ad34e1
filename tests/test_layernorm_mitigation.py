"""LayerNorm γ/β fine-tuning: only γ/β move, loss decreases, seeded determinism, refusal without LayerNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xbarlab.mitigation.layernorm import finetune_ln
from xbarlab.models import build_model


def _task() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = build_model("vit-tiny", width=0.125, depth=1, heads=2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    return model, [(x[:32], y[:32]), (x[32:], y[32:])]


def test_only_layernorm_affine_changes_and_loss_decreases() -> None:
    model, data = _task()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = finetune_ln(model, data, epochs=5, lr=0.05)
    assert res.samples_used == 64 and res.steps == 10
    assert res.epoch_loss[-1] < res.epoch_loss[0]
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    ln_keys = {k for k in before if ("norm" in k) and (k.endswith(".weight") or k.endswith(".bias"))}
    assert changed and changed <= ln_keys


def test_same_seed_bit_identical() -> None:
    a, data = _task()
    b, _ = _task()
    finetune_ln(a, data, epochs=2)
    finetune_ln(b, data, epochs=2)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_refuses_model_without_layernorm() -> None:
    with pytest.raises(ValueError, match=r"no nn\.LayerNorm"):
        finetune_ln(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), [(torch.zeros(1, 4), torch.zeros(1).long())])
