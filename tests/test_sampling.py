"""Statistics of the per-MVM N(0, 1) samplers (xbarlab.sampling): ``exact`` is torch.randn bit for bit, ``pooled``
is exactly N(0, 1) per element, pairwise uncorrelated, independent between calls, and reuses values in one call.

Tolerances are 5 standard errors, the standard error written out for each statistic. Within one ``pooled`` call
each |z| appears about R = POOL_REUSE times, so statistics that are even in the draws (sample variance, kurtosis,
tail frequencies, products x_i·x_j, sums of squares) have the standard error of n / (1 + R) independent values
(measured: variance of the sample variance 16.7× the independent one, tail frequency 17.6×, block-sum variance
11.6× at R = 16; 1 + R bounds it because the overlap fractions of a value's reuses sum to R); the mean, an odd
statistic, has exactly the independent standard error (the draws are pairwise uncorrelated). The same bounds hold
for ``exact``, which is tested alongside. Each test also shows that its check rejects a broken sampler.
"""

from __future__ import annotations

import math

import pytest
import torch

from xbarlab.hardware import ConfigError, HardwareConfig
from xbarlab.presets import list_presets, load_preset
from xbarlab.sampling import MIN_POOLED_ELEMENTS, POOL_BLOCK, POOL_REUSE, standard_normal

N = 2**22
"""Elements per call (the partial sums of one 16 MiB chunk)."""
CALLS = 4
"""Consecutive calls pooled for the moment and tail statistics (16.8 M draws)."""
INFLATION = 1 + POOL_REUSE
"""Variance inflation of even statistics of one pooled call (module docstring); 1 would do for ``exact``."""
Z = 5.0
"""Tolerance in standard errors."""

SAMPLERS = ("exact", "pooled")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _calls(sampler: str, seed: int = 1, calls: int = CALLS, n: int = N) -> list[torch.Tensor]:
    g = _gen(seed)
    return [standard_normal((n,), generator=g, device="cpu", sampler=sampler).double() for _ in range(calls)]


@pytest.fixture(scope="module", params=SAMPLERS)
def draws(request: pytest.FixtureRequest) -> tuple[str, list[torch.Tensor]]:
    return request.param, _calls(request.param)


