"""A small model trained in seconds, for tests, benchmarks and the demo's fallback.

:func:`train_small_model` trains a registry model (by default a narrow ``vgg-small``, which has BatchNorm so
every BN mitigation applies) with Adam on a built-in data set; :func:`save_small_checkpoint` stores it with
:func:`xbarlab.checkpoint.save_checkpoint` (safetensors + JSON) so a sweep file can point at it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from xbarlab.checkpoint import save_checkpoint
from xbarlab.data import get_dataset, make_loader
from xbarlab.evaluation import accuracy
from xbarlab.models import build_model

__all__ = ["save_small_checkpoint", "train_small_model"]


def train_small_model(
    dataset: str = "digits",
    *,
    model: str = "vgg-small",
    width: float = 0.25,
    epochs: int = 4,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    max_train: int | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a small model; returns ``(model in eval mode, metadata: clean test accuracy, settings)``."""
    torch.manual_seed(seed)
    train = get_dataset(dataset, "train")
    test = get_dataset(dataset, "test")
    if max_train is not None and max_train < len(train):
        train = train.subset(list(range(max_train)))
    net = build_model(model, in_channels=train.input_shape[0], num_classes=train.num_classes, width=width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        for x, y in make_loader(train, batch_size, shuffle=True, seed=seed + epoch):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
    net.eval()
    clean = accuracy(net, make_loader(test, 256))
    meta = {
        "dataset": dataset,
        "epochs": epochs,
        "seed": seed,
        "test_accuracy": clean,
        "train_samples": len(train),
        "training": {"optimizer": "adam", "lr": lr, "batch_size": batch_size, "width": width},
        "wall_time_s": time.perf_counter() - t0,
    }
    return net, meta


def save_small_checkpoint(
    path: str | Path, dataset: str = "digits", *, extra: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[Path, dict[str, Any]]:
    """Train with :func:`train_small_model` and save a checkpoint at ``path``; returns (path, metadata).

    ``extra``: more metadata stored in the checkpoint's JSON.
    """
    net, meta = train_small_model(dataset, **kwargs)
    meta.update(extra or {})
    save_checkpoint(net, path, meta)
    return Path(path), meta
