"""Registry of the data sets: :func:`get_dataset`, :func:`list_datasets`, :func:`dataset_info`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from xbarlab.data.base import Augmentation, DatasetInfo, ImageDataset
from xbarlab.data.cifar import CIFAR10_DIR, CIFAR100_DIR, load_cifar10, load_cifar100
from xbarlab.data.errors import DatasetNotFoundError
from xbarlab.data.idx import FASHION_MNIST_CLASSES, IDX_FILES, MNIST_CLASSES, load_idx_pair
from xbarlab.data.small import load_digits_split, load_fmnist_subset
from xbarlab.data.tinyimagenet import TINYIMAGENET_DIR, load_tinyimagenet

__all__ = ["AUGMENTATIONS", "FASHION_MNIST_DIR", "dataset_info", "get_dataset", "list_datasets"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_HOW = (
    "Install the Debian package with `make data` (or `apt-get install dataset-fashion-mnist`, which puts the "
    f"four *-ubyte.gz files in {FASHION_MNIST_DIR}), or pass --data-dir / data_dir= pointing to a folder "
    "with the IDX .gz files from https://github.com/zalandoresearch/fashion-mnist."
)
_MNIST_HOW = (
    "MNIST has no default location: put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (http://yann.lecun.com/exdb/mnist/ or a "
    "mirror) in a folder and pass it with --data-dir / data_dir=."
)
_CIFAR10_HOW = (
    "Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass "
    f"the folder containing {CIFAR10_DIR}/ with --data-dir / data_dir=."
)
_CIFAR100_HOW = (
    "Download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extract it and pass "
    f"the folder containing {CIFAR100_DIR}/ with --data-dir / data_dir=."
)
_TINY_HOW = (
    "Download tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip), extract it and "
    f"pass the folder containing {TINYIMAGENET_DIR}/ with --data-dir / data_dir=."
)

# Train-time augmentation per data set. Horizontal flips are used for natural images and clothing
# (Fashion-MNIST classes are left-right symmetric, flipping is common practice there) but not for digits.
AUGMENTATIONS: dict[str, Augmentation] = {
    "fashion-mnist": Augmentation(crop_padding=2, hflip=True),
    "fashion-mnist-mini": Augmentation(crop_padding=2, hflip=True),
    "mnist": Augmentation(crop_padding=2, hflip=False),
    "cifar10": Augmentation(crop_padding=4, hflip=True),
    "cifar100": Augmentation(crop_padding=4, hflip=True),
    "tinyimagenet": Augmentation(crop_padding=4, hflip=True),
    "digits": Augmentation(),  # 8×8 images: a one-pixel shift is already 1/8 of the image; none.
}

_FMNIST_MEAN, _FMNIST_STD = (0.2860,), (0.3530,)

_INFOS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "fashion-mnist",
            "Fashion-MNIST, 60k/10k 28×28 greyscale clothing images (IDX .gz files)",
            10,
            (1, 28, 28),
            _FMNIST_MEAN,
            _FMNIST_STD,
            default_dir=FASHION_MNIST_DIR,
            how_to_get=FASHION_MNIST_HOW,
            aliases=("fmnist", "fashion_mnist", "fashionmnist"),
        ),
        DatasetInfo(
            "fashion-mnist-mini",
            "Built-in class-balanced Fashion-MNIST subset: 1,000 train / 2,000 test images",
            10,
            (1, 28, 28),
            _FMNIST_MEAN,
            _FMNIST_STD,
            default_dir="(built into the package)",
            aliases=("fmnist-mini", "fashion-mnist-subset"),
        ),
        DatasetInfo(
            "mnist",
            "MNIST handwritten digits, 60k/10k 28×28 greyscale (IDX .gz files; needs --data-dir)",
            10,
            (1, 28, 28),
            (0.1307,),
            (0.3081,),
            how_to_get=_MNIST_HOW,
        ),
        DatasetInfo(
            "cifar10",
            "CIFAR-10, 50k/10k 32×32 RGB (official python pickle batches; needs --data-dir)",
            10,
            (3, 32, 32),
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            how_to_get=_CIFAR10_HOW,
            aliases=("cifar-10",),
        ),
        DatasetInfo(
            "cifar100",
            "CIFAR-100 (fine labels), 50k/10k 32×32 RGB (official python pickles; needs --data-dir)",
            100,
            (3, 32, 32),
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            how_to_get=_CIFAR100_HOW,
            aliases=("cifar-100",),
        ),
        DatasetInfo(
            "tinyimagenet",
            "TinyImageNet-200, 100k/10k (official val) 64×64 RGB JPEGs (needs --data-dir)",
            200,
            (3, 64, 64),
            (0.4802, 0.4481, 0.3975),
            (0.2770, 0.2691, 0.2821),
            how_to_get=_TINY_HOW,
            aliases=("tiny-imagenet", "tiny-imagenet-200"),
        ),
        DatasetInfo(
            "digits",
            "UCI 8×8 digits as in scikit-learn (1,797 images; fixed stratified 1,347/450 split, seed 0)",
            10,
            (1, 8, 8),
            (0.3053,),
            (0.3758,),
            default_dir="(built in: xbarlab/assets/digits.npz)",
            aliases=("sklearn-digits",),
        ),
    )
}
_INFOS = {
    name: DatasetInfo(**{**info.__dict__, "augmentation": AUGMENTATIONS[name].describe()})
    for name, info in _INFOS.items()
}
_ALIASES = {alias: info.name for info in _INFOS.values() for alias in (info.name, *info.aliases)}


def _canonical(name: str) -> str:
    key = name.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    key = key.replace("_", "-")
    if key in _ALIASES:
        return _ALIASES[key]
    raise KeyError(f"unknown dataset {name!r}; available: {', '.join(sorted(_INFOS))}")


def dataset_info(name: str) -> DatasetInfo:
    """Metadata of one data set (accepts aliases such as ``fmnist``)."""
    return _INFOS[_canonical(name)]


def list_datasets() -> list[DatasetInfo]:
    """All registered data sets, sorted by name."""
    return [_INFOS[name] for name in sorted(_INFOS)]


def _idx_dir(data_dir: Path, split: str, subdirs: tuple[str, ...]) -> Path:
    """The folder holding the IDX files: ``data_dir`` itself or a conventional sub-folder of it."""
    stem = IDX_FILES[split][0]
    for candidate in (data_dir, *(data_dir / s for s in subdirs)):
        if (candidate / f"{stem}.gz").is_file() or (candidate / stem).is_file():
            return candidate
    return data_dir


def _load_raw(
    name: str, split: str, data_dir: Path | None, info: DatasetInfo
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    if name == "digits":
        x, y = load_digits_split(split)
        return x, y, [str(i) for i in range(10)]
    if name == "fashion-mnist-mini":
        x, y = load_fmnist_subset(split)
        return x, y, list(FASHION_MNIST_CLASSES)
    if data_dir is None:
        if info.default_dir is None:
            raise DatasetNotFoundError(name, "(no directory given)", "data directory", info.how_to_get)
        data_dir = Path(info.default_dir)
    data_dir = Path(data_dir).expanduser()
    loaders: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor, list[str]]]] = {
        "fashion-mnist": lambda: (
            *load_idx_pair(
                _idx_dir(data_dir, split, ("fashion-mnist", "FashionMNIST/raw")), split, name, info.how_to_get
            ),
            list(FASHION_MNIST_CLASSES),
        ),
        "mnist": lambda: (
            *load_idx_pair(_idx_dir(data_dir, split, ("mnist", "MNIST/raw")), split, name, info.how_to_get),
            list(MNIST_CLASSES),
        ),
        "cifar10": lambda: load_cifar10(data_dir, split, info.how_to_get),
        "cifar100": lambda: load_cifar100(data_dir, split, info.how_to_get),
        "tinyimagenet": lambda: load_tinyimagenet(data_dir, split, info.how_to_get),
    }
    return loaders[name]()


def get_dataset(
    name: str,
    split: str = "train",
    data_dir: str | Path | None = None,
    augment: bool | None = None,
) -> ImageDataset:
    """Load one split of a registered data set as an in-memory :class:`ImageDataset`.

    Args:
        name: data set name (see :func:`list_datasets`; aliases like ``fmnist`` work).
        split: ``"train"`` or ``"test"`` (TinyImageNet's ``test`` is its official validation set).
        data_dir: folder with the data files; ``None`` uses the data set's default location when it has
            one (Fashion-MNIST: ``/usr/share/datasets/fashion-mnist``).
        augment: apply the data set's train-time augmentation (see :data:`AUGMENTATIONS`). ``None`` means
            "only for the train split".

    Raises:
        KeyError: unknown data set name.
        ValueError: unknown split.
        DatasetNotFoundError: the folder or one of its files is missing (the message says how to get it).
        DatasetCorruptError: a file does not have the official format.
    """
    canonical = _canonical(name)
    info = _INFOS[canonical]
    if split not in info.splits:
        raise ValueError(f"{canonical}: split must be one of {list(info.splits)}, got {split!r}")
    images, labels, classes = _load_raw(canonical, split, None if data_dir is None else Path(data_dir), info)
    use_aug = (split == "train") if augment is None else bool(augment)
    return ImageDataset(
        images,
        labels,
        mean=info.mean,
        std=info.std,
        augmentation=AUGMENTATIONS[canonical] if use_aug else None,
        classes=classes,
        name=canonical,
        split=split,
    )
