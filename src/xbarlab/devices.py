"""Device non-idealities: programming variation, stuck-at faults, drift and read noise.

All conductances here are in µS and float64; every random draw comes from an explicit ``torch.Generator``. The
draws are made on the CPU (so a seed gives the same chip on every device) and moved to the conductances' device;
every other tensor is made on that device (CUDA / ``meta``-clean: no CPU tensor mixed in, no host read).
The PCM statistical model follows aihwkit's ``PCMLikeNoiseModel`` (Nandakumar et al.; peers.md §3.1).
"""

from __future__ import annotations

import math

import torch

from xbarlab.hardware import DeviceConfig, DriftConfig, FaultConfig, ProgrammingConfig, ReadNoiseConfig

PCM_PROG_COEFFS = (0.26348, 1.9650, -1.1731)
"""aihwkit PCM programming-noise polynomial σ_prog(x) = c0 + c1·x + c2·x² in µS at g_max = 25 µS."""
PCM_T_READ_S = 250e-9
"""aihwkit read duration t_read (s) in the 1/f noise term."""


def randn(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator, device: torch.device | str | None = None
) -> torch.Tensor:
    """Standard normal draws in float64, drawn on the CPU (bit-identical for a given generator state) and moved to
    ``device`` (CPU by default)."""
    xi = torch.randn(shape, generator=generator, dtype=torch.float64)
    return xi if device is None else xi.to(device)


# ------------------------------------------------------------------------------------------------- programming


def pcm_programming_sigma_us(g_target_us: torch.Tensor, g_max_us: float) -> torch.Tensor:
    """aihwkit's σ_prog(g_T) in µS: (0.26348 + 1.9650·x − 1.1731·x²)·g_max/25 with x = g_T/g_max."""
    x = g_target_us / g_max_us
    c0, c1, c2 = PCM_PROG_COEFFS
    return (c0 + c1 * x + c2 * x * x).clamp_min(0.0) * (g_max_us / 25.0)


def apply_programming(
    g_target_us: torch.Tensor, cfg: ProgrammingConfig, device: DeviceConfig, generator: torch.Generator
) -> torch.Tensor:
    """As-programmed conductances (µS) for target conductances, floored at 0 µS."""
    if cfg.kind == "none" or cfg.sigma == 0.0:
        return g_target_us.clone()
    xi = randn(g_target_us.shape, generator, g_target_us.device)
    if cfg.kind == "gaussian_abs":
        g = g_target_us + cfg.sigma * xi
    elif cfg.kind == "gaussian_rel":
        g = g_target_us * (1.0 + cfg.sigma * xi)
    elif cfg.kind == "lognormal":
        g = g_target_us * torch.exp(cfg.sigma * xi)
    elif cfg.kind == "pcm_nandakumar":
        g = g_target_us + cfg.sigma * pcm_programming_sigma_us(g_target_us, device.g_on_us) * xi
    else:  # pragma: no cover - guarded by config validation
        raise ValueError(f"programming.kind {cfg.kind!r} is not implemented")
    return g.clamp_min(0.0)


# ------------------------------------------------------------------------------------------------- faults


