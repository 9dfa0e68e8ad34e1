"""Data sets without torchvision: Fashion-MNIST, MNIST, CIFAR-10/100, TinyImageNet, digits.

>>> from xbarlab.data import get_dataset, make_loader
>>> train = get_dataset("fashion-mnist", "train")          # augmented (random crop + flip)
>>> loader = make_loader(train, batch_size=128, shuffle=True, seed=0)
"""

from __future__ import annotations

from xbarlab.data.base import Augmentation, DatasetInfo, ImageDataset, collate_batch, make_loader
from xbarlab.data.errors import DatasetCorruptError, DatasetError, DatasetNotFoundError
from xbarlab.data.registry import AUGMENTATIONS, FASHION_MNIST_DIR, dataset_info, get_dataset, list_datasets

__all__ = [
    "AUGMENTATIONS",
    "FASHION_MNIST_DIR",
    "Augmentation",
    "DatasetCorruptError",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ImageDataset",
    "collate_batch",
    "dataset_info",
    "get_dataset",
    "list_datasets",
    "make_loader",
]
