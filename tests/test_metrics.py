"""PC2, PC2-proj, MAC SNR and per-layer distortion (with fake analog layers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from xbarlab.metrics import (
    LayerDistortion,
    layer_distortion,
    mac_error_stats,
    pc2,
    pc2_proj,
    snr_db,
)
from xbarlab.reports.plots import plot_weight_scatter

N = 200_000


def pc2_exact_multiplicative(sigma: float) -> float:
    """Population PC2 of (w, w·(1 + σξ)) for zero-mean w: C = v·[[1, 1], [1, 1 + σ²]]."""
    tr = 2 + sigma**2
    det = sigma**2
    lam2 = (tr - math.sqrt(tr * tr - 4 * det)) / 2
    return lam2 / tr


@pytest.fixture(scope="module")
def w_xi() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal(N) * 0.05, rng.standard_normal(N)


def test_pc2_identical_is_zero() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal(10_000)
    assert pc2(w, w) == 0.0
    assert pc2(w + 1000.0, w + 1000.0) == 0.0  # large offset: centring is exact
    t = torch.randn(64, 32, 3, 3)
    assert pc2(t, t.clone()) == 0.0
    assert pc2(w, 0.5 * w) <= 1e-15  # collinear, any slope
    assert pc2(w, -2.0 * w + 3.0) <= 1e-15


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.2])
def test_pc2_multiplicative_noise_grows_as_sigma_squared(w_xi: tuple[np.ndarray, np.ndarray], sigma: float) -> None:
    w, xi = w_xi
    value = pc2(w, w * (1 + sigma * xi))
    assert value == pytest.approx(pc2_exact_multiplicative(sigma), rel=0.03)
    assert value == pytest.approx(sigma**2 / 4, rel=0.05)  # papers.md §1.11: PC2 ≈ σ²/4


def test_pc2_ratio_for_doubled_sigma(w_xi: tuple[np.ndarray, np.ndarray]) -> None:
    w, xi = w_xi
    p = {s: pc2(w, w * (1 + s * xi)) for s in (0.05, 0.1, 0.2)}
    assert p[0.1] / p[0.05] == pytest.approx(4.0, rel=0.03)
    assert p[0.2] / p[0.1] == pytest.approx(pc2_exact_multiplicative(0.2) / pc2_exact_multiplicative(0.1), rel=0.02)
    assert p[0.2] / p[0.1] == pytest.approx(4.0, rel=0.05)


def test_pc2_additive_noise() -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal(N) * 0.1 + 0.02
    for std_e in (0.002, 0.005, 0.01):
        e = rng.standard_normal(N) * std_e
        assert pc2(w, w + e) == pytest.approx(std_e**2 / (4 * 0.1**2), rel=0.03)


def test_pc2_symmetric_and_float32_input() -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal(5000)
    y = 0.7 * w + 0.1 * rng.standard_normal(5000)
    assert pc2(w, y) == pytest.approx(pc2(y, w), rel=1e-12)
    assert pc2(torch.tensor(w, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)) == pytest.approx(
        pc2(w, y), rel=1e-5
    )
    assert 0.0 < pc2(w, rng.standard_normal(5000)) <= 0.5


def test_pc2_errors() -> None:
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(12,\)"):
        pc2(np.zeros((3, 4)), np.zeros(12))
    with pytest.raises(ValueError, match="w_nonideal is constant"):
        pc2(np.arange(5.0), np.ones(5))
    with pytest.raises(ValueError, match="w_ideal and w_nonideal are constant"):
        pc2(np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        pc2(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="at least 2"):
        pc2(np.array([1.0]), np.array([1.0]))


def test_pc2_proj() -> None:
    assert pc2_proj(2e-3, 1.0) == pytest.approx(2e-3)
    assert pc2_proj(2e-3, 1e10, nu=0.1) == pytest.approx(2e-2)
    assert pc2_proj(1e-3, 1e4, t0_seconds=1.0, nu=0.04) == pytest.approx(1e-3 * 1e4**0.04)
    with pytest.raises(ValueError, match="t_seconds"):
        pc2_proj(1e-3, 0.0)
    with pytest.raises(ValueError, match="nu"):
        pc2_proj(1e-3, 10.0, nu=-0.1)
    with pytest.raises(ValueError, match="pc2_value"):
        pc2_proj(0.7, 10.0)


def test_snr_and_mac_stats() -> None:
    ref = np.ones(100)
    assert snr_db(ref, ref) == math.inf
    assert snr_db(ref, ref + 0.1) == pytest.approx(20.0)
    assert snr_db(np.zeros(4), np.ones(4)) == -math.inf
    with pytest.raises(ValueError, match="reference has shape"):
        snr_db(np.ones(3), np.ones(4))
    st = mac_error_stats(ref, 0.9 * ref)
    assert st.n == 100 and st.gain == pytest.approx(0.9) and st.rmse == pytest.approx(0.1)
    assert st.rel_rmse == pytest.approx(0.1) and st.mean_error == pytest.approx(-0.1)
    assert st.max_abs_error == pytest.approx(0.1) and st.snr_db == pytest.approx(20.0)


class FakeAnalogConv(nn.Conv2d):
    """Conv2d computing with weight + fixed noise (what the real analog layer's contract looks like)."""

    def __init__(self, *args: object, layer_name: str, noise: float, seed: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.layer_name = layer_name
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("delta", noise * torch.randn(self.weight.shape, generator=g))

    def effective_weight(self) -> torch.Tensor:
        return self.weight + self.delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class FakeAnalogLinear(nn.Module):
    """Not an nn.Linear subclass; provides ideal_forward."""

    def __init__(self, n_in: int, n_out: int, layer_name: str, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) * 0.1, requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(n_out), requires_grad=False)
        self.layer_name = layer_name
        self.scale = scale

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.scale

    def ideal_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


def fake_chip() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        FakeAnalogConv(3, 8, 3, padding=1, layer_name="conv1", noise=0.0, seed=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        FakeAnalogConv(8, 8, 3, padding=1, stride=2, layer_name="conv2", noise=0.02, seed=2),
        nn.ReLU(),
        nn.Flatten(),
        FakeAnalogLinear(8 * 4 * 4, 5, "fc", scale=0.5),
    )


def test_layer_distortion_records() -> None:
    chip = fake_chip().train()
    x = torch.randn(16, 3, 8, 8)
    recs = layer_distortion(chip, [x[:8], (x[8:], torch.zeros(8))])
    assert [r.layer_name for r in recs] == ["conv1", "conv2", "fc"]
    assert all(m.training for m in chip.modules())  # restored
    conv1, conv2, fc = recs
    assert conv1.pc2 == 0.0 and conv1.snr_db == math.inf
    assert conv2.pc2 == pytest.approx(pc2(chip[3].weight, chip[3].effective_weight()))
    assert conv2.pc2 > 0 and conv2.weight_shape == (8, 8, 3, 3) and conv2.num_weights == 576
    assert fc.pc2 <= 1e-15  # pure scaling: no distortion orthogonal to the line ...
    assert fc.mac is not None and fc.mac.gain == pytest.approx(0.5)  # ... but a visible gain error
    assert fc.snr_db == pytest.approx(20 * math.log10(2), abs=1e-6)  # error = 0.5·ref → SNR = 6.02 dB
    # conv2's SNR from an independent computation with the same inputs
    chip.eval()
    with torch.no_grad():
        h = chip[2](chip[1](chip[0](x)))
        expected = snr_db(F.conv2d(h, chip[3].weight, chip[3].bias, stride=2, padding=1), chip[3](h))
    assert conv2.snr_db == pytest.approx(expected, rel=1e-6)
    assert conv2.mac is not None and conv2.mac.n == 16 * 8 * 4 * 4
    d = conv2.to_dict()
    assert "scatter" not in d and d["snr_db"] == conv2.snr_db


def test_layer_distortion_without_calibration_and_errors() -> None:
    recs = layer_distortion(fake_chip())
    assert all(r.mac is None and r.snr_db is None for r in recs)
    assert recs[1].scatter is not None and recs[1].scatter[0].size == 576
    with pytest.raises(ValueError, match="no analog layer"):
        layer_distortion(nn.Sequential(nn.Linear(2, 2)))


def test_plot_weight_scatter(tmp_path: object) -> None:
    from pathlib import Path

    out_dir = Path(str(tmp_path))
    rng = np.random.default_rng(0)
    w = rng.standard_normal(50_000)
    p1 = plot_weight_scatter((w, w * (1 + 0.1 * rng.standard_normal(50_000))), out_dir / "pair.png", max_points=2000)
    recs = layer_distortion(fake_chip(), max_scatter_points=100)
    assert all(r.scatter is not None and r.scatter[0].size <= 100 for r in recs)
    p2 = plot_weight_scatter(recs, out_dir / "sub" / "layers.png", title="fake chip")
    for p in (p1, p2):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no scatter"):
        plot_weight_scatter([LayerDistortion("x", "X", (2,), 2, 0.0)], out_dir / "x.png")


def test_layer_distortion_on_converted_chip() -> None:
    """Integration with the real analog layers: FeFET σ = 0.05 gives PC2 ≈ σ²/4 (papers.md §1.11)."""
    import xbarlab

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    x = torch.randn(4, 3, 8, 8)
    chip = xbarlab.convert(net, xbarlab.load_preset("fefet"))
    xbarlab.program(chip, seed=0)
    xbarlab.calibrate(chip, [x])
    recs = layer_distortion(chip, [x])
    assert [r.module_type for r in recs] == ["AnalogConv", "AnalogConv"]
    big = recs[1]  # 36,864 weights
    assert 0.5 * 0.05**2 / 4 < big.pc2 < 2 * 0.05**2 / 4
    assert big.snr_db is not None and 10 < big.snr_db < 60
