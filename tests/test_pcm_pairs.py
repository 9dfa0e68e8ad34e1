"""Both devices of a differential PCM pair keep their own state (docs/peers-fidelity.md, finding 4).

aihwkit 1.2.0 re-converts the programmed *weights* into a fresh pair (g⁺ − g⁻, 0) at every drift, so the device
programmed to 0 µS loses its read noise and drift. xbarlab simulates a chip: the device whose target is 0 µS is
programmed with aihwkit's σ_prog(0) = 0.26348 µS and floored at 0 (a half-normal), drifts with its own
ν ~ |N(μ_ν(0), σ_ν(0))| = |N(0.1, 0.045)|, and reads with its own 1/f noise σ = |g_drift|·Q_s(g)·f(t).
These tests pin that, with sample-size tolerances (5 standard errors), on a 64×64 layer of positive weights,
where every negative device has target 0 µS (no padding devices: the layer fills one tile).
"""

from __future__ import annotations

import math

import torch
from torch import nn

import xbarlab
from xbarlab import devices
from xbarlab.layers import AnalogLayer, analog_layers

DAY_S = 86400.0
SIGMA_PROG_0_US = 0.26348
"""aihwkit's programming-noise σ (µS) at target 0 µS: the constant term of its polynomial (g_max 25 µS)."""


def _positive_layer(seed: int) -> tuple[nn.Module, AnalogLayer]:
    """A programmed 64×64 pcm-nandakumar chip of weights in [0.05, 1] and its one analog layer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.uniform_(0.05, 1.0)
    hw = xbarlab.load_preset("pcm-nandakumar").override(
        {"crossbar.rows": 64, "crossbar.cols": 64, "weights.quantize": False, "keep_digital": []}
    )
    chip = xbarlab.program(xbarlab.convert(model, hw), seed)
    layer = analog_layers(chip)[0]
    assert layer.layout.differential and layer.layout.k_pad == 64 and layer.layout.n_pad == 64
    return chip, layer


def test_the_device_programmed_to_zero_is_a_half_normal_with_its_own_drift_exponent() -> None:
    _, layer = _positive_layer(3)
    assert layer.g_prog is not None and layer.nu is not None
    g_neg = layer.g_prog[:, :, 1].reshape(-1).double()  # (G, S, P = 2, Tr, Tc, R, C): P = 1 is g⁻
    n = g_neg.numel()
    assert n == 4096
    zero = (g_neg == 0).double().mean().item()
    assert abs(zero - 0.5) < 5 * math.sqrt(0.25 / n)
    mean = SIGMA_PROG_0_US / math.sqrt(2 * math.pi)  # E[max(0, N(0, σ))]
    sd = SIGMA_PROG_0_US * math.sqrt(0.5 - 1 / (2 * math.pi))
    assert abs(g_neg.mean().item() - mean) < 5 * sd / math.sqrt(n)
    nu_neg = layer.nu[:, :, 1].reshape(-1).double()
    mu, sd_nu = devices.pcm_drift_stats(torch.zeros(1, dtype=torch.float64), 25.0)
    assert (float(mu), float(sd_nu)) == (0.1, 0.045)
    assert abs(nu_neg.mean().item() - 0.1) < 5 * 0.045 / math.sqrt(n)
    assert abs(nu_neg.std().item() - 0.045) < 5 * 0.045 / math.sqrt(2 * n)


def test_the_device_programmed_to_zero_drifts_and_reads_with_its_own_noise() -> None:
    chip, layer = _positive_layer(4)
    xbarlab.drift(chip, DAY_S)
    assert layer.g_prog is not None and layer.nu is not None and layer.read_xi is not None
    g_read, sigma = layer.read_conductances_us()
    g_prog, nu, xi = layer.g_prog[:, :, 1], layer.nu[:, :, 1], layer.read_xi[:, :, 1]
    g_drift = g_prog * ((DAY_S + 20.0) / 20.0) ** (-nu)
    alive = g_prog > 0
    # σ = |g_drift|·Q_s(g_prog)·f(t), with Q_s = min(0.0088 / (g/g_max)^0.65, 0.2): large for sub-µS devices
    f_t = devices.pcm_1f_time_factor(DAY_S, 20.0)
    expected_sigma = g_drift * devices.pcm_qs(g_prog, 25.0) * f_t
    torch.testing.assert_close(sigma[:, :, 1], expected_sigma, rtol=1e-12, atol=0.0)
    assert bool((sigma[:, :, 1][alive] > 0).all())  # every programmed off device has read noise of its own
    torch.testing.assert_close(g_read[:, :, 1], (g_drift + expected_sigma * xi).clamp_min(0.0), rtol=1e-12, atol=0.0)
    # the off device really contributes: its read conductance differs from the drifted one wherever it is alive
    assert bool((g_read[:, :, 1][alive] != g_drift[alive]).float().mean() > 0.4)
    # and the effective weight subtracts it: W_eff = (g⁺ − g⁻)·w_max/g_max, the same decode for both devices
    w = layer.effective_weight().detach().double()
    g_pos = g_read[:, :, 0]
    w_max = layer.w_max
    assert w_max is not None
    decoded = ((g_pos - g_read[:, :, 1]) * (w_max / 25.0)).reshape(64, 64)  # (R = in, C = out) of the one tile
    torch.testing.assert_close(w, decoded.t().to(w.dtype), rtol=1e-6, atol=1e-7)
