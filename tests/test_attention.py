"""Analog attention: nn.MultiheadAttention's q/k/v and output projections run on crossbar tiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import xbarlab
from xbarlab.chip import calibrate, program
from xbarlab.conversion import convert
from xbarlab.coverage import CoverageError
from xbarlab.layer_types import AnalogLinear
from xbarlab.layers import analog_layers

TOL = 1e-5
"""ideal == digital to float32 rounding: PyTorch projects a packed in_proj_weight with one (3E, E) GEMM, the
analog model with three (E, E) GEMMs (different blocking, a few ulp); outputs here are O(1)."""

PROJ = ("q_proj", "k_proj", "v_proj", "out_proj")


def _ideal() -> xbarlab.HardwareConfig:
    return xbarlab.load_preset("ideal")


class Wrap(nn.Module):
    """An MHA called with fixed keyword arguments (returns output and weights)."""

    def __init__(self, mha: nn.MultiheadAttention, **kwargs: Any) -> None:
        super().__init__()
        self.attn = mha
        self.kwargs = kwargs

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Any:
        return self.attn(q, k, v, **self.kwargs)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inputs(batch_first: bool, kdim: int, vdim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    lq, ls, n = 4, 6, 3
    shape = (lambda L, d: (n, L, d)) if batch_first else (lambda L, d: (L, n, d))
    return (
        torch.randn(*shape(lq, 8), generator=_gen(1)),
        torch.randn(*shape(ls, kdim), generator=_gen(2)),
        torch.randn(*shape(ls, vdim), generator=_gen(3)),
    )


def _masks() -> dict[str, dict[str, Any]]:
    kpm = torch.zeros(3, 6, dtype=torch.bool)
    kpm[0, 4:] = True
    float_mask = torch.randn(4, 6, generator=_gen(4))
    return {
        "none": {},
        "kpm": {"key_padding_mask": kpm},
        "attn_float": {"attn_mask": float_mask},
        "both_bool": {"attn_mask": torch.rand(4, 6, generator=_gen(5)) > 0.8, "key_padding_mask": kpm},
        "mask3d": {"attn_mask": torch.randn(3 * 2, 4, 6, generator=_gen(6))},
    }


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("dims", [(8, 8), (5, 7)])
@pytest.mark.parametrize("mask", sorted(_masks()))
@pytest.mark.parametrize("need_weights", [True, False])
def test_ideal_mha_equals_digital(batch_first: bool, dims: tuple[int, int], mask: str, need_weights: bool) -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, kdim=dims[0], vdim=dims[1], batch_first=batch_first).eval()
    model = Wrap(mha, need_weights=need_weights, average_attn_weights=False, **_masks()[mask])
    chip = program(convert(model, _ideal()), 0).eval()
    report = {r.name: r for r in chip.xbarlab_report.layers}
    assert {n for n, r in report.items() if r.analog} == {f"attn.{p}" for p in PROJ}
    assert report["attn.k_proj"].weight_shape == (8, dims[0]) and report["attn.v_proj"].weight_shape == (8, dims[1])
    x = _inputs(batch_first, *dims)
    with torch.no_grad():
        y, w = chip(*x)
        ref, ref_w = model(*x)
    assert y.shape == ref.shape and (y - ref).abs().max() < TOL
    if need_weights:
        assert w is not None and w.shape == (3, 2, 4, 6) and (w - ref_w).abs().max() < TOL
    else:
        assert w is None and ref_w is None
    assert {m.layer_name: m.forward_calls for m in analog_layers(chip)} == {f"attn.{p}": 1 for p in PROJ}


def test_causal_unbatched_bias_kv_zero_attn_and_averaged_weights() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, add_bias_kv=True, add_zero_attn=True).eval()
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    chip = program(convert(mha, _ideal()), 0)
    x = torch.randn(5, 8, generator=_gen(7))  # unbatched (L, E)
    with torch.no_grad():
        for kwargs in ({"attn_mask": causal, "is_causal": True, "need_weights": False}, {"attn_mask": causal}):
            y, w = chip(x, x, x, **kwargs)
            ref, ref_w = mha(x, x, x, **kwargs)
            assert (y - ref).abs().max() < TOL
            assert (w is None) == (ref_w is None)
            if ref_w is not None:
                assert w is not None and w.shape == (5, 7) and (w - ref_w).abs().max() < TOL
    rec = {r.name: r for r in chip.xbarlab_report.layers}
    assert not rec["(model)"].analog and "bias_k (1, 1, 8)" in rec["(model)"].reason  # digital, listed


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


def _transformer_models() -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], int]]:
    """name → (digital model, inputs, expected analog-layer count: 4 projections per attention + 2 FF Linears per
    layer; the encoder has 2 layers, the decoder layer 2 attentions, nn.Transformer 1 encoder + 1 decoder layer)."""
    torch.manual_seed(0)
    return {
        "encoder": (_encoder(), (torch.randn(3, 5, 16, generator=_gen(1)),), 2 * (4 + 2)),
        "decoder_layer": (
            nn.TransformerDecoderLayer(16, 2, dim_feedforward=32, dropout=0.0),
            (torch.randn(4, 3, 16, generator=_gen(2)), torch.randn(5, 3, 16, generator=_gen(3))),
            2 * 4 + 2,
        ),
        "transformer": (
            nn.Transformer(16, 2, 1, 1, dim_feedforward=32, dropout=0.0, batch_first=True),
            (torch.randn(3, 5, 16, generator=_gen(4)), torch.randn(3, 4, 16, generator=_gen(5))),
            (4 + 2) + (2 * 4 + 2),
        ),
    }


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", ["encoder", "decoder_layer", "transformer"])
def test_transformer_modules_fully_analog_and_ideal_equal_digital(name: str, train: bool) -> None:
    model, x, expected = _transformer_models()[name]
    chip = program(convert(model, _ideal()), 0)
    report = chip.xbarlab_report
    n_attn = sum(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())  # out_proj included
    analog = [r.name for r in report.analog]
    # every Linear and every attention projection analog: each MHA's in-projection becomes q/k/v (3 layers)
    assert len(analog) == len(analog_layers(chip)) == n_linear + 3 * n_attn == expected, (name, analog)
    assert sum(r.endswith(PROJ) for r in analog) == 4 * n_attn
    assert not any(isinstance(m, (nn.Linear, nn.MultiheadAttention)) for m in chip.modules())
    chip.train(train)
    model.train(train)
    xd = tuple(t.clone().requires_grad_(True) for t in x)
    xa = tuple(t.clone().requires_grad_(True) for t in x)
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        ref = model(*xd)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    before = {m.layer_name: m.forward_calls for m in analog_layers(chip)}
    y = chip(*xa)
    # within TOL, not bit-exact: the packed (3E, E) in-projection GEMM vs three (E, E) GEMMs (see TOL)
    assert y.shape == ref.shape and (y - ref).abs().max() < TOL, name
    assert all(m.forward_calls == before[m.layer_name] + 1 for m in analog_layers(chip))
    # gradients: input gradients equal digital's; every analog weight gets a non-zero gradient
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    (ref * torch.linspace(-1, 1, ref.numel()).view_as(ref)).sum().backward()
    for a, d in zip(xa, xd, strict=True):
        assert a.grad is not None and d.grad is not None
        assert (a.grad - d.grad).abs().max() < TOL
    for layer in analog_layers(chip):
        grads = [p.grad for p in layer.parameters() if p.requires_grad]
        assert grads and all(g is not None and float(g.abs().sum()) > 0 for g in grads), layer.layer_name
    if name == "encoder":
        calibrate(chip, [x[0]], num_batches=1)  # coverage verified: every projection ran on the chip


def test_keep_digital_pattern_matches_projection_names() -> None:
    hw = _ideal().override({"keep_digital": ["layers.*.self_attn.k_proj"]})
    chip = convert(_encoder(), hw)
    digital = [r.name for r in chip.xbarlab_report.digital]
    assert digital == ["layers.0.self_attn.k_proj", "layers.1.self_attn.k_proj"]
    assert type(chip.get_submodule("layers.0.self_attn.k_proj")) is nn.Linear
    assert isinstance(chip.get_submodule("layers.0.self_attn.q_proj"), AnalogLinear)


def test_embedding_listed_digital_with_reason() -> None:
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 2))
    rec = {r.name: r for r in convert(model, _ideal()).xbarlab_report.layers}
    assert not rec["0"].analog and rec["0"].kind == "Embedding" and "weight (10, 8)" in rec["0"].reason


class FunctionalAttention(nn.Module):
    """Converted projections, but the forward reads q_proj.weight functionally: must be caught."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(x, x, x, need_weights=False)[0]
        return y + F.linear(x, self.attn.q_proj.weight)  # type: ignore[operator, arg-type]


class SelfAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def test_coverage_catches_functional_projection_use_and_unused_projection() -> None:
    x = torch.randn(2, 3, 8, generator=_gen(8))
    chip = program(convert(FunctionalAttention(), _ideal()), 0)
    with pytest.raises(CoverageError, match=r"layer 'attn\.q_proj'.*linear"):
        calibrate(chip, [x], num_batches=1)
    # a projection that does not run (its forward replaced) is refused by the forward-call count
    chip = program(convert(SelfAttention(), _ideal()), 0)
    v_proj = chip.get_submodule("attn.v_proj")
    v_proj.forward = lambda t: F.linear(t, v_proj.weight.detach().clone(), v_proj.bias)  # type: ignore[method-assign]
    with pytest.raises(CoverageError, match=r"attn\.v_proj"):
        calibrate(chip, [x], num_batches=1)


NOISY = {"adc.bits": 6, "read_noise.mode": "per_mvm"}


def test_rram_with_adc_and_per_mvm_noise_changes_output_and_save_load_is_bit_identical(tmp_path: Path) -> None:
    model = _encoder().eval()
    x = torch.randn(3, 5, 16, generator=_gen(9))
    hw = xbarlab.load_preset("rram").override(NOISY)
    chip = calibrate(program(convert(model, hw), 4), [x], num_batches=1).eval()
    with torch.no_grad():
        ref = model(x)
        a = chip(x)
        b = chip(x)
    err = float((a - ref).abs().mean())
    assert err > 1e-3  # the non-idealities are real
    assert not torch.equal(a, b)  # per-MVM noise: a fresh draw each forward
    q = chip.get_submodule("layers.0.self_attn.q_proj")
    assert q.w_ni is not None and not torch.equal(q.w_ni, q.weight)  # static noise folded into the weights
    base = xbarlab.save_chip(chip, tmp_path / "chip")
    loaded = xbarlab.load_chip(_encoder(), base).eval()
    for la, lb in zip(analog_layers(chip), analog_layers(loaded), strict=True):
        assert la.layer_name == lb.layer_name
        for name, buf in la.named_buffers():
            assert torch.equal(buf, getattr(lb, name)), (la.layer_name, name)
    state = {la.layer_name: la.mvm_rng_state() for la in analog_layers(chip)}
    for la in analog_layers(loaded):
        la.set_mvm_rng_state(state[la.layer_name])
    with torch.no_grad():
        assert torch.equal(chip(x), loaded(x))


