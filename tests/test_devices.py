"""Noise models: sampled statistics match the configured values within sample-size tolerance."""

from __future__ import annotations

import math

import pytest
import torch

from xbarlab import devices
from xbarlab.hardware import DeviceConfig, DriftConfig, FaultConfig, ProgrammingConfig, ReadNoiseConfig
from xbarlab.seeding import generator

N = 200_000
DEV = DeviceConfig(name="test", r_on_ohm=50e3, on_off_ratio=10.0)  # G_on 20 µS, G_off 2 µS


def _g(value: float) -> torch.Tensor:
    return torch.full((N,), value, dtype=torch.float64)


def _close(sample: torch.Tensor, mean: float, std: float) -> None:
    n = sample.numel()
    assert float(sample.mean()) == pytest.approx(mean, abs=5 * std / math.sqrt(n) + 1e-12)
    assert float(sample.std()) == pytest.approx(std, rel=5 * math.sqrt(1 / (2 * n)) + 1e-12)


def test_gaussian_absolute_and_relative_programming() -> None:
    g = devices.apply_programming(_g(10.0), ProgrammingConfig("gaussian_abs", 0.5), DEV, generator(1))
    _close(g, 10.0, 0.5)
    g = devices.apply_programming(_g(10.0), ProgrammingConfig("gaussian_rel", 0.05), DEV, generator(2))
    _close(g, 10.0, 0.5)


def test_lognormal_programming() -> None:
    g = devices.apply_programming(_g(8.0), ProgrammingConfig("lognormal", 0.3), DEV, generator(3))
    _close(torch.log(g / 8.0), 0.0, 0.3)


def test_programming_floors_at_zero() -> None:
    g = devices.apply_programming(_g(0.1), ProgrammingConfig("gaussian_abs", 1.0), DEV, generator(4))
    assert float(g.min()) == 0.0
    assert 0.4 < float((g == 0).double().mean()) < 0.5  # P(0.1 + ξ < 0) = Φ(−0.1) ≈ 0.46


@pytest.mark.parametrize(
    ("x", "sigma_prog", "mu_nu", "sd_nu", "qs"),
    [
        (1.0, 1.05538, 0.049, 0.008, 0.0088),
        (0.5, 0.95271, 0.049, 0.008, 0.01381),
        (0.1, 0.44825, 0.06009, 0.02288, 0.03931),
        (0.01, 0.28301, 0.09578, 0.045, 0.17558),
    ],
)
def test_pcm_equations_match_aihwkit(x: float, sigma_prog: float, mu_nu: float, sd_nu: float, qs: float) -> None:
    g = torch.tensor([x * 25.0], dtype=torch.float64)
    assert float(devices.pcm_programming_sigma_us(g, 25.0)) == pytest.approx(sigma_prog, abs=2e-5)
    mu, sd = devices.pcm_drift_stats(g, 25.0)
    assert float(mu) == pytest.approx(mu_nu, abs=2e-5)
    assert float(sd) == pytest.approx(sd_nu, abs=2e-5)
    assert float(devices.pcm_qs(g, 25.0)) == pytest.approx(qs, abs=2e-5)


@pytest.mark.parametrize(("t", "factor"), [(1.0, 4.1897), (3600.0, 4.7648), (86400.0, 5.0868), (3.15e7, 5.6369)])
def test_pcm_1f_time_factor(t: float, factor: float) -> None:
    assert devices.pcm_1f_time_factor(t, 20.0) == pytest.approx(factor, abs=1e-4)


def test_pcm_programming_noise_statistics() -> None:
    nanda = DeviceConfig(name="pcm", r_on_ohm=40e3, on_off_ratio=float("inf"))
    g = devices.apply_programming(_g(12.5), ProgrammingConfig("pcm_nandakumar", 1.0), nanda, generator(5))
    _close(g, 12.5, 0.95271)


def test_power_law_drift_exponents_and_factor() -> None:
    cfg = DriftConfig(kind="power_law", nu_mean=0.1, nu_std=0.02, t0_s=1.0)
    nu = devices.sample_drift_exponents(_g(4.0), cfg, DEV, generator(6))
    _close(nu, 0.1, 0.02)
    fixed = DriftConfig(kind="power_law", nu_mean=0.1, nu_std=0.0, t0_s=1.0)
    nu0 = devices.sample_drift_exponents(_g(4.0)[:10], fixed, DEV, generator(6))
    for t, expected in ((1.0, 1.0), (1e4, 0.398107), (1e5, 0.316228), (1e10, 0.1)):
        assert float(devices.drift_factor(nu0, fixed, t)[0]) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="t_seconds"):
        devices.check_time(fixed, 0.5)


def test_stuck_at_fault_rates() -> None:
    g, code = devices.apply_stuck_at_faults(_g(10.0), FaultConfig(0.02, 0.05), DEV, generator(7))
    p0, p1 = float((code == 1).double().mean()), float((code == 2).double().mean())
    tol = 5 * math.sqrt(0.05 / N)
    assert p0 == pytest.approx(0.02, abs=tol) and p1 == pytest.approx(0.05, abs=tol)
    assert torch.all(g[code == 1] == DEV.g_off_us) and torch.all(g[code == 2] == DEV.g_on_us)
    assert torch.all(g[code == 0] == 10.0)


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (ReadNoiseConfig("absolute_uS", 0.3), 0.3),
        (ReadNoiseConfig("relative_to_G", 0.1), 1.0),
        (ReadNoiseConfig("relative_to_G", 0.03, offset_us=0.13), 0.43),
        (ReadNoiseConfig("relative_to_G_on", 0.05), 1.0),
    ],
)
def test_read_noise_sigma_units(cfg: ReadNoiseConfig, expected: float) -> None:
    g = _g(10.0)[:4]
    sigma = devices.read_noise_sigma_us(g, g, cfg, DEV, DriftConfig(), 1.0)
    assert torch.allclose(sigma, torch.full_like(g, expected))