def apply_stuck_at_faults(
    g_us: torch.Tensor, cfg: FaultConfig, device: DeviceConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stuck-at faults: returns (conductances, fault code) with code 0 = healthy, 1 = SA0 (G_off), 2 = SA1 (G_on)."""
    if cfg.sa0_rate == 0.0 and cfg.sa1_rate == 0.0:
        return g_us, torch.zeros(g_us.shape, dtype=torch.uint8, device=g_us.device)
    u = torch.rand(g_us.shape, generator=generator, dtype=torch.float64).to(g_us.device)  # drawn on the CPU
    sa0 = u < cfg.sa0_rate
    sa1 = (u >= cfg.sa0_rate) & (u < cfg.sa0_rate + cfg.sa1_rate)
    g = torch.where(sa0, torch.full_like(g_us, device.g_off_us), g_us)
    g = torch.where(sa1, torch.full_like(g_us, device.g_on_us), g)
    code = sa0.to(torch.uint8) + 2 * sa1.to(torch.uint8)  # masks are disjoint; no boolean-mask indexing (host sync)
    return g, code


# ------------------------------------------------------------------------------------------------- drift


def pcm_drift_stats(g_target_us: torch.Tensor, g_max_us: float) -> tuple[torch.Tensor, torch.Tensor]:
    """aihwkit's drift-coefficient mean and spread (μ_ν, σ_ν) as functions of g_T/g_max."""
    g_rel = (g_target_us / g_max_us).abs().clamp_min(1e-7)
    log_g = torch.log(g_rel)
    mu = (-0.0155 * log_g + 0.0244).clamp(0.049, 0.1)
    sd = (-0.0125 * log_g - 0.0059).clamp(0.008, 0.045)
    return mu, sd


def sample_drift_exponents(
    g_target_us: torch.Tensor, cfg: DriftConfig, device: DeviceConfig, generator: torch.Generator
) -> torch.Tensor:
    """Per-device drift exponents ν (dimensionless)."""
    if cfg.kind == "none":
        return torch.zeros_like(g_target_us)
    xi = randn(g_target_us.shape, generator, g_target_us.device)
    if cfg.kind == "power_law":
        return cfg.nu_mean + cfg.nu_std * xi
    mu, sd = pcm_drift_stats(g_target_us, device.g_on_us)
    return (mu + sd * xi).abs() * cfg.scale


def initial_time_s(cfg: DriftConfig) -> float:
    """Chip time right after programming: t0 for the power law, 0 s of inference time for PCM."""
    return cfg.t0_s if cfg.kind == "power_law" else 0.0


def check_time(cfg: DriftConfig, t_s: float) -> None:
    """Validate a read-out time (s) for a drift model."""
    if not isinstance(t_s, (int, float)) or isinstance(t_s, bool) or not math.isfinite(t_s):
        raise ValueError(f"t_seconds: invalid value {t_s!r}; allowed: a finite number of seconds")
    if cfg.kind == "power_law" and t_s < cfg.t0_s:
        raise ValueError(f"t_seconds: invalid value {t_s}; allowed: >= drift.t0_s = {cfg.t0_s} s (power law)")
    if t_s < 0:
        raise ValueError(f"t_seconds: invalid value {t_s}; allowed: >= 0 s")


def drift_factor(nu: torch.Tensor, cfg: DriftConfig, t_s: float) -> torch.Tensor:
    """Multiplicative drift G(t)/G0 for per-device exponents ν at chip time ``t_s`` (s)."""
    if cfg.kind == "none":
        return torch.ones_like(nu)
    if cfg.kind == "power_law":
        ratio = t_s / cfg.t0_s
    else:  # PCM: t = t_inference + t0, drift only once inference time has passed
        if t_s <= 0.0:
            return torch.ones_like(nu)
        ratio = (t_s + cfg.t0_s) / cfg.t0_s
    return torch.pow(torch.as_tensor(ratio, dtype=torch.float64, device=nu.device), -nu)


# ------------------------------------------------------------------------------------------------- read noise


def pcm_1f_time_factor(t_inference_s: float, t0_s: float) -> float:
    """sqrt(ln((t + t_read)/(2·t_read))) with t = t_inference + t0 (aihwkit's accumulated 1/f noise)."""
    t = t_inference_s + t0_s
    return math.sqrt(math.log((t + PCM_T_READ_S) / (2 * PCM_T_READ_S)))


def pcm_qs(g_prog_us: torch.Tensor, g_max_us: float) -> torch.Tensor:
    """aihwkit's Q_s(g) = min(0.0088 / max((|g|/g_max)^0.65, 1e-3), 0.2)."""
    return (0.0088 / ((g_prog_us.abs() / g_max_us) ** 0.65).clamp_min(1e-3)).clamp_max(0.2)


def read_noise_sigma_us(
    g_prog_us: torch.Tensor,
    g_read_us: torch.Tensor,
    cfg: ReadNoiseConfig,
    device: DeviceConfig,
    drift: DriftConfig,
    t_s: float,
) -> torch.Tensor:
    """Read-noise standard deviation (µS) per device.

    For the P1 forms σ is set by the as-programmed conductance (docs/papers.md §1.10: noise fixed at programming and
    added to the drifted mean); for ``pcm_1f`` σ = |g_drift|·Q_s(g_prog)·sqrt(ln((t + t_read)/(2 t_read))).
    """
    if cfg.kind == "none":
        return torch.zeros_like(g_prog_us)
    if cfg.kind == "absolute_uS":
        return torch.full_like(g_prog_us, cfg.sigma + cfg.offset_us)
    if cfg.kind == "relative_to_G":
        return cfg.sigma * g_prog_us + cfg.offset_us
    if cfg.kind == "relative_to_G_on":
        return torch.full_like(g_prog_us, cfg.sigma * device.g_on_us + cfg.offset_us)
    if cfg.kind == "pcm_1f":
        t_inf = t_s if drift.kind == "pcm_nandakumar" else 0.0
        t0 = drift.t0_s if drift.kind == "pcm_nandakumar" else 20.0
        return g_read_us.abs() * pcm_qs(g_prog_us, device.g_on_us) * cfg.sigma * pcm_1f_time_factor(t_inf, t0)
    raise ValueError(f"read_noise.kind {cfg.kind!r} is not implemented")  # pragma: no cover