def test_forward_on_meta_device() -> None:
    x = torch.randn(3, 5, 16, generator=_gen(10))
    hw = xbarlab.load_preset("rram").override(NOISY)
    chip = calibrate(program(convert(_encoder().eval(), hw), 2), [x], num_batches=1).eval()
    with torch.no_grad():
        expected = chip(x)
        chip.to("meta")
        y = chip(x.to("meta"))
    assert y.device.type == "meta" and y.shape == expected.shape


def test_training_with_dropout_draws_the_same_masks_as_pytorch() -> None:
    """Dropout 0.2 (attention weights, FFN, residuals) in training mode: with the same global seed the ideal chip
    reproduces PyTorch's encoder layer (the analog layers draw nothing from the global generator); gradients reach
    the projections' biases."""
    torch.manual_seed(0)
    model = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.2, batch_first=True).train()
    chip = program(convert(model, _ideal()), 0).train()
    x = torch.randn(3, 5, 16, generator=_gen(11))
    torch.manual_seed(5)
    ref = model(x)
    torch.manual_seed(5)
    y = chip(x)
    assert (y - ref).abs().max() < TOL
    torch.manual_seed(6)
    assert (chip(x) - y).abs().max() > 1e-3  # dropout really active
    y.sum().backward()
    bias = chip.get_submodule("self_attn.q_proj").bias
    assert bias is not None and bias.grad is not None and bool(bias.grad.abs().sum() > 0)