def _periodic(n: int, period: int, seed: int = 5) -> torch.Tensor:
    """A broken sampler: one exact pool of ``period`` values repeated (x[i] = z[i mod period])."""
    return torch.randn(period, generator=_gen(seed), dtype=torch.float64).repeat(n // period)


# ------------------------------------------------------------------------------------------------------------
# exact: bit for bit torch.randn; pooled: deterministic, device-clean


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5,), (3, 7, 11), (256, 4, 64, 16)])
def test_exact_is_torch_randn_bit_for_bit(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    g1, g2 = _gen(7), _gen(7)
    got = standard_normal(shape, generator=g1, device="cpu", dtype=dtype, sampler="exact")
    want = torch.randn(shape, generator=g2, dtype=dtype)
    assert got.dtype == dtype and got.shape == want.shape and torch.equal(got, want)
    assert torch.equal(g1.get_state(), g2.get_state())  # the stream continues where randn leaves it
    assert torch.equal(
        standard_normal(shape, generator=g1, device="cpu", dtype=dtype), torch.randn(shape, generator=g2, dtype=dtype)
    )


def test_pooled_below_the_threshold_draws_exactly() -> None:
    shape = (MIN_POOLED_ELEMENTS - 1,)
    got = standard_normal(shape, generator=_gen(3), device="cpu", sampler="pooled")
    assert torch.equal(got, torch.randn(shape, generator=_gen(3)))
    big = standard_normal((MIN_POOLED_ELEMENTS,), generator=_gen(3), device="cpu", sampler="pooled")
    assert not torch.equal(big[:10], torch.randn(10, generator=_gen(3)))  # from here on the pool is used


def test_pooled_is_deterministic_contiguous_and_thread_independent() -> None:
    shape = (63, 3, 1001, 7)  # 1,324,323 elements, not a multiple of the block length
    assert math.prod(shape) % POOL_BLOCK != 0
    threads = torch.get_num_threads()
    a = standard_normal(shape, generator=_gen(11), device="cpu", sampler="pooled")
    try:
        torch.set_num_threads(1)
        b = standard_normal(shape, generator=_gen(11), device="cpu", sampler="pooled")
    finally:
        torch.set_num_threads(threads)
    assert a.shape == shape and a.is_contiguous() and a.dtype == torch.float32
    assert torch.equal(a, b)
    g = _gen(11)
    first = standard_normal(shape, generator=g, device="cpu", sampler="pooled")
    second = standard_normal(shape, generator=g, device="cpu", sampler="pooled")
    assert torch.equal(first, a) and not torch.equal(second, first)
    f64 = standard_normal(shape, generator=_gen(11), device="cpu", dtype=torch.float64, sampler="pooled")
    assert f64.dtype == torch.float64 and bool(torch.isfinite(f64).all())


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_both_samplers_run_on_meta_with_a_cpu_generator(sampler: str) -> None:
    """``meta`` refuses host reads and CPU tensors in device code (the CUDA stand-in of tests/test_device_clean.py)."""
    out = standard_normal((8, 3, 64, 700), generator=_gen(0), device="meta", sampler=sampler)
    assert out.device.type == "meta" and out.shape == (8, 3, 64, 700) and out.dtype == torch.float32


def test_unknown_sampler_and_integer_dtype_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        standard_normal((4,), generator=_gen(0), device="cpu", sampler="fast")
    assert str(info.value) == "sampling.gaussian: invalid value 'fast'; allowed: one of 'exact', 'pooled'"
    with pytest.raises(ConfigError, match="allowed: a floating-point dtype"):
        standard_normal((4,), generator=_gen(0), device="cpu", dtype=torch.int32)


# ------------------------------------------------------------------------------------------------------------
# the marginal distribution


def test_mean_variance_skewness_kurtosis(draws: tuple[str, list[torch.Tensor]]) -> None:
    _, calls = draws
    x = torch.cat(calls)
    n = x.numel()
    m1, m2, m3, m4 = (float(x.pow(k).mean()) for k in (1, 2, 3, 4))
    # mean: pairwise uncorrelated draws, SE = 1/sqrt(n)
    assert abs(m1) < Z / math.sqrt(n)
    # variance: Var(x²) = 2, even statistic, SE = sqrt(2·(1+R)/n) (0.0050 here)
    assert abs(m2 - 1) < Z * math.sqrt(2 * INFLATION / n)
    # skewness ≈ m3: Var(x³) = 15; odd, measured inflation 1.06, bounded here by 2: SE = sqrt(30/n)
    assert abs(m3 / m2**1.5) < Z * math.sqrt(30 / n)
    # excess kurtosis m4/m2² − 3: SE = sqrt(24·(1+R)/n) (0.017 here)
    assert abs(m4 / m2**2 - 3) < Z * math.sqrt(24 * INFLATION / n)


def _ks_distance(x: torch.Tensor) -> float:
    """Kolmogorov–Smirnov distance sup |F_n − Φ| of a sample to N(0, 1)."""
    s, _ = torch.sort(x)
    n = s.numel()
    cdf = torch.special.ndtr(s)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n
    return float(torch.maximum(upper - cdf, cdf - (upper - 1.0 / n)).max())


def test_kolmogorov_smirnov_bound_on_the_marginal(draws: tuple[str, list[torch.Tensor]]) -> None:
    _, calls = draws
    x = calls[0][: N // 2]
    # P(sqrt(n_eff)·D > c) ≤ 2·exp(−2c²) (Dvoretzky–Kiefer–Wolfowitz); α = 1e-6 gives c = 2.69; n_eff = n/(1+R)
    bound = math.sqrt(math.log(2 / 1e-6) / 2) / math.sqrt(x.numel() / INFLATION)  # 0.0077
    assert _ks_distance(x) < bound
    # the check has power: a unit-variance logistic sample (same size, exact draws) is far outside it
    u = torch.rand(x.numel(), generator=_gen(2), dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    logistic = torch.log(u / (1 - u)) * (math.sqrt(3) / math.pi)
    assert _ks_distance(logistic) > 2 * bound


@pytest.mark.parametrize(("threshold", "p"), [(3.0, 2.699796063260e-3), (4.0, 6.334248366623e-5)])
def test_tail_frequencies_beyond_3_and_4_sigma(
    draws: tuple[str, list[torch.Tensor]], threshold: float, p: float
) -> None:
    _, calls = draws
    x = torch.cat(calls)
    n = x.numel()
    assert abs(2 * float(torch.special.ndtr(torch.tensor(-threshold, dtype=torch.float64))) - p) < 1e-12
    freq = float((x.abs() > threshold).double().mean())
    # binomial SE sqrt(p(1−p)(1+R)/n): ±12 % relative at 4σ (1,062 expected draws), ±1.5 % at 3σ
    assert abs(freq - p) < Z * math.sqrt(p * (1 - p) * INFLATION / n)


# ------------------------------------------------------------------------------------------------------------
# dependence: lags, block boundaries, consecutive calls, sums


def _autocorrelation(x: torch.Tensor, max_lag: int) -> torch.Tensor:
    """mean(x_i·x_{i+l}) over the n − l pairs, for l = 1 … max_lag (one FFT, float64)."""
    n = x.numel()
    f = torch.fft.rfft(x, n=2 * n)
    acf = torch.fft.irfft(f * f.conj(), n=2 * n)[1 : max_lag + 1]
    return acf / torch.arange(n - 1, n - max_lag - 1, -1, dtype=torch.float64)


def _lag_z(x: torch.Tensor, max_lag: int) -> tuple[float, float]:
    """Largest |correlation| at lags 1 … max_lag of x and of x² − 1, in standard errors (even products: n/(1+R))."""
    n = x.numel()
    r = float(_autocorrelation(x, max_lag).abs().max())
    r2 = float(_autocorrelation(x.square() - 1, max_lag).abs().max())
    # Var(x_i·x_j) = 1 and Var((x_i²−1)(x_j²−1)) = 4 for independent N(0, 1)
    return r / math.sqrt(INFLATION / n), r2 / math.sqrt(4 * INFLATION / n)


def test_lag_correlations_up_to_twice_the_block_length(draws: tuple[str, list[torch.Tensor]]) -> None:
    _, calls = draws
    z, z2 = _lag_z(calls[0][: N // 2], 2 * POOL_BLOCK + 1)
    assert z < Z and z2 < Z
    # a sampler that repeats every other block (x[i + B] = x[i] in half the blocks) is caught at lag B
    half = calls[0][: N // 2].view(-1, POOL_BLOCK)
    repeated = torch.stack((half, half), dim=1).reshape(-1)
    assert _lag_z(repeated, POOL_BLOCK)[0] > 10 * Z


def test_block_boundary_correlation(draws: tuple[str, list[torch.Tensor]]) -> None:
    _, calls = draws
    x = torch.cat([c.view(-1, POOL_BLOCK) for c in calls])  # (blocks, B)
    for lag in (1, 2):  # pairs straddling a block boundary: last elements of block j, first of block j+1
        left, right = x[:-1, POOL_BLOCK - lag :].reshape(-1), x[1:, :lag].reshape(-1)
        m = left.numel()
        assert abs(float((left * right).mean())) < Z * math.sqrt(INFLATION / m)  # 1.3e-2·lag^−½ here
        assert abs(float(((left**2 - 1) * (right**2 - 1)).mean())) < Z * math.sqrt(4 * INFLATION / m)
    # the whole block against the next one (same position): a sampler copying neighbouring blocks would show
    assert abs(float((x[:-1] * x[1:]).mean())) < Z * math.sqrt(INFLATION / x[1:].numel())


def test_consecutive_calls_are_independent() -> None:
    for sampler in SAMPLERS:
        g = _gen(21)
        n = N // 4
        a, b = (standard_normal((n,), generator=g, device="cpu", dtype=torch.float64, sampler=sampler) for _ in "ab")
        # E[a_i a_j b_i b_j] = E[a_i a_j]·E[b_i b_j] = 0 for i ≠ j: SE of mean(a·b) is exactly 1/sqrt(n)
        assert abs(float((a * b).mean())) < Z / math.sqrt(n)
        assert abs(float(((a**2 - 1) * (b**2 - 1)).mean())) < Z * math.sqrt(4 * INFLATION / n)
        # no value of the second call comes from the first one's pool (float64: chance equality has p ≈ 0)
        shared = float(torch.isin(b.abs(), a.abs()).double().mean())
        assert shared < 1e-4
        # the check sees reuse: a second "call" drawn from the first one's values would share all of them
        assert float(torch.isin(a[: n // 8].flip(0).abs(), a.abs()).double().mean()) == 1.0


def test_pooled_reuses_each_value_about_pool_reuse_times_in_one_call() -> None:
    """The documented limitation, pinned: one call of n draws holds at most n/R distinct |values|."""
    x = standard_normal((N,), generator=_gen(4), device="cpu", dtype=torch.float64, sampler="pooled")
    distinct = torch.unique(x.abs()).numel()
    pool = N // POOL_REUSE
    # each pool value is read by Poisson(R) blocks: a fraction e^−R (1e-7) of the pool is never read
    assert pool * (1 - math.exp(-POOL_REUSE)) - 5 * math.sqrt(pool) <= distinct <= pool
    exact = standard_normal((N,), generator=_gen(4), device="cpu", dtype=torch.float64, sampler="exact")
    assert torch.unique(exact.abs()).numel() == N  # float64 exact draws: all distinct


SUM_LAYOUTS = {
    # name: (k, function of a length-N draw giving m sums of k values)
    "pairs, adjacent": (2, lambda x: x.view(-1, 2).sum(1)),
    "8 adjacent": (8, lambda x: x.view(-1, 8).sum(1)),
    "64 adjacent (one tile's rows)": (64, lambda x: x.view(-1, 64).sum(1)),
    "256 adjacent (across blocks)": (256, lambda x: x.view(-1, 256).sum(1)),
    "64 at stride B - 1": (64, lambda x: x[: (N // (64 * 63)) * 64 * 63].view(-1, 64, 63).sum(1).reshape(-1)),
    "64 at stride B": (64, lambda x: x.view(-1, 64, POOL_BLOCK).sum(1).reshape(-1)),
    "64 at stride B + 1": (64, lambda x: x[: (N // (64 * 65)) * 64 * 65].view(-1, 64, 65).sum(1).reshape(-1)),
    "16 at stride N/16 (the pool size)": (16, lambda x: x.view(16, -1).sum(0)),
    "64 at stride N/64": (64, lambda x: x.view(64, -1).sum(0)),
}


def _sum_variance_error(sums: torch.Tensor, k: int) -> float:
    """|Var(S)/k − 1| of sums S of k draws (mean 0 known) in standard errors sqrt(2(1+R)/m)."""
    m = sums.numel()
    return abs(float(sums.square().mean()) / k - 1) / math.sqrt(2 * INFLATION / m)


@pytest.mark.parametrize("layout", list(SUM_LAYOUTS))
def test_variance_of_a_sum_of_k_draws_is_k(draws: tuple[str, list[torch.Tensor]], layout: str) -> None:
    """What a tile sum sees: Σ of k noisy values has variance k whatever the layout (reused values would not)."""
    _, calls = draws
    k, make = SUM_LAYOUTS[layout]
    sums = torch.cat([make(c) for c in calls])
    assert _sum_variance_error(sums, k) < Z
    # the check catches reuse: a pool of N/16 values repeated (x[i] = z[i mod N/16]) at stride N/16 sums equal
    # values, variance k² instead of k
    broken = SUM_LAYOUTS["16 at stride N/16 (the pool size)"][1](_periodic(N, N // 16))
    assert _sum_variance_error(broken, 16) > 10 * Z


# ------------------------------------------------------------------------------------------------------------
# the config field: default left out of every dict (stored hashes unchanged), non-default hashed


def test_sampling_is_left_out_of_the_config_dict_at_its_default() -> None:
    from xbarlab.experiments.identity import trial_hash

    for name in list_presets():
        hw = load_preset(name)
        assert hw.sampling.gaussian == "exact"
        assert "sampling" not in hw.to_dict() and "sampling" not in hw.to_yaml()
        assert HardwareConfig.from_dict(hw.to_dict()) == hw
    hw = load_preset("rram")
    pooled = hw.override({"sampling.gaussian": "pooled"})
    assert pooled.to_dict()["sampling"] == {"gaussian": "pooled"}
    assert HardwareConfig.from_yaml(pooled.to_yaml()) == pooled and HardwareConfig.from_dict(pooled.to_dict()) == pooled
    assert trial_hash({"hardware": pooled.to_dict()}) != trial_hash({"hardware": hw.to_dict()})
    # restating the default is the default: same dict, same hash
    assert hw.override({"sampling.gaussian": "exact"}).to_dict() == hw.to_dict()


def test_sampling_field_is_validated_and_per_layer() -> None:
    with pytest.raises(ConfigError) as info:
        load_preset("rram").override({"sampling.gaussian": "fast"})
    assert str(info.value) == "sampling.gaussian: invalid value 'fast'; allowed: one of 'exact', 'pooled'"
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict({"sampling": {"sigma": 1}})
    assert str(info.value) == "sampling.sigma: invalid value 1; allowed: a field among gaussian"
    hw = HardwareConfig.from_dict(
        {"preset": "rram", "layers": [{"pattern": "conv*", "settings": {"sampling": {"gaussian": "pooled"}}}]}
    )
    assert hw.for_layer("conv1").sampling.gaussian == "pooled" and hw.for_layer("fc").sampling.gaussian == "exact"
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict({"layers": [{"pattern": "x", "settings": {"sampling": {"gaussian": 1}}}]})
    assert str(info.value).startswith("layers[0].settings.sampling.gaussian: invalid value 1")


def _per_mvm_chip(gaussian: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A 256→64 analog Linear with per-MVM read noise and no ADC, programmed (seed 0)."""
    import xbarlab

    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64)
    hw = load_preset("rram").override(
        {"keep_digital": [], "dac.bits": None, "read_noise.mode": "per_mvm", "sampling.gaussian": gaussian}
    )
    chip = xbarlab.program(xbarlab.convert(lin, hw), 0)
    return chip, torch.randn(2048, 256)


def test_the_layer_draws_its_per_mvm_noise_with_the_configured_sampler() -> None:
    """``exact`` is the torch.randn stream bit for bit; ``pooled`` really changes the draws (not a no-op) and keeps
    the per-output noise variance of the exact sampler within sampling tolerance."""
    exact, x = _per_mvm_chip("exact")
    pooled, _ = _per_mvm_chip("pooled")
    with torch.no_grad():
        mean = exact._compute(x, exact.w_ni, exact.bias)  # the noise-free part of the output
        std = exact._compute(x**2, exact.var_ni, None).clamp_min(0).sqrt()
        gen = torch.Generator().manual_seed(0)
        gen.set_state(exact._mvm_generator(x.device).get_state())
        expected = mean + std * torch.randn(mean.shape, generator=gen)
        first_exact, first_pooled = exact(x), pooled(x)  # both the first draw of the same seeded stream
        assert torch.equal(first_exact, expected)  # exact: today's randn stream, unchanged
        assert not torch.equal(first_pooled, expected)  # pooled is not a silent no-op
        z_exact = (first_exact - mean) / std
        z_pooled = (first_pooled - mean) / std
    n = z_pooled.numel()  # 131,072 draws: above MIN_POOLED_ELEMENTS, so the pool is used
    assert n >= MIN_POOLED_ELEMENTS
    # the standard normalised noise has variance 1 for both; the pooled estimate is ~16x noisier than an
    # independent one (each |z| reused ~POOL_REUSE times): 6 sigma of sqrt(2·POOL_REUSE/n)
    for z, reuse in ((z_exact, 1), (z_pooled, POOL_REUSE)):
        assert abs(float(z.var()) - 1.0) < 6 * math.sqrt(2 * reuse / n)
        assert abs(float(z.mean())) < 6 * math.sqrt(reuse / n)
