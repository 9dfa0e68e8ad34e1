"""vit-tiny in the zoo and the AdamW option of the trainer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xbarlab.mitigation.noise_injection import NoiseInjection
from xbarlab.models import build_model, model_spec
from xbarlab.training import TrainConfig, _make_optimizer


def test_vit_tiny_shapes_and_layers() -> None:
    torch.manual_seed(0)
    model = build_model("vit-tiny")
    assert model_spec("vit").name == "vit-tiny"
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert isinstance(model.patch_embed, nn.Conv2d) and model.patch_embed.stride == (7, 7)
    assert model.pos_embed.shape == (1, 16, 128)
    lns = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(lns) == 2 * 4 + 1
    assert sum(p.numel() for p in model.parameters()) == 539914


def test_vit_width_multiplier() -> None:
    model = build_model("vit-tiny", width=0.75)
    assert model.fc.in_features == 96
    assert sum(p.numel() for p in model.parameters()) == 306634


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"patch_size": 5}, "patch_size"), ({"depth": 7}, "depth"), ({"width": 1.5}, "width"), ({"heads": 5}, "heads")],
)
def test_vit_refuses_out_of_range(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=rf"vit_tiny\.{field}"):
        build_model("vit-tiny", **kwargs)


def test_optimizer_field() -> None:
    assert TrainConfig(epochs=1).optimizer == "sgd"
    with pytest.raises(ValueError, match=r"TrainConfig\.optimizer"):
        TrainConfig(epochs=1, optimizer="adam")
    model = build_model("vit-tiny", width=0.25, depth=1)
    opt = _make_optimizer(model, TrainConfig(epochs=1, optimizer="adamw", weight_decay=0.05, lr=1e-3))
    assert isinstance(opt, torch.optim.AdamW)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim < 2 for p in plain["params"])
    assert isinstance(_make_optimizer(model, TrainConfig(epochs=1)), torch.optim.SGD)


def test_shipped_vit_tiny_fmnist_matches_its_record() -> None:
    """The shipped vit-tiny-fmnist: both training runs recorded, and its accuracy on a test-set slice."""
    from xbarlab.checkpoint import list_pretrained, load_pretrained
    from xbarlab.data import get_dataset
    from xbarlab.training import evaluate

    assert "vit-tiny-fmnist" in list_pretrained()
    model, meta = load_pretrained("vit-tiny-fmnist")
    assert meta["model"] == "vit-tiny" and meta["model_kwargs"]["width"] == 1.0
    # 30 epochs from scratch (89.85 %), then 8 epochs fine-tuned from those weights (90.55 %)
    base = meta["init_from_record"]
    assert base["command"].startswith("xbarlab train --model vit-tiny --dataset fashion-mnist --width 1.0")
    assert [h["epoch"] for h in base["history"]] == list(range(1, 31)) and base["test_accuracy"] == 0.8985
    assert "--init-from vit-tiny-fmnist" in meta["command"] and meta["total_epochs"] == 38
    assert meta["hyperparameters"]["optimizer"] == "adamw" and meta["epochs"] == 8
    assert [h["epoch"] for h in meta["history"]] == list(range(1, 9))
    assert meta["history"][-1]["test_acc"] == meta["test_accuracy"] == 0.9055
    n = 1000
    test = get_dataset("fashion-mnist", "test")
    _, acc = evaluate(model, test.subset(range(n)))
    # the first 1,000 test images vs the full-test-set record: within 3 binomial standard errors (±2.8 points)
    assert abs(acc - 0.9055) < 3 * (0.9055 * 0.0945 / n) ** 0.5, acc


def test_noise_injection_covers_every_analog_projection_of_vit_tiny() -> None:
    """Every weight the chip makes analog gets training noise, the attention in-projections included."""
    torch.manual_seed(0)
    model = build_model("vit-tiny").train()
    ni = NoiseInjection(model, eta=0.038, alpha=None)
    per_layer = ["self_attn.in_proj", "self_attn.out_proj", "linear1", "linear2"]
    assert list(ni.layers) == [
        "patch_embed",
        *(f"encoder.layers.{i}.{p}" for i in range(4) for p in per_layer),
        "fc",
    ]
    with ni:
        model(torch.randn(2, 1, 28, 28))
        assert ni.forward_count == 18  # 18 weights perturbed in one training forward
