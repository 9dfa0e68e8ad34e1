"""TinyImageNet (200 classes, 64×64 RGB) from the extracted ``tiny-imagenet-200`` folder.

Layout::

    tiny-imagenet-200/wnids.txt                      one WordNet id per line (200 lines)
    tiny-imagenet-200/words.txt                      optional: "<wnid>\\t<names>"
    tiny-imagenet-200/train/<wnid>/images/*.JPEG     500 images per class
    tiny-imagenet-200/val/images/*.JPEG              10,000 images
    tiny-imagenet-200/val/val_annotations.txt        "<file>\\t<wnid>\\t<bbox...>"

The ``test`` split of xbarlab is the official ``val`` folder (the official test images have no labels).
Class index = position of the wnid in the *sorted* wnid list (the ImageFolder convention). Images are
decoded with Pillow and converted to RGB (a few TinyImageNet JPEGs are greyscale).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xbarlab.data.errors import DatasetCorruptError, DatasetNotFoundError

__all__ = ["TINYIMAGENET_DIR", "load_tinyimagenet"]

TINYIMAGENET_DIR = "tiny-imagenet-200"
_IMAGE_SIZE = 64


def _decode(path: Path, dataset: str, how_to_get: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            if rgb.size != (_IMAGE_SIZE, _IMAGE_SIZE):
                rgb = rgb.resize((_IMAGE_SIZE, _IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetCorruptError(dataset, path, f"cannot decode image ({exc})", how_to_get) from exc


def load_tinyimagenet(data_dir: Path, split: str, how_to_get: str) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Images ``uint8 (N, 3, 64, 64)``, labels ``int64 (N,)`` and class names (wnids, or words when known)."""
    name = "tinyimagenet"
    if split not in ("train", "test"):
        raise ValueError(f"{name}: split must be 'train' or 'test' (= official val), got {split!r}")
    root = data_dir / TINYIMAGENET_DIR if (data_dir / TINYIMAGENET_DIR).is_dir() else data_dir
    if not root.is_dir():
        raise DatasetNotFoundError(name, root, "data directory", how_to_get)
    wnids_path = root / "wnids.txt"
    if not wnids_path.is_file():
        raise DatasetNotFoundError(name, root, "file wnids.txt", how_to_get)
    wnids = sorted(line.strip() for line in wnids_path.read_text().splitlines() if line.strip())
    if not wnids or len(set(wnids)) != len(wnids):
        raise DatasetCorruptError(name, wnids_path, "empty or duplicate WordNet ids", how_to_get)
    index = {w: i for i, w in enumerate(wnids)}
    files: list[Path] = []
    labels: list[int] = []
    if split == "train":
        train_dir = root / "train"
        if not train_dir.is_dir():
            raise DatasetNotFoundError(name, root, "folder train/", how_to_get)
        for wnid in wnids:
            img_dir = train_dir / wnid / "images"
            if not img_dir.is_dir():
                raise DatasetNotFoundError(name, train_dir, f"folder {wnid}/images", how_to_get)
            class_files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
            files.extend(class_files)
            labels.extend([index[wnid]] * len(class_files))
    else:
        val_dir = root / "val"
        ann_path = val_dir / "val_annotations.txt"
        if not ann_path.is_file():
            raise DatasetNotFoundError(name, val_dir, "file val_annotations.txt", how_to_get)
        for lineno, line in enumerate(ann_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise DatasetCorruptError(
                    name, ann_path, f"line {lineno}: expected '<file>\\t<wnid>...' with a known wnid"
                )
            path = val_dir / "images" / parts[0]
            if not path.is_file():
                raise DatasetNotFoundError(name, val_dir / "images", f"image {parts[0]}", how_to_get)
            files.append(path)
            labels.append(index[parts[1]])
    if not files:
        raise DatasetCorruptError(name, root, f"no images found for split {split!r}", how_to_get)
    images = np.empty((len(files), _IMAGE_SIZE, _IMAGE_SIZE, 3), dtype=np.uint8)
    for i, path in enumerate(files):
        images[i] = _decode(path, name, how_to_get)
    classes = list(wnids)
    words_path = root / "words.txt"
    if words_path.is_file():
        words: dict[str, str] = {}
        for line in words_path.read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
        classes = [words.get(w) or w for w in wnids]
    img_t = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return img_t, torch.tensor(labels, dtype=torch.int64), classes
