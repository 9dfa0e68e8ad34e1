"""Noise-injection training (Joshi et al. 2020): forward-only noise in training mode, σ = η·max|W|, clipping."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from xbarlab.mitigation.noise_injection import NoiseInjection, clip_weights, noise_sigma


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )


def test_noise_only_in_training_mode_and_state_untouched() -> None:
    net = _net()
    x = torch.randn(5, 1, 6, 6)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    params = [id(p) for p in net.parameters()]
    net.eval()
    clean_eval = net(x)
    with NoiseInjection(net, eta=0.1) as ni:
        assert ni.attached and set(ni.layers) == {"0", "4"}
        assert torch.equal(net(x), clean_eval)  # eval mode: bit-identical, no noise
        assert ni.forward_count == 0
        net.train()
        torch.manual_seed(1)
        noisy1 = net(x)
        noisy2 = net(x)
        assert ni.forward_count == 4  # 2 layers x 2 forwards: resampled per forward
        assert not torch.allclose(noisy1, noisy2)
        assert isinstance(net[0].weight, nn.Parameter)  # restored after each forward
        assert [id(p) for p in net.parameters()] == params
    assert list(net.state_dict()) == list(state)
    net.train()
    torch.manual_seed(1)
    plain = net(x)
    assert not torch.allclose(plain, noisy1)
    for k, v in net.state_dict().items():
        if "running" in k or "num_batches" in k:
            continue  # BN statistics move in train mode, as without noise injection
        assert torch.equal(v, state[k]), k
    net.load_state_dict(state)
    net.eval()
    assert torch.equal(net(x), clean_eval)


def test_noise_std_is_eta_times_max_abs_weight() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(300, 200, bias=False)
    eta = 0.05
    sigma = noise_sigma(lin.weight, eta)
    assert sigma == pytest.approx(eta * float(lin.weight.detach().abs().max()))
    lin.train()
    with NoiseInjection(lin, eta=eta, alpha=None, generator=torch.Generator().manual_seed(3)):
        y = lin(torch.eye(300))  # = (W + δW)^T
    delta = y.detach().T - lin.weight.detach()
    assert float(delta.mean()) == pytest.approx(0.0, abs=0.02 * sigma)
    assert float(delta.std()) == pytest.approx(sigma, rel=0.02)


def test_gradient_taken_at_noisy_point_and_applied_to_clean_weights() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 4, bias=False)
    x = torch.randn(8, 6)
    w0 = lin.weight.detach().clone()
    with NoiseInjection(lin, eta=0.2, alpha=None, generator=torch.Generator().manual_seed(7)):
        loss = (lin(x) ** 2).sum()
        loss.backward()
    noise = 0.2 * float(w0.abs().max()) * torch.randn(w0.shape, generator=torch.Generator().manual_seed(7))
    w = (w0 + noise).requires_grad_(True)
    ((x @ w.T) ** 2).sum().backward()
    assert lin.weight.grad is not None and w.grad is not None
    assert torch.allclose(lin.weight.grad, w.grad, atol=1e-6)
    assert torch.equal(lin.weight.detach(), w0)  # the stored weights are the clean ones


def test_hooks_restore_the_parameter_when_forward_raises() -> None:
    net = _net().train()
    with NoiseInjection(net, eta=0.1), pytest.raises(RuntimeError):
        net(torch.randn(2, 3, 6, 6))  # wrong channel count
    assert isinstance(net[0].weight, nn.Parameter) and "weight" in net[0]._parameters


def test_clipping_to_alpha_std() -> None:
    lin = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0, 0.0, 4.0]]))
    std = float(lin.weight.detach().std())  # 2.1602
    assert std == pytest.approx(2.160247, rel=1e-5)
    changed = clip_weights([lin], alpha=1.0)
    assert changed == 1
    assert lin.weight.detach().tolist()[0] == pytest.approx([1.0, -1.0, 0.0, std], rel=1e-6)


def test_include_exclude_and_errors() -> None:
    net = _net()
    assert set(NoiseInjection(net, exclude=["4"]).layers) == {"0"}
    with pytest.raises(ValueError, match="eta"):
        NoiseInjection(net, eta=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        NoiseInjection(net, alpha=0.0)
    with pytest.raises(ValueError, match="no Conv/Linear"):
        NoiseInjection(net, include=["nothing*"])


def test_with_training_loop_clips_every_step() -> None:
    from xbarlab.data import ImageDataset
    from xbarlab.training import TrainConfig, train

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 1, 6, 6), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 3, (32,), generator=g)
    ds = ImageDataset(images, labels, mean=(0.5,), std=(0.25,))
    net = _net()
    ni = NoiseInjection(net, eta=0.05, alpha=1.5).attach()
    cb = ni.callback()
    res = train(net, ds, None, TrainConfig(epochs=1, batch_size=8, lr=0.05), callbacks=[cb], progress=False)
    ni.detach()
    assert len(res.history) == 1 and ni.forward_count == 8  # 4 steps x 2 layers
    for layer in (net[0], net[4]):
        w = layer.weight.detach()
        assert float(w.abs().max()) <= 1.5 * float(w.std()) * 1.05  # clipped after the last step
    assert cb.clipped > 0


class _Attn(nn.Module):
    """A bare ``nn.MultiheadAttention`` (packed or separate q/k/v weights) followed by a Linear head."""

    def __init__(self, kdim: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.attn = nn.MultiheadAttention(64, 4, batch_first=True, kdim=kdim, vdim=kdim)
        self.head = nn.Linear(64, 3)

    def forward(self, x: Tensor, kv: Tensor) -> Tensor:
        return self.head(self.attn(x, kv, kv, need_weights=False)[0])


def _seen_weights(model: _Attn) -> dict[str, Tensor]:
    """A pre-hook registered after the injection's: the weights the attention's forward reads."""
    seen: dict[str, Tensor] = {}

    def grab(module: nn.Module, args: object) -> None:
        for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            w = getattr(module, name, None)
            if w is not None:
                seen[name] = w.detach().clone()
        seen["out_proj"] = module.out_proj.weight.detach().clone()

    model.attn.register_forward_pre_hook(grab)
    return seen


@pytest.mark.parametrize("kdim", [None, 32])
def test_attention_projections_noised_with_stated_sigma(kdim: int | None) -> None:
    model = _Attn(kdim).train()
    x, kv = torch.randn(2, 5, 64), torch.randn(2, 7, kdim or 64)
    ni = NoiseInjection(model, eta=0.05, alpha=1.5).attach()
    packed = kdim is None
    parts = ["in_proj"] if packed else ["q_proj", "k_proj", "v_proj"]
    assert list(ni.layers) == [*(f"attn.{p}" for p in parts), "attn.out_proj", "head"]
    seen = _seen_weights(model)
    clean = {
        **{p: getattr(model.attn, f"{p}_weight").detach().clone() for p in parts},
        "out_proj": model.attn.out_proj.weight.detach().clone(),
    }
    torch.manual_seed(3)
    model(x, kv).sum().backward()
    for p, w in clean.items():
        delta = seen[f"{p}_weight" if p != "out_proj" else p] - w
        n = delta.numel()
        ratio = float(delta.std()) / (0.05 * float(w.abs().max()))
        assert abs(ratio - 1.0) < 5.0 / (2 * n) ** 0.5, (p, ratio, n)  # std of a sample std: sigma/sqrt(2n)
        assert abs(float(delta.mean())) < 5.0 * 0.05 * float(w.abs().max()) / n**0.5
    # the clean parameters are stored and get the gradient; clipping covers the in-projection too
    for p in parts:
        param = getattr(model.attn, f"{p}_weight")
        assert isinstance(param, nn.Parameter) and param.grad is not None
        assert torch.equal(param.detach(), clean[p])
    first = getattr(model.attn, f"{parts[0]}_weight")
    bound = 1.5 * float(first.detach().std())
    assert ni.clip_weights() > 0  # xavier-uniform init: max|W| = 1.73 std > 1.5 std
    assert float(first.detach().abs().max()) == pytest.approx(bound, rel=1e-6)
    ni.detach()
    model.eval()
    with torch.no_grad():
        ref = model(x, kv)
    with NoiseInjection(model, eta=0.05), torch.no_grad():
        assert torch.equal(model(x, kv), ref)  # eval mode: no noise
