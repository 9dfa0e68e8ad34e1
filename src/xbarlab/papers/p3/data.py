"""What the P3 stages read and measure with: the model loader, the data loaders of a run and Monte-Carlo accuracy
over chips."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from xbarlab.papers.p3.config import P3Config, _device

__all__ = ["load_model"]


def load_model(spec: str) -> tuple[nn.Module, dict[str, Any]]:
    """A shipped pretrained name (``lenet5-fmnist``) or a checkpoint path (without suffix)."""
    from xbarlab.checkpoint import checkpoint_paths, list_pretrained, load_checkpoint, load_pretrained

    if spec in list_pretrained():
        return load_pretrained(spec)
    if checkpoint_paths(spec)[1].is_file():
        try:
            return load_checkpoint(spec)
        except Exception as exc:  # a damaged or foreign file: one line naming it, not a traceback
            raise ValueError(f"model: cannot read checkpoint {spec!r}: {' '.join(str(exc).split())}") from exc
    raise FileNotFoundError(
        f"model: invalid value {spec!r}; allowed: a shipped pretrained model "
        f"({', '.join(list_pretrained()) or 'none shipped yet'}) or a checkpoint path written by `xbarlab train`"
    )


class _Data:
    """Loaders of the pipeline: training (augmented, minus the held-out tail), validation, calibration, test."""

    def __init__(self, cfg: P3Config) -> None:
        from functools import partial

        from xbarlab.data import get_dataset
        from xbarlab.data import make_loader as _make_loader

        make_loader = partial(_make_loader, device=_device(cfg))  # pinned host memory when the device is CUDA
        train_aug = get_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, augment=True)
        train_plain = get_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, augment=False)
        test = get_dataset(cfg.dataset, "test", data_dir=cfg.data_dir, augment=False)
        n_train = len(train_plain)
        if cfg.val_images >= n_train:
            raise ValueError(f"val_images: invalid value {cfg.val_images}; allowed: < {n_train} (training images)")
        split = n_train - cfg.val_images
        n_test = len(test)
        for name, n, limit, what in (
            ("test_images", cfg.test_images, n_test, "the test set"),
            ("sweep_images", cfg.sweep_images, n_test, "the test set"),
            ("quant_images", cfg.quant_images, cfg.val_images, "the held-out training images (val_images)"),
            ("perchip_images", cfg.perchip_images, split, "the training images left after val_images"),
            ("bn_images", cfg.bn_images, split, "the training images left after val_images"),
        ):
            if n > limit:
                raise ValueError(f"{name}: {n} exceeds {what} ({limit} images); allowed: <= {limit}")
        self.train_set = train_aug
        self.comp_train = make_loader(
            train_aug.subset(range(split)), cfg.comp_batch_size, shuffle=True, seed=cfg.seed, drop_last=True
        )
        self.val = make_loader(train_plain.subset(range(split, n_train)), cfg.batch_size)
        self.quant_val = make_loader(
            train_plain.subset(range(split, min(n_train, split + cfg.quant_images))), cfg.batch_size
        )
        self.calib = make_loader(train_plain.subset(range(min(cfg.calib_images, split))), 128)
        self.n_calib = min(cfg.calib_images, split)
        self.perchip = make_loader(
            train_aug.subset(range(min(cfg.perchip_images, split))), cfg.perchip_batch_size, shuffle=True, seed=cfg.seed
        )
        self.bn = make_loader(train_plain.subset(range(min(cfg.bn_images, split))), 128)
        self.n_perchip = min(cfg.perchip_images, split)
        self.n_bn = min(cfg.bn_images, split)
        self.test_set = test
        self.test = make_loader(test.subset(range(min(cfg.test_images, len(test)))), cfg.batch_size)
        self.sweep = make_loader(test.subset(range(min(cfg.sweep_images, len(test)))), cfg.batch_size)
        x, _ = test[0]
        self.example = x.unsqueeze(0)
        self.n_test = min(cfg.test_images, len(test))
        self.n_sweep = min(cfg.sweep_images, len(test))


def _mc(
    model: nn.Module,
    hw: Any,
    loader: Any,
    chips: int,
    seed: int,
    calib: Any,
    *,
    device: torch.device,
) -> dict[str, Any]:
    """Monte-Carlo accuracy over chips on ``device`` (``hw`` None: ``model`` is already converted; it is moved
    to ``device`` in place): the searches' scores (the reported numbers are sweep trials, :mod:`.trial`)."""
    from xbarlab.evaluation import evaluate_chips

    res = evaluate_chips(
        model,
        hw,
        loader,
        chips=chips,
        seed=seed,
        calib_loader=calib,
        progress=False,
        device=device,
    )
    out = res.to_dict()
    out.pop("info", None)
    return out


def _clean_accuracy(model: nn.Module, loader: Any, device: torch.device) -> float:
    """Digital top-1 accuracy (%) of a copy of ``model`` on ``device`` (``model`` itself is not moved)."""
    from xbarlab.evaluation import accuracy

    return accuracy(copy.deepcopy(model).to(device), loader, device=device)


def _full_test_loader(cfg: P3Config, data: _Data) -> Any:
    from xbarlab.data import make_loader

    return make_loader(data.test_set, cfg.batch_size, device=_device(cfg))


def _lipschitz_model(cfg: P3Config, models: dict[str, Any]) -> nn.Module:
    model, _ = load_model(models["lipschitz"]["path"])
    return model
