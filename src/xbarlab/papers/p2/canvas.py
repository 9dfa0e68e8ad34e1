"""Multi-object canvases from Fashion-MNIST (or MNIST) images: exact boxes, classes and per-pixel masks.

P2 claims noise-aware BN also helps detection and semantic segmentation. COCO/VOC/Cityscapes are not
available here, so both tasks are built from real images we have: each canvas is a ``size × size`` black image
holding 1 to ``max_objects`` Fashion-MNIST objects at random positions and scales.

Construction of one object (all integer pixel coordinates, end-exclusive boxes ``[x0, y0, x1, y1)``):

1. take a source image (28 × 28 uint8) and crop it to the tight box of its pixels ``> mask_threshold``;
2. resize the crop by a random factor in ``[min_scale, max_scale]`` (bilinear with antialiasing);
3. its mask is the resized pixels ``> mask_threshold``; crop again to the mask's tight box, so that the box of
   the object is exactly the bounding box of its mask;
4. place it at a random position where its box, grown by ``gap`` pixels, overlaps no earlier box (up to
   ``max_tries`` attempts; an object that does not fit is dropped).

Because boxes never overlap, no object occludes another: the segmentation mask (0 = background, class + 1 for
object pixels) and the instance map (0 = background, i + 1 for object i) are exact, and the tight box of
instance i in the instance map equals box i. Faint pixels of an object below the threshold stay in the image
(anti-aliased edges) but count as background in the masks.

Determinism: canvas ``i`` of a set generated with ``seed`` uses ``numpy.random.default_rng((seed, i))`` and
nothing else, so it is the same whatever the number of canvases, the order of generation or the platform.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xbarlab.data import get_dataset

__all__ = [
    "Canvas",
    "CanvasConfig",
    "CanvasSet",
    "batches",
    "generate_canvas",
    "generate_canvases",
    "source_images",
]

CANVAS_PIXEL_SCALE = 1.0 / 255.0
"""Network input = uint8 pixel × 1/255 (no mean subtraction: the first BN layer takes care of it)."""


@dataclass(frozen=True)
class CanvasConfig:
    """How canvases are drawn (sizes in pixels)."""

    size: int = 64
    min_objects: int = 1
    max_objects: int = 4
    min_scale: float = 0.5
    max_scale: float = 1.0
    mask_threshold: int = 32
    gap: int = 1
    max_tries: int = 50

    def __post_init__(self) -> None:
        checks = [
            ("size", self.size >= 16, ">= 16"),
            ("min_objects", 0 <= self.min_objects <= self.max_objects, f"in [0, max_objects={self.max_objects}]"),
            ("max_objects", 1 <= self.max_objects <= 32, "in [1, 32]"),
            ("min_scale", 0.1 <= self.min_scale <= self.max_scale, f"in [0.1, max_scale={self.max_scale}]"),
            ("max_scale", self.max_scale <= self.size / 28.0, f"<= size/28 = {self.size / 28.0:.3g}"),
            ("mask_threshold", 0 <= self.mask_threshold < 255, "in [0, 255)"),
            ("gap", self.gap >= 0, ">= 0"),
            ("max_tries", self.max_tries >= 1, ">= 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"CanvasConfig.{name}: invalid value {getattr(self, name)!r}; allowed: {allowed}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Canvas:
    """One canvas: image, boxes, labels, segmentation mask and instance map."""

    image: Tensor
    """uint8 (1, size, size)."""
    boxes: Tensor
    """float32 (n, 4): x0, y0, x1, y1 in pixels, end-exclusive."""
    labels: Tensor
    """int64 (n,): class index in [0, num_classes)."""
    mask: Tensor
    """uint8 (size, size): 0 background, class + 1 on object pixels."""
    instances: Tensor
    """uint8 (size, size): 0 background, i + 1 on the pixels of object i."""
    sources: Tensor
    """int64 (n,): index of each object's source image."""


