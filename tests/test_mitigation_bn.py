"""BN adaptation, online BN and BN fine-tuning on a small CNN trained on sklearn digits."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from xbarlab.mitigation import (
    adabs_momentum,
    adapt_bn,
    bn_modules,
    finetune_bn,
    online_bn,
    restore_bn_state,
    snapshot_bn_state,
)

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(16 * 4 * 4, 10),
    )


def batches(x: torch.Tensor, y: torch.Tensor, size: int, *, seed: int | None = None) -> Batches:
    idx = (
        torch.arange(len(x)) if seed is None else torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    )
    return [(x[idx[i : i + size]], y[idx[i : i + size]]) for i in range(0, len(x), size)]


def accuracy(model: nn.Module, data: Batches) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in data)
    return 100.0 * correct / sum(len(y) for _, y in data)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded (and the CI machine's 2 cores are shared)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def digits() -> dict[str, object]:
    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    x_tr, y_tr, x_te, y_te = x[:1400], y[:1400], x[1400:], y[1400:]
    model = make_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for epoch in range(8):
        model.train()
        for xb, yb in batches(x_tr, y_tr, 64, seed=epoch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
    train = batches(x_tr, y_tr, 64, seed=100)
    test = batches(x_te, y_te, 200)
    return {"model": model, "train": train, "test": test, "clean": accuracy(model, test)}


def scaled_chip(model: nn.Module, factor: float = 0.3) -> nn.Module:
    """A "chip" whose analog (conv) layers compute with globally scaled weights."""
    chip = copy.deepcopy(model)
    with torch.no_grad():
        for m in chip.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(factor)
    return chip


def params_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_adabs_momentum() -> None:
    assert adabs_momentum(13) == pytest.approx(1 - 0.015 ** (1 / 13))
    assert adabs_momentum(13) == pytest.approx(0.276, abs=5e-4)
    assert adabs_momentum(26) == pytest.approx(0.149, abs=5e-4)
    assert adabs_momentum(1) == pytest.approx(0.985)
    with pytest.raises(ValueError, match="n"):
        adabs_momentum(0)


def test_adapt_bn_restores_accuracy_under_global_scaling(digits: dict) -> None:
    clean = digits["clean"]
    assert clean > 92.0
    chip = scaled_chip(digits["model"])
    chip.eval()
    unmitigated = accuracy(chip, digits["test"])
    assert unmitigated < clean - 20.0
    bn_before = {n: (bn.weight.clone(), bn.bias.clone()) for n, bn in bn_modules(chip)}
    params_before = params_copy(chip)
    chip[1].momentum = 0.05  # a non-default momentum must come back
    res = adapt_bn(chip, digits["train"], num_batches=20)
    assert res.num_batches == 20 and res.num_images == 20 * 64
    assert res.momentum is None and res.reset
    assert res.num_bn_modules == 2 and res.num_bn_skipped == 0
    assert res.wall_time_s > 0
    adapted = accuracy(chip, digits["test"])
    assert abs(adapted - clean) <= 1.5
    # never touches γ/β or any weight
    for name, p in chip.named_parameters():
        assert torch.equal(p, params_before[name]), name
    for n, bn in bn_modules(chip):
        assert torch.equal(bn.weight, bn_before[n][0]) and torch.equal(bn.bias, bn_before[n][1])
    assert chip[1].momentum == 0.05 and chip[4].momentum == 0.1
    assert int(chip[1].num_batches_tracked) == 20  # cumulative average over exactly 20 batches


def test_adapt_bn_modes_and_inputs(digits: dict) -> None:
    chip = scaled_chip(digits["model"])
    chip.train()  # original flags: all True
    seen: list[tuple[bool, bool, bool, float | None]] = []

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        seen.append((chip[1].training, chip[0].training, chip[8].training, chip[1].momentum))

    h = chip[0].register_forward_pre_hook(hook)
    xs_only = [x for x, _ in digits["train"][:3]]  # loaders may yield x only
    res = adapt_bn(chip, xs_only, num_batches=20)
    h.remove()
    assert res.num_batches == 3 and res.num_images == 3 * 64  # loader ran out before num_batches
    assert seen == [(True, False, False, None)] * 3  # BN train, conv eval, dropout eval, cumulative average
    assert all(m.training for m in chip.modules())  # restored
    # AdaBS: exponential momentum, starting from the pre-trained statistics (no reset by default)
    chip2 = scaled_chip(digits["model"])
    mean0 = chip2[1].running_mean.clone()
    mom = adabs_momentum(2)
    res2 = adapt_bn(chip2, digits["train"], num_batches=2, momentum=mom)
    assert res2.momentum == pytest.approx(mom) and not res2.reset
    assert not torch.equal(chip2[1].running_mean, mean0)
    assert chip2[1].momentum == 0.1
    with pytest.raises(ValueError, match="momentum"):
        adapt_bn(chip2, digits["train"], momentum=1.5)
    with pytest.raises(ValueError, match="num_batches"):
        adapt_bn(chip2, digits["train"], num_batches=0)
    with pytest.raises(ValueError, match="no batches"):
        adapt_bn(chip2, [], num_batches=2)


class FailingLoader:
    """Yields ``n_ok`` batches, then raises."""

    def __init__(self, data: Batches, n_ok: int) -> None:
        self.data = data
        self.n_ok = n_ok

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i, b in enumerate(self.data):
            if i >= self.n_ok:
                raise RuntimeError("loader failed")
            yield b


def test_adapt_bn_exception_restores_everything(digits: dict) -> None:
    chip = scaled_chip(digits["model"])
    chip.eval()
    chip[4].train()
    chip[1].momentum = 0.3
    flags = [m.training for m in chip.modules()]
    snap = snapshot_bn_state(chip)
    with pytest.raises(RuntimeError, match="loader failed"):
        adapt_bn(chip, FailingLoader(digits["train"], 3))
    assert [m.training for m in chip.modules()] == flags
    assert chip[1].momentum == 0.3 and chip[4].momentum == 0.1
    for name, bn in bn_modules(chip):
        assert torch.equal(bn.running_mean, snap[name].running_mean)
        assert torch.equal(bn.running_var, snap[name].running_var)
        assert torch.equal(bn.num_batches_tracked, snap[name].num_batches_tracked)


def test_online_bn_uses_batch_statistics_and_keeps_running_stats(digits: dict) -> None:
    chip = scaled_chip(digits["model"])
    chip.eval()
    snap = snapshot_bn_state(chip)
    x, _ = digits["test"][0]
    with torch.no_grad(), online_bn(chip):
        assert chip[1].training and not chip[0].training and not chip[8].training
        out = chip(x)
        # reference: the first BN's output equals batch-statistics normalisation
        z = chip[0](x)
        ref = nn.functional.batch_norm(z, None, None, chip[1].weight, chip[1].bias, True, 0.0, chip[1].eps)
        assert torch.allclose(chip[1](z), ref, atol=1e-6)
    for name, bn in bn_modules(chip):
        assert torch.equal(bn.running_mean, snap[name].running_mean)
        assert torch.equal(bn.running_var, snap[name].running_var)
        assert torch.equal(bn.num_batches_tracked, snap[name].num_batches_tracked)
        assert bn.track_running_stats
    assert not any(m.training for m in chip.modules())
    with torch.no_grad():
        assert not torch.allclose(out, chip(x))  # eval mode uses the (stale) running statistics
    # online BN also mitigates the global scaling, batch size 200
    with torch.no_grad(), online_bn(chip):
        online_acc = 100.0 * sum(int((chip(xb).argmax(1) == yb).sum()) for xb, yb in digits["test"]) / 397
    assert online_acc > digits["clean"] - 3.0
    # an evaluation loop that calls model.eval() inside the block still normalises online
    from xbarlab.evaluation import accuracy

    with online_bn(chip):
        assert accuracy(chip, digits["test"]) == pytest.approx(online_acc)
    assert accuracy(chip, digits["test"]) < online_acc - 10.0
    with pytest.raises(RuntimeError, match="inside"), online_bn(chip):
        raise RuntimeError("inside")
    assert not any(m.training for m in chip.modules()) and chip[1].track_running_stats
    assert torch.equal(chip[1].running_mean, snap["1"].running_mean)


def test_finetune_bn_changes_only_gamma_beta(digits: dict) -> None:
    torch.manual_seed(1)
    chip = scaled_chip(digits["model"])
    with torch.no_grad():  # plus per-weight noise, so that adaptation alone is not exact
        for m in chip.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(1 + 0.3 * torch.randn_like(m.weight))
    chip.eval()
    before = params_copy(chip)
    res = finetune_bn(chip, digits["train"][:10], progress=False)
    assert res.epochs == 5 and res.epoch_lr == pytest.approx([0.01, 0.01, 0.002, 0.002, 0.0004])
    assert res.samples_used == 640 and res.samples_seen == 5 * 640 and res.steps == 5 * 10
    assert res.adapt is not None and res.adapt.num_batches == 10
    assert res.num_trainable == 2 * (8 + 16)
    assert len(res.epoch_loss) == 5 and res.epoch_loss[-1] < res.epoch_loss[0] + 0.05
    for name, p in chip.named_parameters():
        is_bn_affine = name.split(".")[0] in ("1", "4")
        if is_bn_affine:
            assert not torch.equal(p, before[name]), name  # γ/β of both BNs trained (gradient reaches BN 1)
        else:
            assert torch.equal(p, before[name]), name
        assert p.requires_grad and p.grad is None
    assert not any(m.training for m in chip.modules())
    assert chip[1].momentum == 0.1
    assert accuracy(chip, digits["test"]) > digits["clean"] - 3.0


def test_finetune_bn_exception_restores_flags(digits: dict) -> None:
    chip = scaled_chip(digits["model"])
    chip.train()
    chip[8].eval()
    chip[0].weight.requires_grad_(False)
    chip[4].bias.requires_grad_(False)
    chip[4].momentum = None
    flags = [m.training for m in chip.modules()]
    grads = {n: p.requires_grad for n, p in chip.named_parameters()}
    snap = snapshot_bn_state(chip)
    data = digits["train"][:4]
    # fails in the second epoch (start_from_adapted=False: the loader is read once per epoch)
    with pytest.raises(RuntimeError, match="loader failed"):
        finetune_bn(chip, FailingLoader(data * 2, 6), start_from_adapted=False, progress=False, epochs=3)
    assert [m.training for m in chip.modules()] == flags
    assert {n: p.requires_grad for n, p in chip.named_parameters()} == grads
    assert chip[4].momentum is None and chip[1].momentum == 0.1
    for name, bn in bn_modules(chip):  # BN state rolled back
        assert torch.equal(bn.weight, snap[name].weight) and torch.equal(bn.running_mean, snap[name].running_mean)


def test_finetune_bn_few_shot_counts(digits: dict) -> None:
    chip = scaled_chip(digits["model"])
    seen: list[int] = []
    h = chip[0].register_forward_pre_hook(lambda m, inp: seen.append(int(inp[0].shape[0])))
    res = finetune_bn(chip, digits["train"], max_samples=100, epochs=3, start_from_adapted=False, progress=False)
    h.remove()
    assert res.samples_used == 100 and res.samples_seen == 300 and res.steps == 3 * 2
    assert seen == [64, 36] * 3
    # with adaptation first: its batches are separate and not counted as labelled samples
    seen.clear()
    h = chip[0].register_forward_pre_hook(lambda m, inp: seen.append(int(inp[0].shape[0])))
    res = finetune_bn(chip, digits["train"], max_samples=10, epochs=1, adapt_batches=2, progress=False)
    h.remove()
    assert res.samples_used == 10 and res.adapt is not None and res.adapt.num_images == 128
    assert seen == [64, 64, 10]


def test_finetune_bn_validation(digits: dict) -> None:
    with pytest.raises(ValueError, match="no affine BatchNorm"):
        finetune_bn(nn.Sequential(nn.Linear(2, 2)), [(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))])
    chip = scaled_chip(digits["model"])
    with pytest.raises(ValueError, match="max_samples"):
        finetune_bn(chip, digits["train"], max_samples=0)
    with pytest.raises(ValueError, match="lr"):
        finetune_bn(chip, digits["train"], lr=-1.0)
    with pytest.raises(TypeError, match="labelled"):
        finetune_bn(chip, [x for x, _ in digits["train"]], start_from_adapted=False, progress=False)


def test_snapshot_restore_and_other_bn_types() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 8),
        nn.BatchNorm1d(8),
        nn.BatchNorm1d(8, track_running_stats=False),
        nn.Linear(8, 3),
    )
    snap = snapshot_bn_state(model)
    res = adapt_bn(model, [torch.randn(16, 4) + 3 for _ in range(4)])
    assert res.num_bn_modules == 1 and res.num_bn_skipped == 1
    assert not torch.equal(model[1].running_mean, snap["1"].running_mean)
    with torch.no_grad():
        model[1].weight.add_(1.0)
    restore_bn_state(model, snap)
    assert torch.equal(model[1].running_mean, snap["1"].running_mean)
    assert torch.equal(model[1].weight, snap["1"].weight)
    assert model[2].running_mean is None
    with pytest.raises(ValueError, match="differ"):
        restore_bn_state(nn.Sequential(nn.BatchNorm1d(8)), snap)
