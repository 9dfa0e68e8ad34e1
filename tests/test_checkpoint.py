"""Checkpoints: safetensors + JSON round trip, corruption and mismatch errors, generic state, pretrained."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from xbarlab.checkpoint import (
    CheckpointError,
    CheckpointNotFoundError,
    checkpoint_paths,
    list_pretrained,
    load_checkpoint,
    load_pretrained,
    load_state,
    pretrained_dir,
    rehash,
    save_checkpoint,
    save_state,
)
from xbarlab.cli import main
from xbarlab.models import build_model

SRC = Path(__file__).resolve().parents[1] / "src" / "xbarlab"


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("resnet20", {"in_channels": 1, "width": 0.5}, (3, 1, 28, 28)),
        ("vgg-small", {"width": 0.5}, (3, 1, 28, 28)),
        ("lenet5", {"batch_norm": True}, (3, 1, 28, 28)),
        ("vgg16-bn", {"width": 0.125}, (3, 3, 32, 32)),
        ("resnet18", {"width": 0.125, "num_classes": 7}, (3, 3, 64, 64)),
    ],
)
def test_round_trip_identical_outputs(tmp_path: Path, name: str, kwargs: dict[str, object], shape: tuple) -> None:
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    model.train()
    model(torch.randn(8, *shape[1:]))  # update BN running statistics so buffers matter
    model.eval()
    path = save_checkpoint(model, tmp_path / "ckpt", {"dataset": "fashion-mnist", "test_accuracy": 0.5})
    assert path == tmp_path / "ckpt.safetensors" and (tmp_path / "ckpt.json").is_file()
    loaded, meta = load_checkpoint(tmp_path / "ckpt.json")
    x = torch.randn(*shape)
    assert torch.equal(loaded(x), model(x))
    assert not loaded.training
    assert meta["model"] == name and meta["model_kwargs"] == model.xbarlab_model_kwargs
    assert meta["dataset"] == "fashion-mnist" and meta["xbarlab_version"] and meta["format"] == "xbarlab-checkpoint"


def test_float32_storage_and_explicit_metadata(tmp_path: Path) -> None:
    model = build_model("lenet5").double()
    save_checkpoint(model, tmp_path / "m")
    loaded, _ = load_checkpoint(tmp_path / "m")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    plain = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match="needs 'model' and 'model_kwargs'"):
        save_checkpoint(plain, tmp_path / "p")


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    model = build_model("lenet5")
    save_checkpoint(model, tmp_path / "c")
    st, js = checkpoint_paths(tmp_path / "c")
    with pytest.raises(CheckpointNotFoundError, match=r"nope\.json"):
        load_checkpoint(tmp_path / "nope")
    data = bytearray(st.read_bytes())
    data[-10] ^= 0xFF
    st.write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError, match=r"c\.safetensors: weights_sha256: [0-9a-f]{64} does not match the SHA-256"
    ):
        load_checkpoint(tmp_path / "c")
    st.write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="corrupt safetensors file"):  # rehash blesses no unreadable file
        rehash(tmp_path / "c", force=True)
    meta = json.loads(js.read_text())
    meta["weights_sha256"] = hashlib.sha256(b"\x00" * 20).hexdigest()
    js.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="corrupt safetensors file"):
        load_checkpoint(tmp_path / "c")
    js.write_text("{ not json")
    with pytest.raises(CheckpointError, match="corrupt checkpoint metadata"):
        load_checkpoint(tmp_path / "c")
    st.unlink()
    with pytest.raises(CheckpointNotFoundError, match=r"c\.safetensors"):
        load_checkpoint(tmp_path / "c")


def test_mismatched_architecture(tmp_path: Path) -> None:
    save_checkpoint(build_model("resnet20", width=0.5), tmp_path / "r")
    js = tmp_path / "r.json"
    meta = json.loads(js.read_text())
    meta["model_kwargs"]["width"] = 1.0
    js.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"does not match the architecture: shape mismatch: conv1.weight"):
        load_checkpoint(tmp_path / "r")
    meta["model"] = "lenet5"
    meta["model_kwargs"] = {}
    js.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"missing .* tensor"):
        load_checkpoint(tmp_path / "r")
    meta["model"] = "alexnet"
    js.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="cannot rebuild model 'alexnet'"):
        load_checkpoint(tmp_path / "r")


def test_generic_state_round_trip_with_optimizer(tmp_path: Path) -> None:
    model = build_model("lenet5", width=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    opt.step()
    state = {
        "optimizer": opt.state_dict(),
        "rng": torch.get_rng_state(),
        "pair": (1, 2.5),
        "epoch": 3,
        "none": None,
    }
    save_state(tmp_path / "s", state)
    back = load_state(tmp_path / "s")
    assert back["pair"] == (1, 2.5) and back["epoch"] == 3 and back["none"] is None
    assert torch.equal(back["rng"], state["rng"])
    assert set(back["optimizer"]["state"]) == set(state["optimizer"]["state"])  # int keys preserved
    for k, v in state["optimizer"]["state"].items():
        assert torch.equal(back["optimizer"]["state"][k]["momentum_buffer"], v["momentum_buffer"])
    opt2 = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.param_groups[0]["lr"] == 0.1 and opt2.param_groups[0]["weight_decay"] == 1e-4
    with pytest.raises(TypeError, match="cannot store a value of type object"):
        save_state(tmp_path / "bad", {"x": object()})
    with pytest.raises(CheckpointError, match="'format' is 'xbarlab-state', expected 'xbarlab-checkpoint'"):
        load_checkpoint(tmp_path / "s")


def test_no_pickle_or_torch_load_in_checkpoint_code() -> None:
    for rel in ("checkpoint.py", "training.py"):
        text = (SRC / rel).read_text()
        assert not re.search(r"torch\.load\(|import pickle|pickle\.load", text), rel


def test_pretrained_models() -> None:
    names = list_pretrained()
    with pytest.raises(CheckpointNotFoundError, match=r"unknown pre-trained model|no pre-trained model"):
        load_pretrained("alexnet-imagenet")
    assert {"resnet20-fmnist", "vgg-small-fmnist", "lenet5-fmnist"} <= set(names)
    from xbarlab.data import get_dataset
    from xbarlab.training import evaluate

    test = get_dataset("fashion-mnist-mini", "test")
    for name in names:
        model, meta = load_pretrained(name)
        assert meta["dataset"] == "fashion-mnist" and meta["test_accuracy"] >= (
            0.89 if "lenet5" in name else 0.90 if "vit-tiny" in name else 0.92
        )
        assert (SRC / "assets" / "pretrained" / f"{meta['model']}_fashion-mnist.safetensors").stat().st_size < 5e6
        _, acc = evaluate(model, test.subset(range(0, 2000, 4)))
        assert acc >= 0.85, name


def _flip_last_weight_byte(st: Path) -> None:
    data = bytearray(st.read_bytes())
    data[-3] ^= 0x40  # one mantissa bit of the last float32 value: a wrong weight, not an unreadable file
    st.write_bytes(bytes(data))


def test_checkpoint_without_hash_is_refused_until_rehashed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("lenet5", width=0.5).eval()
    save_checkpoint(model, tmp_path / "c")
    _, js = checkpoint_paths(tmp_path / "c")
    meta = json.loads(js.read_text())
    recorded = meta.pop("weights_sha256")
    js.write_text(json.dumps(meta))
    expected = (
        f"{js}: no weights_sha256; the weights cannot be verified. If you trust the file, re-hash it with "
        f"`xbarlab rehash {js}`"
    )
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "c")
    assert str(info.value) == expected
    assert rehash(tmp_path / "c") == recorded  # the trusted file gets its hash back
    loaded, meta = load_checkpoint(tmp_path / "c")
    x = torch.randn(2, 1, 28, 28)
    assert meta["weights_sha256"] == recorded and torch.equal(loaded(x), model(x))
    assert rehash(tmp_path / "c.json") == recorded  # idempotent


def test_flipped_weight_bytes_without_a_hash_never_load(tmp_path: Path) -> None:
    save_checkpoint(build_model("lenet5", width=0.5), tmp_path / "c")
    st, js = checkpoint_paths(tmp_path / "c")
    _flip_last_weight_byte(st)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(st))}: weights_sha256: .* does not match"):
        load_checkpoint(tmp_path / "c")
    meta = json.loads(js.read_text())
    del meta["weights_sha256"]
    js.write_text(json.dumps(meta))  # used to skip the check and load the wrong weights
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(js))}: no weights_sha256"):
        load_checkpoint(tmp_path / "c")


def test_rehash_does_not_overwrite_a_differing_hash_without_force(tmp_path: Path) -> None:
    save_checkpoint(build_model("lenet5", width=0.5), tmp_path / "c")
    st, js = checkpoint_paths(tmp_path / "c")
    old = json.loads(js.read_text())["weights_sha256"]
    _flip_last_weight_byte(st)
    with pytest.raises(CheckpointError, match=r"weights_sha256: recorded .* \(the weights changed since"):
        rehash(tmp_path / "c")
    assert json.loads(js.read_text())["weights_sha256"] == old
    new = rehash(tmp_path / "c", force=True)
    assert new != old and new == hashlib.sha256(st.read_bytes()).hexdigest()
    load_checkpoint(tmp_path / "c")


def test_rehash_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_state(tmp_path / "s", {"epoch": 2, "w": torch.ones(3)})
    st, js = checkpoint_paths(tmp_path / "s")
    meta = json.loads(js.read_text())
    sha = meta.pop("weights_sha256")
    js.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(js))}: no weights_sha256.*xbarlab rehash"):
        load_state(tmp_path / "s")
    main(["rehash", str(tmp_path / "s")])
    assert capsys.readouterr().out.strip() == f"{js}: recorded SHA-256 {sha}"
    assert load_state(tmp_path / "s")["epoch"] == 2
    _flip_last_weight_byte(st)
    with pytest.raises(SystemExit) as exit_info:
        main(["rehash", str(tmp_path / "s")])
    err = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and err[0].startswith(f"error: {js}: weights_sha256: recorded {sha}")
    main(["rehash", "--force", str(tmp_path / "s")])
    assert load_state(tmp_path / "s")["w"].tolist() == [1.0, 1.0, 1.001953125]  # the re-hashed (trusted) bytes


def test_missing_checkpoint_keys_are_one_line(tmp_path: Path) -> None:
    save_checkpoint(build_model("lenet5", width=0.5), tmp_path / "c")
    _, js = checkpoint_paths(tmp_path / "c")
    meta = json.loads(js.read_text())
    for key, pattern in (
        ("model", r"c\.json: model: None; expected a registry model name"),
        ("model_kwargs", r"c\.json: model_kwargs: None; expected an object"),
        ("format_version", r"c\.json: format_version: None; expected 1"),
        ("format", r"c\.json: 'format' is None, expected 'xbarlab-checkpoint'"),
    ):
        js.write_text(json.dumps({k: v for k, v in meta.items() if k != key}))
        with pytest.raises(CheckpointError, match=pattern) as info:
            load_checkpoint(tmp_path / "c")
        assert "\n" not in str(info.value)


def test_every_shipped_pair_records_a_matching_hash() -> None:
    pairs = sorted(pretrained_dir().rglob("*.json"))
    assert len(pairs) >= 5
    for js in pairs:
        meta = json.loads(js.read_text())
        st = js.with_suffix(".safetensors")
        recorded = meta.get("weights_sha256") or meta.get("sha256")
        assert recorded == hashlib.sha256(st.read_bytes()).hexdigest(), js


def test_task_model_without_hash_is_refused_until_rehashed(tmp_path: Path) -> None:
    from xbarlab.papers.p2.segmentation import TinySegNet
    from xbarlab.papers.p2.train_tasks import load_task_model, save_task_model

    torch.manual_seed(0)
    net = TinySegNet(num_classes=3, width=4).eval()
    save_task_model(net, tmp_path / "seg", {"task": "segmenter"})
    js = tmp_path / "seg.json"
    meta = json.loads(js.read_text())
    sha = meta.pop("sha256")
    js.write_text(json.dumps(meta))  # used to skip the check
    with pytest.raises(ValueError, match=rf"{re.escape(str(js))}: no sha256; the weights cannot be verified"):
        load_task_model(tmp_path / "seg")
    assert rehash(tmp_path / "seg") == sha
    loaded, _ = load_task_model(tmp_path / "seg")
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(loaded(x), net(x))