def _tight_box(m: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(m.any(1))
    cols = np.flatnonzero(m.any(0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _resize(crop: np.ndarray, h: int, w: int) -> np.ndarray:
    t = torch.from_numpy(crop.astype(np.float32))[None, None]
    out = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def generate_canvas(
    images: Tensor, labels: Tensor, index: int, *, seed: int, config: CanvasConfig | None = None
) -> Canvas:
    """Canvas number ``index`` of the set with ``seed`` drawn from source ``images`` (N, 28, 28) / (N, 1, 28, 28)."""
    cfg = config or CanvasConfig()
    src = images[:, 0] if images.dim() == 4 else images
    if src.dtype != torch.uint8 or src.dim() != 3:
        raise ValueError(f"images: expected uint8 (N, H, W) or (N, 1, H, W), got {images.dtype} {tuple(images.shape)}")
    rng = np.random.default_rng((int(seed), int(index)))
    s = cfg.size
    canvas = np.zeros((s, s), dtype=np.uint8)
    mask = np.zeros((s, s), dtype=np.uint8)
    inst = np.zeros((s, s), dtype=np.uint8)
    boxes: list[tuple[int, int, int, int]] = []
    cls: list[int] = []
    srcs: list[int] = []
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for _ in range(n_obj):
        j = int(rng.integers(0, src.shape[0]))
        scale = float(rng.uniform(cfg.min_scale, cfg.max_scale))
        tries = rng.random((cfg.max_tries, 2)).tolist()  # drawn up front: the stream never depends on outcomes
        img = src[j].numpy()
        box0 = _tight_box(img > cfg.mask_threshold)
        if box0 is None:
            continue
        x0, y0, x1, y1 = box0
        crop = img[y0:y1, x0:x1]
        h = max(2, round((y1 - y0) * scale))
        w = max(2, round((x1 - x0) * scale))
        crop = _resize(crop, h, w)
        box1 = _tight_box(crop > cfg.mask_threshold)
        if box1 is None:
            continue
        crop = crop[box1[1] : box1[3], box1[0] : box1[2]]
        h, w = crop.shape
        if h > s or w > s:
            continue
        for u, v in tries:
            px = int(u * (s - w + 1))
            py = int(v * (s - h + 1))
            g = cfg.gap
            free = all(
                px + w + g <= bx0 or bx1 + g <= px or py + h + g <= by0 or by1 + g <= py for bx0, by0, bx1, by1 in boxes
            )
            if free:
                obj = crop > cfg.mask_threshold
                canvas[py : py + h, px : px + w] = crop
                mask[py : py + h, px : px + w][obj] = int(labels[j]) + 1
                inst[py : py + h, px : px + w][obj] = len(boxes) + 1
                boxes.append((px, py, px + w, py + h))
                cls.append(int(labels[j]))
                srcs.append(j)
                break
    return Canvas(
        image=torch.from_numpy(canvas)[None],
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(cls, dtype=torch.int64),
        mask=torch.from_numpy(mask),
        instances=torch.from_numpy(inst),
        sources=torch.tensor(srcs, dtype=torch.int64),
    )


@dataclass
class CanvasSet:
    """A set of canvases stacked as tensors (boxes padded to ``max_objects`` with label −1)."""

    images: Tensor
    """uint8 (N, 1, S, S)."""
    masks: Tensor
    """int64 (N, S, S): 0 background, class + 1."""
    boxes: Tensor
    """float32 (N, M, 4), padded rows are 0."""
    labels: Tensor
    """int64 (N, M), −1 for padding."""
    num_classes: int
    classes: tuple[str, ...]
    seed: int
    config: CanvasConfig
    source: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def inputs(self, idx: Tensor | slice | None = None) -> Tensor:
        """Network inputs (float32, pixel/255) of the selected canvases."""
        x = self.images if idx is None else self.images[idx]
        return x.to(torch.float32) * CANVAS_PIXEL_SCALE

    def targets(self, i: int) -> tuple[Tensor, Tensor]:
        """(boxes (n, 4), labels (n,)) of canvas ``i`` without padding."""
        keep = self.labels[i] >= 0
        return self.boxes[i][keep], self.labels[i][keep]

    def describe(self) -> dict[str, Any]:
        n_obj = int((self.labels >= 0).sum())
        return {
            "canvases": len(self),
            "objects": n_obj,
            "seed": self.seed,
            "source": self.source,
            "num_classes": self.num_classes,
            "config": self.config.as_dict(),
        }


def generate_canvases(
    images: Tensor,
    labels: Tensor,
    count: int,
    *,
    seed: int,
    config: CanvasConfig | None = None,
    classes: tuple[str, ...] = (),
    source: str = "",
) -> CanvasSet:
    """Generate ``count`` canvases (canvas i is :func:`generate_canvas` with ``index=i``)."""
    if count < 1:
        raise ValueError(f"count: invalid value {count}; allowed: >= 1")
    cfg = config or CanvasConfig()
    num_classes = len(classes) if classes else int(labels.max()) + 1
    items = [generate_canvas(images, labels, i, seed=seed, config=cfg) for i in range(count)]
    m = cfg.max_objects
    boxes = torch.zeros(count, m, 4)
    lab = torch.full((count, m), -1, dtype=torch.int64)
    for i, c in enumerate(items):
        n = c.labels.numel()
        boxes[i, :n] = c.boxes
        lab[i, :n] = c.labels
    return CanvasSet(
        images=torch.stack([c.image for c in items]),
        masks=torch.stack([c.mask for c in items]).to(torch.int64),
        boxes=boxes,
        labels=lab,
        num_classes=num_classes,
        classes=tuple(classes),
        seed=seed,
        config=cfg,
        source=source,
    )


def source_images(dataset: str = "fashion-mnist", split: str = "train") -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """(uint8 images (N, 28, 28), labels, class names) of a registered data set (``fashion-mnist``, ``mnist``,
    ``fashion-mnist-mini``), loaded with :func:`xbarlab.data.get_dataset`."""
    ds = get_dataset(dataset, split, augment=False)
    return ds.images[:, 0], ds.labels, tuple(ds.classes)


def batches(
    data: CanvasSet,
    batch_size: int,
    *,
    target: str = "mask",
    shuffle: bool = False,
    seed: int = 0,
    limit: int | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(inputs, targets)``: targets are the masks (``target="mask"``) or canvas indices (``"index"``).

    ``shuffle`` permutes with ``torch.Generator().manual_seed(seed)``; ``limit`` caps the number of batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: invalid value {batch_size}; allowed: >= 1")
    if target not in ("mask", "index"):
        raise ValueError(f"target: invalid value {target!r}; allowed: mask, index")
    n = len(data)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    n_batches = math.ceil(n / batch_size)
    if limit is not None:
        n_batches = min(n_batches, limit)
    for b in range(n_batches):
        idx = order[b * batch_size : (b + 1) * batch_size]
        y = data.masks[idx] if target == "mask" else idx
        yield data.inputs(idx), y


class CanvasLoader:
    """Re-iterable wrapper of :func:`batches` (a fresh shuffle seed per pass: ``seed + pass number``)."""

    def __init__(self, data: CanvasSet, batch_size: int, *, target: str = "mask", shuffle: bool = False, seed: int = 0):
        self.data = data
        self.batch_size = batch_size
        self.target = target
        self.shuffle = shuffle
        self.seed = seed
        self._passes = 0

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        seed = self.seed + self._passes
        self._passes += 1
        return batches(self.data, self.batch_size, target=self.target, shuffle=self.shuffle, seed=seed)

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)
