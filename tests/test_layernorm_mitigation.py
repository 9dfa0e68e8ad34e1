"""LayerNorm γ/β fine-tuning (ln_finetune) and its label-free variant (ln_distill) on a noisy analog ViT.

A tiny ViT (8×8 sklearn digits, 4×4 patches, width 32, one block) is trained in a few seconds, converted with
the FeFET preset (patch embedding, q/k/v/out projections and the MLP analog; classifier digital) at a high read
noise, programmed and calibrated. Checks: only γ/β change (every other parameter and all chip state
bit-identical), the loss decreases, few-shot accuracy improves over no mitigation, same seed → bit-identical,
labels never read by the label-free variant, refusal of a model without LayerNorm, the sweep registration.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import xbarlab
from xbarlab.chip import calibrate, program
from xbarlab.conversion import convert
from xbarlab.experiments.registry import check_options, get_mitigation
from xbarlab.mitigation.layernorm import distill_ln, finetune_ln, ln_modules
from xbarlab.models import build_model

Batches = list[tuple[torch.Tensor, torch.Tensor]]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def task() -> dict[str, Any]:
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    torch.manual_seed(0)
    model = build_model("vit-tiny", image_size=8, patch_size=4, width=0.25, depth=1, heads=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for epoch in range(15):
        model.train()
        order = torch.randperm(1400, generator=torch.Generator().manual_seed(epoch))
        for i in range(0, 1400, 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    train = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 1400, 64)]
    return {"model": model, "train": train, "x_test": x[1400:], "y_test": y[1400:]}


def _acc(net: nn.Module, t: dict[str, Any]) -> float:
    net.eval()
    with torch.no_grad():
        return 100.0 * float((net(t["x_test"]).argmax(1) == t["y_test"]).float().mean())


def _chip(t: dict[str, Any], sigma: float, seed: int, **overrides: Any) -> nn.Module:
    hw = xbarlab.load_preset("fefet").override({"read_noise.sigma": sigma, **overrides})
    return calibrate(program(convert(t["model"], hw), seed), [t["train"][0][0]], num_batches=1).eval()


def _ln_keys(model: nn.Module) -> set[str]:
    return {f"{n}.{p}" for n, _ in ln_modules(model) for p in ("weight", "bias")}


def _run(method: str, chip: nn.Module, t: dict[str, Any], data: Batches | None = None, **kw: Any) -> Any:
    data = t["train"] if data is None else data
    if method == "finetune":
        return finetune_ln(chip, data, max_samples=256, **kw)
    return distill_ln(chip, t["model"], data, max_samples=256, **kw)


def test_the_chip_runs_attention_and_mlp_analog(task: dict[str, Any]) -> None:
    chip = _chip(task, 0.5, 1)
    analog = {r.name for r in chip.xbarlab_report.layers if r.analog}
    assert {"patch_embed", "encoder.layers.0.linear1", "encoder.layers.0.linear2"} <= analog
    assert any("self_attn" in n for n in analog)
    assert _acc(task["model"], task) > 93.0
    assert _acc(chip, task) < _acc(task["model"], task) - 10.0  # the noise matters


@pytest.mark.parametrize("method", ["finetune", "distill"])
def test_only_layernorm_affine_changes_and_loss_decreases(task: dict[str, Any], method: str) -> None:
    chip = _chip(task, 0.5, 1)
    before = {k: v.clone() for k, v in chip.state_dict().items()}
    flags = {n: p.requires_grad for n, p in chip.named_parameters()}
    teacher_before = {k: v.clone() for k, v in task["model"].state_dict().items()}
    res = _run(method, chip, task)
    assert res.samples_used == 256 and res.steps == 5 * 4 and res.samples_seen == 5 * 256
    assert res.epoch_lr == pytest.approx([0.01, 0.01, 0.002, 0.002, 0.0004])
    assert res.epoch_loss[-1] < 0.85 * res.epoch_loss[0]
    after = chip.state_dict()
    changed = {k for k, v in after.items() if not torch.equal(v, before[k])}
    assert changed == _ln_keys(chip)  # every LN γ/β moved, nothing else (analog weights, conductances, ranges)
    assert {n: p.requires_grad for n, p in chip.named_parameters()} == flags
    assert all(p.grad is None for p in chip.parameters())
    assert all(torch.equal(v, teacher_before[k]) for k, v in task["model"].state_dict().items())


@pytest.mark.parametrize("method", ["finetune", "distill"])
def test_few_shot_improves_accuracy_over_none(task: dict[str, Any], method: str) -> None:
    gains = []
    for seed in (1, 2):
        chip = _chip(task, 0.5, seed)
        none = _acc(chip, task)
        _run(method, chip, task)
        gains.append(_acc(chip, task) - none)
    # measured gains 7.6-14.1 points on 397 test images; without the method the gain is exactly 0
    assert min(gains) > 3.0, gains


@pytest.mark.parametrize("method", ["finetune", "distill"])
def test_same_seed_bit_identical_with_per_mvm_noise_and_adc(task: dict[str, Any], method: str) -> None:
    noisy = {"read_noise.mode": "per_mvm", "adc.bits": 8, "adc.noise_lsb": 0.5}
    results = []
    for _ in range(2):
        torch.manual_seed(7)
        chip = _chip(task, 0.3, 3, **noisy)
        res = _run(method, chip, task, epochs=2)
        with torch.no_grad():
            out = chip(task["x_test"][:64])
        results.append((res.epoch_loss, {k: v.clone() for k, v in chip.state_dict().items()}, out))
    (loss_a, state_a, out_a), (loss_b, state_b, out_b) = results
    assert loss_a == loss_b
    assert all(torch.equal(v, state_b[k]) for k, v in state_a.items())
    assert torch.equal(out_a, out_b)


def test_distill_never_reads_labels(task: dict[str, Any]) -> None:
    shuffled = [(x, torch.roll(y, 1)) for x, y in task["train"]]
    a, b = _chip(task, 0.5, 1), _chip(task, 0.5, 1)
    ra, rb = _run("distill", a, task), _run("distill", b, task, data=shuffled)
    assert ra.epoch_loss == rb.epoch_loss
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    # ... whereas the labelled method does read them
    c, e = _chip(task, 0.5, 1), _chip(task, 0.5, 1)
    assert _run("finetune", c, task).epoch_loss != _run("finetune", e, task, data=shuffled).epoch_loss


def test_refuses_model_without_layernorm_and_bad_options() -> None:
    cnn = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    data = [(torch.zeros(1, 4), torch.zeros(1).long())]
    with pytest.raises(ValueError, match=r"finetune_ln: model Sequential has no nn\.LayerNorm with affine"):
        finetune_ln(cnn, data)
    with pytest.raises(ValueError, match=r"distill_ln: model Sequential has no nn\.LayerNorm"):
        distill_ln(cnn, cnn, data)
    no_affine = nn.Sequential(nn.LayerNorm(4, elementwise_affine=False), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"no nn\.LayerNorm with affine"):
        finetune_ln(no_affine, data)
    with pytest.raises(ValueError, match=r"distill_ln: temperature=0; allowed: > 0"):
        distill_ln(nn.Sequential(nn.LayerNorm(4)), cnn, data, temperature=0)
    with pytest.raises(ValueError, match=r"finetune_ln: max_samples=0; allowed: >= 1 or None"):
        finetune_ln(nn.Sequential(nn.LayerNorm(4)), data, max_samples=0)
    for name in ("ln_finetune", "ln_distill"):  # the sweep mitigation refuses before reading any data
        with pytest.raises(ValueError, match=rf"mitigation '{name}': model Sequential has no nn\.LayerNorm"):
            get_mitigation(name).apply(cnn, None, check_options(name, {}))  # type: ignore[arg-type]


def test_registered_options() -> None:
    ft = check_options("ln_finetune", {"max_samples": 1000})
    assert ft == {
        "epochs": 5,
        "lr": 0.01,
        "lr_step_epochs": 2,
        "lr_gamma": 0.2,
        "momentum": 0.9,
        "batch_size": 128,
        "max_samples": 1000,
        "augment": True,
    }
    assert check_options("ln_distill", {}) == {**ft, "max_samples": None, "temperature": 1.0}
    with pytest.raises(ValueError, match=r"option 'lr' of mitigation 'ln_finetune': invalid value 0; allowed: > 0"):
        check_options("ln_finetune", {"lr": 0})
    with pytest.raises(ValueError, match=r"option 'temperature' of mitigation 'ln_distill'"):
        check_options("ln_distill", {"temperature": -1.0})


def test_sweep_mitigations_apply_with_a_trial_context(task: dict[str, Any], tmp_path: Path) -> None:
    """Through the registry, as a sweep trial runs them: seeded loaders, the trial's digital model as teacher."""
    from xbarlab.checkpoint import save_checkpoint

    save_checkpoint(task["model"], tmp_path / "vit")
    infos = {}
    for name in ("ln_finetune", "ln_distill"):
        chip = _chip(task, 0.5, 1)
        none = _acc(chip, task)
        ctx = SimpleNamespace(
            config={"model": {"checkpoint": str(tmp_path / "vit")}},
            device=torch.device("cpu"),
            train_loader=lambda bs, augment, purpose: [(x[:bs], y[:bs]) for x, y in task["train"]],
        )
        opts = check_options(name, {"max_samples": 256, "batch_size": 64, "augment": False})
        outcome = get_mitigation(name).apply(chip, ctx, opts)  # type: ignore[arg-type]
        assert outcome.evaluation is None
        infos[name] = outcome.info
        assert _acc(chip, task) > none + 3.0
    assert infos["ln_finetune"]["finetune_samples"] == 256 and infos["ln_finetune"]["finetune_steps"] == 20
    assert infos["ln_distill"]["distill_samples"] == 256 and infos["ln_distill"]["distill_steps"] == 20
    assert 0.0 < infos["ln_distill"]["distill_train_acc"] <= 100.0
