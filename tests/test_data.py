"""Data loaders on fixtures in the exact official formats (IDX gz, CIFAR python pickles, TinyImageNet)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from xbarlab.data import (
    AUGMENTATIONS,
    Augmentation,
    DatasetCorruptError,
    DatasetNotFoundError,
    ImageDataset,
    dataset_info,
    get_dataset,
    list_datasets,
    make_loader,
)
from xbarlab.data.cifar import RestrictedUnpickler, restricted_loads
from xbarlab.data.small import fmnist_subset_path

# ---------------------------------------------------------------------------------------------------------
# Fixture writers
# ---------------------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    """An IDX file as distributed by LeCun / Zalando: magic (0, 0, 0x08, ndim), big-endian dims, bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if compress:
        path.write_bytes(gzip.compress(raw, mtime=0))
    else:
        path.write_bytes(raw)


def make_idx_dir(root: Path, n_train: int = 30, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    root.mkdir(parents=True, exist_ok=True)
    for split, n, (img, lbl) in (
        ("train", n_train, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")),
        ("test", n_test, ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")),
    ):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{img}.gz", images)
        write_idx(root / f"{lbl}.gz", labels)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


def _p2_str(b: bytes) -> bytes:
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _p2_int(v: int) -> bytes:
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if 0 <= v < 65536:
        return b"M" + struct.pack("<H", v)
    return b"J" + struct.pack("<i", v)


def _p2_obj(o: object) -> bytes:
    """Python 2 cPickle protocol-2 opcodes, as in the official CIFAR files (str → BINSTRING opcodes)."""
    if isinstance(o, (bytes, str)):
        return _p2_str(o.encode("latin1") if isinstance(o, str) else o)
    if isinstance(o, int):
        return _p2_int(o)
    if isinstance(o, list):
        return b"](" + b"".join(_p2_obj(x) for x in o) + b"e"
    if isinstance(o, dict):
        return b"}(" + b"".join(_p2_obj(k) + _p2_obj(v) for k, v in o.items()) + b"u"
    if isinstance(o, np.ndarray):
        assert o.dtype == np.uint8
        shape = b"(" + b"".join(_p2_int(s) for s in o.shape) + b"t"
        dtype = (
            b"cnumpy\ndtype\n" + _p2_str(b"u1") + _p2_int(0) + _p2_int(1) + b"\x87R"
            b"(" + _p2_int(3) + _p2_str(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + _p2_int(0) + b"tb"
        )
        return (
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _p2_int(0) + b"\x85" + _p2_str(b"b")
            + b"\x87R(" + _p2_int(1) + shape + dtype + b"\x89" + _p2_str(o.tobytes()) + b"tb"
        )  # fmt: skip
    raise TypeError(type(o))


def py2_pickle(obj: object) -> bytes:
    return b"\x80\x02" + _p2_obj(obj) + b"."


def make_cifar10(root: Path, per_batch: int = 3) -> tuple[np.ndarray, np.ndarray]:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    all_data, all_labels = [], []
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(per_batch)]
        batch = {
            "batch_label": f"batch {i}",
            "labels": labels,
            "data": data,
            "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)],
        }
        (d / name).write_bytes(py2_pickle(batch))
        if name != "test_batch":
            all_data.append(data)
            all_labels += labels
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (d / "batches.meta").write_bytes(py2_pickle({"num_cases_per_batch": per_batch, "label_names": names}))
    return np.concatenate(all_data), np.array(all_labels)


def make_cifar100(root: Path, n: int = 4) -> np.ndarray:
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    rng = np.random.default_rng(2)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    for split in ("train", "test"):
        obj = {
            "filenames": [f"f{j}.png" for j in range(n)],
            "batch_label": f"{split} batch",
            "fine_labels": [97 + j % 3 for j in range(n)],
            "coarse_labels": [j % 20 for j in range(n)],
            "data": data,
        }
        (d / split).write_bytes(py2_pickle(obj))
    meta = {
        "fine_label_names": [f"fine{i}" for i in range(100)],
        "coarse_label_names": [f"c{i}" for i in range(20)],
    }
    (d / "meta").write_bytes(py2_pickle(meta))
    return data


def make_tinyimagenet(root: Path) -> Path:
    from PIL import Image

    base = root / "tiny-imagenet-200"
    wnids = ["n02", "n01"]  # deliberately unsorted: class index follows the sorted order
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tgreat white shark\n")
    for w, value in (("n01", 10), ("n02", 200)):
        img_dir = base / "train" / w / "images"
        img_dir.mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (64, 64), (value, value, value)).save(img_dir / f"{w}_{j}.JPEG", quality=95)
    Image.new("L", (64, 64), 120).save(base / "val" / "images" / "val_0.JPEG")  # greyscale → RGB
    Image.new("RGB", (64, 64), (30, 30, 30)).save(base / "val" / "images" / "val_1.JPEG")
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t63\t63\nval_1.JPEG\tn01\t1\t2\t3\t4\n")
    return base


# ---------------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (IDX)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_loader_shapes_labels_normalisation(tmp_path: Path, name: str) -> None:
    arrays = make_idx_dir(tmp_path)
    info = dataset_info(name)
    ds = get_dataset(name, "test", data_dir=tmp_path, augment=False)
    assert isinstance(ds, ImageDataset) and len(ds) == 20
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (20, 1, 28, 28)
    x, y = ds[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == 3
    expected = (torch.from_numpy(arrays["test_images"][3]).float() / 255 - info.mean[0]) / info.std[0]
    torch.testing.assert_close(x[0], expected)
    assert ds.labels.tolist() == arrays["test_labels"].tolist()
    assert len(get_dataset(name, "train", data_dir=tmp_path)) == 30
    assert ds.classes[0] == ("T-shirt/top" if name == "fashion-mnist" else "0")


def test_idx_accepts_uncompressed_and_torchvision_layout(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), compress=False)
    write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(5, dtype=np.uint8), compress=False)
    ds = get_dataset("mnist", "test", data_dir=tmp_path)
    assert len(ds) == 5 and ds.labels.tolist() == [0, 1, 2, 3, 4]


def test_idx_wrong_magic_truncated_and_bad_gzip(tmp_path: Path) -> None:
    make_idx_dir(tmp_path)
    img = tmp_path / "t10k-images-idx3-ubyte.gz"
    # labels file written where the images belong: magic 2049 instead of 2051
    img.write_bytes((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(DatasetCorruptError, match=r"magic number is 2049.*expected 2051"):
        get_dataset("mnist", "test", data_dir=tmp_path)
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 20, 28, 28)
    img.write_bytes(gzip.compress(header + b"\x00" * 100))
    with pytest.raises(DatasetCorruptError, match=r"declares shape \(20, 28, 28\)"):
        get_dataset("mnist", "test", data_dir=tmp_path)
    img.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetCorruptError, match="decompress") as exc:
        get_dataset("mnist", "test", data_dir=tmp_path)
    assert str(img) in str(exc.value)


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    with pytest.raises(DatasetCorruptError, match="7 labels for 20 images"):
        get_dataset("fashion-mnist", "test", data_dir=tmp_path)


def test_missing_directory_and_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as exc:
        get_dataset("fashion-mnist", "train", data_dir=missing)
    msg = str(exc.value)
    assert str(missing) in msg and "make data" in msg and "dataset-fashion-mnist" in msg and "--data-dir" in msg
    make_idx_dir(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"train-labels-idx1-ubyte.gz not found") as exc:
        get_dataset("mnist", "train", data_dir=tmp_path)
    assert str(tmp_path) in str(exc.value)
    with pytest.raises(DatasetNotFoundError, match=r"no directory given.*--data-dir"):
        get_dataset("mnist", "train")
    with pytest.raises(DatasetNotFoundError, match=r"cifar-10-python.tar.gz"):
        get_dataset("cifar10", "train", data_dir=missing)
    assert issubclass(DatasetNotFoundError, FileNotFoundError)


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_full_fashion_mnist_default_dir() -> None:
    ds = get_dataset("fashion-mnist", "test")
    assert ds.images.shape == (10000, 1, 28, 28)
    assert ds.labels.bincount().tolist() == [1000] * 10
    x = ds.normalize(ds.images[:2000])
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1


# ---------------------------------------------------------------------------------------------------------
# CIFAR
# ---------------------------------------------------------------------------------------------------------


def test_cifar10_official_pickle_layout(tmp_path: Path) -> None:
    data, labels = make_cifar10(tmp_path)
    ds = get_dataset("cifar10", "train", data_dir=tmp_path, augment=False)
    assert ds.images.shape == (15, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == labels.tolist()
    # row layout: 1024 red, 1024 green, 1024 blue values, each row-major
    i, c, yy, xx = 4, 2, 5, 17
    assert int(ds.images[i, c, yy, xx]) == int(data[i, c * 1024 + yy * 32 + xx])
    assert ds.classes[1] == "automobile"
    test = get_dataset("cifar10", "test", data_dir=tmp_path / "cifar-10-batches-py")  # the folder itself
    assert len(test) == 3 and test.augmentation is None
    x, _ = test[0]
    mean = torch.tensor(dataset_info("cifar10").mean).view(3, 1, 1)
    std = torch.tensor(dataset_info("cifar10").std).view(3, 1, 1)
    torch.testing.assert_close(x, (test.images[0].float() / 255 - mean) / std)


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    make_cifar100(tmp_path)
    ds = get_dataset("cifar100", "test", data_dir=tmp_path)
    assert ds.images.shape == (4, 3, 32, 32)
    assert ds.labels.tolist() == [97, 98, 99, 97] and ds.num_classes == 100 and ds.classes[99] == "fine99"


def test_cifar_missing_and_corrupt(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    (d / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="file data_batch_3 not found"):
        get_dataset("cifar10", "train", data_dir=tmp_path)
    (d / "test_batch").write_bytes(b"\x80\x02garbage")
    with pytest.raises(DatasetCorruptError, match="test_batch"):
        get_dataset("cifar10", "test", data_dir=tmp_path)
    (d / "test_batch").write_bytes(py2_pickle({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DatasetCorruptError, match=r"uint8 array \(N, 3072\)"):
        get_dataset("cifar10", "test", data_dir=tmp_path)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_other_globals(tmp_path: Path) -> None:
    payload = pickle.dumps({"data": _Evil()}, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"global '(posix|os|nt)\.system' is not allowed"):
        restricted_loads(payload)
    for forbidden in (pickle.dumps(print), pickle.dumps(Path("x"))):
        with pytest.raises(pickle.UnpicklingError, match="not allowed"):
            RestrictedUnpickler(io.BytesIO(forbidden)).load()
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(payload)
    with pytest.raises(DatasetCorruptError, match="not allowed"):
        get_dataset("cifar10", "test", data_dir=tmp_path)


def test_restricted_unpickler_reads_python3_numpy_pickles() -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (3, 4):
        out = restricted_loads(pickle.dumps({"data": arr, "labels": [1, 2, 3]}, protocol=protocol))
        assert np.array_equal(out["data"], arr) and out["labels"] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------------------
# TinyImageNet, digits, built-in subset
# ---------------------------------------------------------------------------------------------------------


def test_tinyimagenet_folder_layout(tmp_path: Path) -> None:
    make_tinyimagenet(tmp_path)
    train = get_dataset("tinyimagenet", "train", data_dir=tmp_path, augment=False)
    assert train.images.shape == (4, 3, 64, 64) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 1, 1]  # sorted wnids: n01 → 0, n02 → 1
    assert train.classes == ["goldfish", "great white shark"]
    assert abs(int(train.images[0].float().mean()) - 10) <= 2 and abs(int(train.images[3].float().mean()) - 200) <= 2
    val = get_dataset("tinyimagenet", "test", data_dir=tmp_path)
    assert val.labels.tolist() == [1, 0] and val.images.shape == (2, 3, 64, 64)
    assert torch.equal(val.images[0, 0], val.images[0, 2])  # greyscale image converted to RGB


def test_tinyimagenet_errors(tmp_path: Path) -> None:
    base = make_tinyimagenet(tmp_path)
    (base / "val" / "images" / "val_1.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetCorruptError, match="cannot decode image"):
        get_dataset("tinyimagenet", "test", data_dir=tmp_path)
    (base / "val" / "val_annotations.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"val_annotations.txt"):
        get_dataset("tinyimagenet", "test", data_dir=tmp_path)
    (base / "wnids.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"wnids.txt.*tiny-imagenet-200.zip"):
        get_dataset("tinyimagenet", "train", data_dir=tmp_path)


def test_digits_fixed_split() -> None:
    train, test = get_dataset("digits", "train"), get_dataset("digits", "test")
    assert (len(train), len(test)) == (1347, 450)
    assert train.images.shape[1:] == (1, 8, 8) and int(train.images.max()) == 255
    assert torch.equal(get_dataset("digits", "test").labels, test.labels)
    assert sorted(set(test.labels.tolist())) == list(range(10))
    assert train.augmentation is None  # no augmentation for 8×8 digits


def test_builtin_fmnist_subset_is_balanced_and_small() -> None:
    path = fmnist_subset_path()
    assert path.is_file() and path.stat().st_size < 3_000_000
    with np.load(path, allow_pickle=False) as npz:
        assert {"train_images", "test_images", "train_indices", "test_indices"} <= set(npz.files)
    for split, n in (("train", 1000), ("test", 2000)):
        ds = get_dataset("fashion-mnist-mini", split)
        assert len(ds) == n and ds.images.dtype == torch.uint8 and ds.input_shape == (1, 28, 28)
        assert ds.labels.bincount(minlength=10).tolist() == [n // 10] * 10


# ---------------------------------------------------------------------------------------------------------
# Augmentation, loader, registry
# ---------------------------------------------------------------------------------------------------------


def test_augmentation_crop_and_flip() -> None:
    img = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).reshape(2, 3, 6, 6).to(torch.uint8)
    out = Augmentation(crop_padding=2)(img, torch.Generator().manual_seed(0))
    assert out.shape == img.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(img, (2, 2, 2, 2))
    for n in range(2):  # every output is a 6×6 window of the zero-padded image, same offset for all channels
        windows = [padded[n, :, i : i + 6, j : j + 6] for i in range(5) for j in range(5)]
        assert any(torch.equal(out[n], w) for w in windows)
    flipped = Augmentation(hflip=True)(img.repeat(32, 1, 1, 1), torch.Generator().manual_seed(1))
    kinds = {torch.equal(f, img[k % 2].flip(-1)) for k, f in enumerate(flipped)}
    assert kinds == {True, False}  # some flipped, some not
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    aug = AUGMENTATIONS["cifar10"]
    assert torch.equal(aug(img, g1), aug(img, g2))
    assert "flip" not in AUGMENTATIONS["mnist"].describe() and AUGMENTATIONS["fashion-mnist"].hflip


def test_batched_fetch_matches_items_and_loader_seeding() -> None:
    ds = get_dataset("digits", "test")
    loader = make_loader(ds, batch_size=64, shuffle=False)
    x, y = next(iter(loader))
    assert x.shape == (64, 1, 8, 8) and y.dtype == torch.int64
    assert torch.equal(x[5], ds[5][0]) and int(y[5]) == ds[5][1]
    order = [torch.cat([b[1] for b in make_loader(ds, 50, shuffle=True, seed=s)]) for s in (1, 1, 2)]
    assert torch.equal(order[0], order[1]) and not torch.equal(order[0], order[2])
    default = torch.utils.data.DataLoader(ds, batch_size=8)  # default collate works too
    xb, yb = next(iter(default))
    assert torch.equal(xb, x[:8]) and torch.equal(yb, y[:8])
    aug_ds = get_dataset("fashion-mnist-mini", "train")
    torch.manual_seed(3)
    a = next(iter(make_loader(aug_ds, 16)))[0]
    torch.manual_seed(3)
    b = next(iter(make_loader(aug_ds, 16)))[0]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        make_loader(ds, 0)


def test_registry_metadata_and_errors() -> None:
    names = [i.name for i in list_datasets()]
    assert {
        "fashion-mnist",
        "fashion-mnist-mini",
        "mnist",
        "cifar10",
        "cifar100",
        "tinyimagenet",
        "digits",
    } <= set(names)
    info = dataset_info("FMNIST")
    assert info.name == "fashion-mnist" and info.num_classes == 10 and info.input_shape == (1, 28, 28)
    assert info.default_dir == "/usr/share/datasets/fashion-mnist"
    assert dataset_info("tiny-imagenet").num_classes == 200 and len(dataset_info("cifar10").mean) == 3
    assert info.as_dict()["augmentation"] == "random crop (pad 2) + horizontal flip"
    with pytest.raises(KeyError, match="unknown dataset 'imagenet'"):
        get_dataset("imagenet")
    with pytest.raises(ValueError, match="split must be one of"):
        get_dataset("digits", "val")


def test_shipped_digits_equal_scikit_learns_split_and_need_no_sklearn_at_run_time(tmp_path: Path) -> None:
    """The built-in digits.npz holds exactly scikit-learn's digits with the documented split; the runtime loader
    does not import scikit-learn, and a damaged file is refused with the file named."""
    import importlib.util
    import subprocess
    import sys

    from xbarlab.data.errors import DatasetCorruptError
    from xbarlab.data.small import digits_path, load_digits_split

    spec = importlib.util.spec_from_file_location(
        "make_digits_npz", Path(__file__).resolve().parents[1] / "scripts" / "make_digits_npz.py"
    )
    assert spec is not None and spec.loader is not None
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    expected = make.digits_arrays()
    for split in ("train", "test"):
        images, labels = load_digits_split(split)
        assert torch.equal(images[:, 0], torch.from_numpy(expected[f"{split}_images"]))
        assert torch.equal(labels, torch.from_numpy(expected[f"{split}_labels"].astype("int64")))
    probe = "import sys, xbarlab.data as d; d.get_dataset('digits', 'test'); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "False\n"
    bad = tmp_path / "digits.npz"
    bad.write_bytes(digits_path().read_bytes()[:1000])
    with pytest.raises(DatasetCorruptError, match=r"digits\.npz"):
        load_digits_split("test", bad)
