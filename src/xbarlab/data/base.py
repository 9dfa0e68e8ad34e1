"""In-memory image data sets with batched, torch-only augmentation and normalisation.

Images are kept as one ``uint8`` tensor of shape ``(N, C, H, W)``; the float conversion, augmentation and
normalisation happen when items are fetched. The :class:`~torch.utils.data.DataLoader` fetches whole
batches through :meth:`ImageDataset.__getitems__`, so a batch is augmented with a handful of vectorised
tensor operations instead of one Python call per image.

Randomness: augmentation draws from the global torch RNG (or an explicit ``generator``), so
``torch.manual_seed`` before an epoch makes the augmented epoch reproducible; :func:`make_loader` shuffles
with its own seeded :class:`torch.Generator`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

__all__ = ["Augmentation", "DatasetInfo", "ImageDataset", "make_loader"]


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a data set (what :func:`xbarlab.data.list_datasets` returns)."""

    name: str
    description: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: tuple[str, ...] = ("train", "test")
    default_dir: str | None = None
    how_to_get: str = ""
    augmentation: str = ""
    aliases: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view of the metadata."""
        return {
            "name": self.name,
            "description": self.description,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "splits": list(self.splits),
            "default_dir": self.default_dir,
            "augmentation": self.augmentation,
        }


@dataclass(frozen=True)
class Augmentation:
    """Train-time augmentation on ``uint8`` image batches: random crop with zero padding, horizontal flip.

    Args:
        crop_padding: pixels of zero padding on every side before a random crop back to the input size
            (0 disables the crop).
        hflip: flip each image left-right with probability 1/2.
    """

    crop_padding: int = 0
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")

    @property
    def is_identity(self) -> bool:
        """True when the augmentation does nothing."""
        return self.crop_padding == 0 and not self.hflip

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch ``(N, C, H, W)`` (any dtype); returns a new tensor of the same shape and dtype."""
        if images.dim() != 4:
            raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        n, c, h, w = images.shape
        out = images
        if self.crop_padding > 0 and n > 0:
            p = self.crop_padding
            padded = F.pad(out, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            ox = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            rows = (oy[:, None] + torch.arange(h)).to(images.device)
            cols = (ox[:, None] + torch.arange(w)).to(images.device)
            batch_idx = torch.arange(n, device=images.device)[:, None, None, None]
            chan_idx = torch.arange(c, device=images.device)[None, :, None, None]
            out = padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]
        if self.hflip and n > 0:
            flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
            out = torch.where(flip[:, None, None, None], out.flip(-1), out)
        return out

    def describe(self) -> str:
        """Short human description, e.g. ``"random crop (pad 4) + horizontal flip"``."""
        parts = []
        if self.crop_padding:
            parts.append(f"random crop (pad {self.crop_padding})")
        if self.hflip:
            parts.append("horizontal flip")
        return " + ".join(parts) if parts else "none"


class _StackedBatch(list):  # type: ignore[type-arg]
    """A list of ``(image, label)`` pairs that also carries the already stacked batch tensors.

    :func:`default_collate` sees an ordinary list of pairs; the collate function of :func:`make_loader`
    returns the stacked tensors directly.
    """

    images: Tensor
    labels: Tensor


def collate_batch(batch: Sequence[Any]) -> Any:
    """Collate function: reuse the stacked tensors of :meth:`ImageDataset.__getitems__` when present."""
    if isinstance(batch, _StackedBatch):
        return batch.images, batch.labels
    return default_collate(list(batch))


