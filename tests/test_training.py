"""Training loop: loss decreases, bit-identical resume after interruption, hooks, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from torch import Tensor, nn
from typer.testing import CliRunner

from xbarlab.checkpoint import CheckpointError, load_checkpoint
from xbarlab.cli.train import register
from xbarlab.data import get_dataset
from xbarlab.models import build_model
from xbarlab.training import (
    EpochStats,
    StopTraining,
    TrainCallback,
    TrainConfig,
    cosine_lr,
    evaluate,
    train,
)


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> tuple[object, object]:
    train_set = get_dataset("digits", "train").subset(range(320))
    test_set = get_dataset("digits", "test")
    return train_set, test_set


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("vgg-small", width=0.25)


CONFIG = TrainConfig(epochs=3, batch_size=32, lr=0.05, weight_decay=5e-4, label_smoothing=0.05, seed=7)


def test_training_lowers_loss(digits: tuple[object, object], tmp_path: Path) -> None:
    train_set, test_set = digits
    model = small_model()
    loss0, acc0 = evaluate(model, test_set)  # type: ignore[arg-type]
    result = train(model, train_set, test_set, CONFIG, out_dir=tmp_path, progress=False)  # type: ignore[arg-type]
    assert len(result.history) == 3 and result.test_acc is not None
    assert result.history[-1].test_loss < 0.6 * loss0  # type: ignore[operator]
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.test_acc > max(acc0, 0.6)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["model"] == "vgg-small" and meta["seed"] == 7 and meta["epochs"] == 3
    assert meta["test_accuracy"] == pytest.approx(result.test_acc)
    assert meta["hyperparameters"]["label_smoothing"] == 0.05 and "xbarlab_version" in meta
    loaded, _ = load_checkpoint(tmp_path / "model")
    x = next(iter(torch.utils.data.DataLoader(test_set, batch_size=16)))[0]  # type: ignore[arg-type]
    assert torch.equal(loaded(x), model.eval()(x))


class _Interrupt(TrainCallback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_end(self, model: nn.Module, step: int) -> None:
        if step == self.at_step:
            raise KeyboardInterrupt


def test_resume_after_interruption_is_bit_identical(digits: tuple[object, object], tmp_path: Path) -> None:
    train_set, test_set = digits
    full = train(small_model(), train_set, test_set, CONFIG, out_dir=tmp_path / "a", progress=False)  # type: ignore[arg-type]
    # interrupted in the middle of epoch 2 (10 steps per epoch), then resumed by a fresh process-like call
    with pytest.raises(KeyboardInterrupt):
        train(
            small_model(),
            train_set,
            test_set,
            CONFIG,
            out_dir=tmp_path / "b",
            callbacks=[_Interrupt(15)],
            progress=False,
        )  # type: ignore[arg-type]
    state = json.loads((tmp_path / "b" / "state.json").read_text())
    assert state["state"]["epoch"] == 1 and not (tmp_path / "b" / "model.json").exists()
    fresh = small_model(seed=123)  # different initial weights: everything must come from the state files
    resumed = train(fresh, train_set, test_set, CONFIG, out_dir=tmp_path / "b", progress=False)  # type: ignore[arg-type]
    assert resumed.resumed_from_epoch == 1
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h.test_acc for h in full.history] == [h.test_acc for h in resumed.history]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_resume_rejects_changed_hyperparameters_and_extends_epochs(
    digits: tuple[object, object], tmp_path: Path
) -> None:
    train_set, _ = digits
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.05, seed=1)
    train(small_model(), train_set, None, cfg, out_dir=tmp_path, progress=False)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match=r"lr was 0.05 but is now 0.1"):
        train(
            small_model(),
            train_set,
            None,
            TrainConfig(epochs=1, batch_size=64, lr=0.1, seed=1),
            out_dir=tmp_path,
            progress=False,
        )  # type: ignore[arg-type]
    more = TrainConfig(epochs=2, batch_size=64, lr=0.05, seed=1)
    result = train(small_model(), train_set, None, more, out_dir=tmp_path, progress=False)  # type: ignore[arg-type]
    assert result.resumed_from_epoch == 1 and [h.epoch for h in result.history] == [1, 2]
    fresh = train(small_model(), train_set, None, more, out_dir=tmp_path, resume=False, progress=False)  # type: ignore[arg-type]
    assert fresh.resumed_from_epoch == 0


class _Recorder(TrainCallback):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.epochs: list[EpochStats] = []

    def on_step_end(self, model: nn.Module, step: int) -> None:
        self.steps.append(step)

    def on_epoch_end(self, model: nn.Module, stats: EpochStats) -> None:
        self.epochs.append(stats)
        raise StopTraining


def test_regularizer_forward_fn_and_callbacks(digits: tuple[object, object]) -> None:
    train_set, _ = digits
    calls = {"forward": 0, "reg": 0}

    def forward_fn(model: nn.Module, x: Tensor) -> Tensor:
        calls["forward"] += 1
        return model(x + 0.01 * torch.randn_like(x))  # e.g. noise injection

    def regularizer(model: nn.Module) -> Tensor:
        calls["reg"] += 1
        return 1e-3 * sum(p.pow(2).sum() for p in model.parameters())  # type: ignore[return-value]

    rec = _Recorder()
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05)
    result = train(
        small_model(),
        train_set,
        None,
        cfg,
        forward_fn=forward_fn,
        regularizer=regularizer,
        callbacks=[rec],
        progress=False,  # type: ignore[arg-type]
    )
    assert calls == {"forward": 5, "reg": 5} and rec.steps == [1, 2, 3, 4, 5]
    assert len(result.history) == 1 and result.history[0].regularizer is not None and result.history[0].regularizer > 0


def test_config_validation_and_schedule() -> None:
    with pytest.raises(ValueError, match=r"TrainConfig.momentum must be in"):
        TrainConfig(epochs=1, momentum=1.5)
    with pytest.raises(ValueError, match=r"TrainConfig.epochs must be >= 1"):
        TrainConfig(epochs=0)
    assert cosine_lr(0, 100, 0.1) == pytest.approx(0.1)
    assert cosine_lr(50, 100, 0.1) == pytest.approx(0.05)
    assert cosine_lr(100, 100, 0.1) == pytest.approx(0.0)
    assert cosine_lr(0, 100, 0.1, warmup_steps=10) == pytest.approx(0.01)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            train(small_model(), get_dataset("digits", "test"), None, TrainConfig(epochs=1), device="cuda")


def test_cli_models_datasets_train(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0 and "resnet20" in res.output and "lenet5" in res.output
    res = runner.invoke(app, ["datasets"])
    assert res.exit_code == 0 and "cifar100" in res.output
    out = tmp_path / "run"
    args = ["train", "--model", "vgg-small", "--dataset", "digits", "--epochs", "1", "--width", "0.25"]
    res = runner.invoke(app, [*args, "--out", str(out), "--threads", "1", "--batch-size", "256"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["dataset"] == "digits" and meta["model_kwargs"]["width"] == 0.25 and meta["command"]
    res = runner.invoke(app, ["train", "--model", "lenet5", "--dataset", "mnist", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--data-dir" in res.output
    res = runner.invoke(app, ["train", "--model", "nope", "--dataset", "digits", "--out", str(tmp_path / "y")])
    assert res.exit_code == 2 and "unknown model" in res.output


def test_cli_train_robustness_options(tmp_path: Path) -> None:
    """--lipschitz, --noise-inject/--clip-alpha and --init-from reach the training loop and guard resumption."""
    import torch

    from xbarlab.checkpoint import load_checkpoint

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    base = ["train", "--model", "vgg-small", "--dataset", "digits", "--width", "0.25", "--threads", "1"]
    base += ["--batch-size", "256", "--no-augment"]
    first = tmp_path / "plain"
    res = runner.invoke(app, [*base, "--epochs", "1", "--out", str(first)])
    assert res.exit_code == 0, res.output
    plain, _ = load_checkpoint(first / "model")

    lip = tmp_path / "lip"
    res = runner.invoke(app, [*base, "--epochs", "1", "--out", str(lip), "--lipschitz", "spectral"])
    assert res.exit_code == 0, res.output
    meta = json.loads((lip / "model.json").read_text())
    assert meta["lipschitz"]["kind"] == "spectral" and meta["lipschitz"]["beta"] == 5e-4
    assert meta["history"][0]["regularizer"] is not None and meta["history"][0]["regularizer"] > 0
    # resuming the same directory without the regulariser is refused (the state was trained with it)
    res = runner.invoke(app, [*base, "--epochs", "2", "--out", str(lip)])
    assert res.exit_code == 2 and "cannot resume" in res.output

    ni = tmp_path / "ni"
    args = [*base, "--epochs", "1", "--out", str(ni), "--init-from", str(first / "model"), "--noise-inject", "0.05"]
    res = runner.invoke(app, [*args, "--clip-alpha", "1.5"])
    assert res.exit_code == 0, res.output
    meta = json.loads((ni / "model.json").read_text())
    assert meta["noise_injection"]["eta"] == 0.05 and meta["noise_injection"]["alpha"] == 1.5
    assert meta["init_from"] == str(first / "model")
    tuned, _ = load_checkpoint(ni / "model")
    for name, w in tuned.state_dict().items():  # clipped after the last step: the extreme values form a plateau
        if name.endswith("weight") and w.dim() > 1:
            assert int((w.abs() == w.abs().max()).sum()) >= 2, name
    # fine-tuning started from the first run's weights: one epoch later the model is close to, not equal to, them
    assert not torch.equal(tuned.state_dict()["classifier.weight"], plain.state_dict()["classifier.weight"])

    bad = [
        ([*base, "--out", str(tmp_path / "b1"), "--lipschitz", "frobenius"], "kind"),
        ([*base, "--out", str(tmp_path / "b2"), "--noise-inject", "-1"], "eta"),
        ([*base, "--out", str(tmp_path / "b3"), "--clip-alpha", "2"], "--noise-inject"),
        ([*base, "--out", str(tmp_path / "b4"), "--lipschitz-beta", "0.1"], "lipschitz"),
        ([*base, "--out", str(tmp_path / "b5"), "--init-from", str(tmp_path / "missing")], "missing"),
    ]
    for args, needle in bad:
        res = runner.invoke(app, [*args, "--epochs", "1"])
        assert res.exit_code == 2 and needle in res.output, (args, res.output)