class ImageDataset(Dataset[tuple[Tensor, int]]):
    """Labelled images held in memory as ``uint8``; items are normalised float tensors ``(C, H, W)``.

    Args:
        images: ``uint8`` tensor ``(N, C, H, W)``.
        labels: integer tensor ``(N,)`` with values in ``[0, num_classes)``.
        mean, std: per-channel normalisation constants (of the [0, 1]-scaled pixels).
        augmentation: train-time augmentation, or ``None``.
        classes: class names (length = number of classes).
        name, split: for messages and ``repr``.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augmentation: Augmentation | None = None,
        classes: Sequence[str] = (),
        name: str = "dataset",
        split: str = "train",
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must have shape ({images.shape[0]},) to match images, got {tuple(labels.shape)}")
        c = images.shape[1]
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std must have {c} entries (one per channel), got {len(mean)}/{len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std entries must be > 0, got {tuple(std)}")
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.augmentation = None if augmentation is None or augmentation.is_identity else augmentation
        self.classes = list(classes)
        self.name = name
        self.split = split
        self._mean_t = torch.tensor(self.mean, dtype=torch.float32).view(1, c, 1, 1)
        self._inv_std_t = 1.0 / torch.tensor(self.std, dtype=torch.float32).view(1, c, 1, 1)

    # -- torch Dataset protocol -------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.name}/{self.split} of length {n}")
        index = index % n
        x = self.transform(self.images[index : index + 1])
        return x[0], int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, int]]:
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        x = self.transform(self.images[idx])
        y = self.labels[idx]
        batch = _StackedBatch(zip(x.unbind(0), y.tolist(), strict=True))
        batch.images = x
        batch.labels = y
        return batch

    # -- transforms ---------------------------------------------------------------------------------------
    @property
    def targets(self) -> Tensor:
        """The labels (``int64`` tensor), as in torchvision data sets."""
        return self.labels

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes) if self.classes else int(self.labels.max()) + 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one item."""
        _, c, h, w = self.images.shape
        return (int(c), int(h), int(w))

    def normalize(self, images: Tensor) -> Tensor:
        """``uint8`` (or [0, 255] float) batch → normalised ``float32`` batch."""
        x = images.to(torch.float32).mul_(1.0 / 255.0)
        mean = self._mean_t.to(x.device)
        inv_std = self._inv_std_t.to(x.device)
        return x.sub_(mean).mul_(inv_std)

    def transform(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment (when enabled) and normalise a ``uint8`` batch ``(N, C, H, W)``."""
        if self.augmentation is not None:
            images = self.augmentation(images, generator)
        return self.normalize(images)

    def with_augmentation(self, augmentation: Augmentation | None) -> ImageDataset:
        """A view of the same images with another augmentation (no copy)."""
        return ImageDataset(
            self.images,
            self.labels,
            mean=self.mean,
            std=self.std,
            augmentation=augmentation,
            classes=self.classes,
            name=self.name,
            split=self.split,
        )

    def subset(self, indices: Sequence[int] | Tensor) -> ImageDataset:
        """A new data set with the selected items (copies the selected images)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return ImageDataset(
            self.images[idx],
            self.labels[idx],
            mean=self.mean,
            std=self.std,
            augmentation=self.augmentation,
            classes=self.classes,
            name=self.name,
            split=self.split,
        )

    def __repr__(self) -> str:
        aug = self.augmentation.describe() if self.augmentation else "none"
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={self.input_shape}, classes={self.num_classes}, augmentation={aug!r})"
        )


def make_loader(
    dataset: Dataset[Any],
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    *,
    drop_last: bool = False,
    num_workers: int = 0,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> DataLoader[Any]:
    """A :class:`DataLoader` with seeded shuffling and fast batched collation.

    Args:
        dataset: any map-style data set (``ImageDataset`` batches are fetched and augmented in one go).
        batch_size: items per batch (>= 1).
        shuffle: reshuffle every epoch with the loader's own generator.
        seed: seed of that generator (same seed → same order of batches).
        drop_last: drop the last incomplete batch.
        num_workers: worker processes (0 = load in the main process, the right choice for in-memory data).
        generator: use this generator instead of creating one from ``seed``.
        device: where the batches go; pinned (page-locked) memory only when it is a CUDA device, so that
            ``.to(device, non_blocking=True)`` overlaps the copy (pinning on a CPU-only run only costs time).
        **kwargs: passed to :class:`DataLoader`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(int(seed))
    kwargs.setdefault("collate_fn", collate_batch)
    if device is not None:
        kwargs.setdefault("pin_memory", torch.device(device).type == "cuda")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=generator,
        **kwargs,
    )
