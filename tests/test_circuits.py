"""Exactness, physics and input checks of the IR-drop model ``xbarlab.circuits``.

References: ngspice (batch ``.op`` of the full netlist, ``tests/spice.py``) and an independent modified nodal
analysis of the whole circuit written here in the tests (``spice.nodal_reference``). ngspice is required: when it
is missing the SPICE tests FAIL (they are never skipped).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise, product

import numpy as np
import pytest
import torch

import spice
import xbarlab.circuits as circuits
from xbarlab.circuits import (
    P1_PARASITICS,
    Parasitics,
    effective_conductance,
    effective_conductance_p,
    solve_currents,
)

P1 = P1_PARASITICS.as_kwargs()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    # The solver's work is many mid-sized batched matrix products; on a shared 2-core machine the OpenMP barriers
    # of a second intra-op thread cost far more than they gain. Restored after this module.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


G_MIN, G_MAX = 0.04e-6, 20e-6  # S


def random_g(rng: np.random.Generator, shape: tuple[int, ...], zeros: float = 0.0) -> np.ndarray:
    """Conductances log-uniform over 0.04–20 µS (in S), with a fraction ``zeros`` of open devices (0 S)."""
    g = np.exp(rng.uniform(math.log(G_MIN), math.log(G_MAX), shape))
    if zeros:
        g[rng.random(shape) < zeros] = 0.0
    return g


def g_eff_np(G: np.ndarray, **kw: float) -> np.ndarray:
    return effective_conductance(torch.from_numpy(G), **kw).numpy()


# --------------------------------------------------------------------------------------------------------------
# against ngspice


@dataclass(frozen=True)
class SpiceCase:
    name: str
    shape: tuple[int, int]
    params: dict[str, float]
    seed: int
    zeros: float = 0.0
    runs: int = 1


def _rand_params(seed: int, zero: tuple[str, ...] = ()) -> dict[str, float]:
    rng = np.random.default_rng(1000 + seed)
    p = {
        "r_driver": float(rng.uniform(10.0, 3000.0)),
        "r_wire_row": float(rng.uniform(0.5, 30.0)),
        "r_wire_col": float(rng.uniform(0.5, 30.0)),
        "r_sense": float(rng.uniform(10.0, 3000.0)),
    }
    for name in zero:
        p[name] = 0.0
    return p


SPICE_CASES = [
    SpiceCase("64x64-P1", (64, 64), P1, seed=1),
    SpiceCase("64x16-rand-wirerow0", (64, 16), _rand_params(2, ("r_wire_row",)), seed=2, zeros=0.05),
    SpiceCase("16x64-rand-driver0-sense0", (16, 64), _rand_params(3, ("r_driver", "r_sense")), seed=3),
    SpiceCase("24x40-rand", (24, 40), _rand_params(4), seed=4, runs=2),
    SpiceCase("40x24-rand-wirecol0", (40, 24), _rand_params(5, ("r_wire_col",)), seed=5),
    SpiceCase("33x33-rand", (33, 33), _rand_params(6), seed=6),
    SpiceCase("1x1-rand", (1, 1), _rand_params(7), seed=7, runs=2),
    SpiceCase("1x9-rand-sense0", (1, 9), _rand_params(8, ("r_sense",)), seed=8, runs=2),
    SpiceCase("9x1-rand-driver0", (9, 1), _rand_params(9, ("r_driver",)), seed=9, runs=2),
    SpiceCase("7x5-wires-only", (7, 5), _rand_params(10, ("r_driver", "r_sense")), seed=10, runs=2),
    SpiceCase("5x7-ends-only", (5, 7), _rand_params(11, ("r_wire_row", "r_wire_col")), seed=11, runs=2),
    SpiceCase("6x6-ideal", (6, 6), _rand_params(12, ("r_driver", "r_wire_row", "r_wire_col", "r_sense")), seed=12),
]


@pytest.fixture(scope="module")
def spice_results() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name → (G, volts, ngspice currents); all decks simulated once, two ngspice processes at a time."""
    if spice.ngspice_path() is None:
        pytest.fail(spice.NGSPICE_MISSING)

    def run(case: SpiceCase) -> tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(case.seed)
        G = random_g(rng, case.shape, case.zeros)
        volts = rng.uniform(-1.0, 1.0, (case.runs, case.shape[0]))
        volts[0] = np.abs(volts[0]) + 0.05  # first run: all inputs positive (every output current > 0)
        return case.name, (G, volts, spice.run_crossbar(G, volts, **case.params))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, SPICE_CASES))


def test_ngspice_is_installed() -> None:
    assert spice.ngspice_path() is not None, spice.NGSPICE_MISSING


@pytest.mark.parametrize("case", SPICE_CASES, ids=[c.name for c in SPICE_CASES])
def test_currents_match_ngspice(case: SpiceCase, spice_results: dict) -> None:
    G, volts, i_spice = spice_results[case.name]
    i_model = solve_currents(torch.from_numpy(G), torch.from_numpy(volts), **case.params).numpy()
    assert i_model.shape == i_spice.shape == (case.runs, case.shape[1])
    # Positive inputs: every current is > 0, so the element-wise relative error is meaningful.
    elementwise = np.abs(i_model[0] / i_spice[0] - 1.0).max()
    # Mixed-sign inputs: relative to the largest current of the run.
    normwise = spice.relative_error(i_model, i_spice, axis=1)
    assert elementwise <= 1e-8, f"element-wise relative error {elementwise:.3e}"
    assert normwise <= 1e-8, f"norm-wise relative error {normwise:.3e}"
    if all(v == 0.0 for v in case.params.values()):
        np.testing.assert_allclose(i_spice, volts @ G, rtol=1e-10, atol=0)


def test_p1_parasitics_change_currents_substantially(spice_results: dict) -> None:
    # The 64×64 P1 deck is a real test of the parasitics: ngspice's currents are far below the ideal V @ G.
    G, volts, i_spice = spice_results["64x64-P1"]
    ratio = i_spice[0].sum() / (volts[0] @ G).sum()
    assert 0.3 < ratio < 0.9


# --------------------------------------------------------------------------------------------------------------
# against an independent nodal analysis (all zero / non-zero combinations of the four resistances)

NAMES = ("r_driver", "r_wire_row", "r_wire_col", "r_sense")
VALUES = {"r_driver": 800.0, "r_wire_row": 4.0, "r_wire_col": 12.0, "r_sense": 1500.0}
COMBOS = [
    dict(zip(NAMES, (VALUES[n] if on else 0.0 for n, on in zip(NAMES, mask, strict=True)), strict=True))
    for mask in product((False, True), repeat=4)
]


@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (5, 8), (8, 5), (7, 7)])
def test_all_zero_nonzero_combinations_match_nodal_analysis(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 31 + shape[1])
    worst = 0.0
    for params in COMBOS:
        G = random_g(rng, shape)
        ref = spice.nodal_reference(G, **params)
        got = g_eff_np(G, **params)
        assert np.isfinite(got).all()
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    assert worst <= 1e-10, f"worst relative error {worst:.3e}"


@pytest.mark.parametrize(
    ("shape", "params"),
    [
        ((40, 36), P1),
        ((36, 40), _rand_params(20)),
        ((70, 34), _rand_params(21, ("r_wire_col",))),
        ((90, 90), P1),
        ((50, 50), {"r_driver": 3.0, "r_wire_row": 7e3, "r_wire_col": 2e4, "r_sense": 1e5}),  # extreme
    ],
)
def test_large_arrays_match_sparse_nodal_analysis(shape: tuple[int, int], params: dict[str, float]) -> None:
    rng = np.random.default_rng(sum(shape))
    G = random_g(rng, shape, zeros=0.02)
    ref = spice.nodal_reference(G, **params)
    got = g_eff_np(G, **params)
    pos = ref > 1e-3 * ref.max()
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-10
    assert np.abs(got[pos] / ref[pos] - 1.0).max() <= 1e-9


def test_overflow_free_row_form_matches_min_form(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    G = random_g(rng, (3, 45, 38))
    fast = g_eff_np(G, **P1)
    monkeypatch.setattr(circuits, "_MAX_LOG_SPAN", -1.0)  # force the exp(−|Δ log v|) construction
    slow = g_eff_np(G, **P1)
    np.testing.assert_allclose(slow, fast, rtol=1e-12, atol=0)


def test_extreme_row_attenuation_uses_safe_form_and_stays_exact() -> None:
    # r_wire_row·G up to 200 per segment: the voltage transfer along a row spans far more than exp(-200).
    rng = np.random.default_rng(6)
    G = random_g(rng, (40, 40))
    params = {"r_driver": 100.0, "r_wire_row": 1e7, "r_wire_col": 10.0, "r_sense": 100.0}
    ref = spice.nodal_reference(G, **params)
    got = g_eff_np(G, **params)
    assert np.isfinite(got).all()
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-9


# --------------------------------------------------------------------------------------------------------------
# structure: ideal case, batching, dtype, reciprocity


def test_zero_parasitics_return_g_exactly() -> None:
    G = torch.rand(2, 3, 17, 9, dtype=torch.float64) * G_MAX
    out = effective_conductance(G, r_driver=0, r_wire_row=0, r_wire_col=0, r_sense=0.0)
    assert torch.equal(out, G)
    assert out.data_ptr() != G.data_ptr()
    g32 = G.float()
    assert torch.equal(effective_conductance_p(g32, Parasitics(0.0, 0.0, 0.0, 0.0)), g32)


def test_ideal_limit_is_continuous() -> None:
    G = torch.from_numpy(random_g(np.random.default_rng(3), (12, 10)))
    tiny = effective_conductance(G, r_driver=1e-9, r_wire_row=1e-9, r_wire_col=1e-9, r_sense=1e-9)
    assert torch.allclose(tiny, G, rtol=1e-10, atol=0)
    # A positive resistance so small that 1/r overflows is treated as the short it is.
    sub = effective_conductance(G, r_driver=1e-320, r_wire_row=0.0, r_wire_col=0.0, r_sense=0.0)
    assert torch.equal(sub, G)


def test_batch_dims_chunking_and_dtype() -> None:
    rng = np.random.default_rng(4)
    G = torch.from_numpy(random_g(rng, (2, 3, 35, 20)))
    full = effective_conductance(G, **P1)
    assert full.shape == G.shape and full.dtype == torch.float64
    one_by_one = torch.stack([torch.stack([effective_conductance(G[a, b], **P1) for b in range(3)]) for a in range(2)])
    assert torch.equal(effective_conductance(G, max_batch=1, **P1), one_by_one)
    assert torch.allclose(full, one_by_one, rtol=1e-13, atol=0)
    out32 = effective_conductance(G.float(), **P1)
    assert out32.dtype == torch.float32
    assert torch.allclose(out32.double(), effective_conductance(G.float().double(), **P1), rtol=1e-7, atol=0)


def test_worker_threads_give_the_same_result_and_restore_torch_threads() -> None:
    rng = np.random.default_rng(14)
    G = torch.from_numpy(random_g(rng, (5, 40, 40)))
    before = torch.get_num_threads()
    one = effective_conductance(G, num_threads=1, **P1)
    two = effective_conductance(G, num_threads=2, **P1)  # chunks of 3 and 2 arrays on two worker threads
    assert torch.get_num_threads() == before
    torch.testing.assert_close(two, one, rtol=1e-13, atol=0)
    with pytest.raises(ValueError, match=r"^num_threads: invalid value 0"):
        effective_conductance(G, num_threads=0, **P1)


def test_reciprocity_transposed_circuit() -> None:
    # Swapping the roles of rows and columns (driver ↔ sense, row wire ↔ column wire, rot180 of Gᵀ) gives the
    # reciprocal network: G_eff'[a, b] = G_eff[M−1−b, N−1−a]. For square arrays both are solved directly.
    rng = np.random.default_rng(8)
    G = torch.from_numpy(random_g(rng, (4, 48, 48)))
    p = {"r_driver": 700.0, "r_wire_row": 3.0, "r_wire_col": 11.0, "r_sense": 2000.0}
    swapped = {"r_driver": 2000.0, "r_wire_row": 11.0, "r_wire_col": 3.0, "r_sense": 700.0}
    direct = effective_conductance(G, **p)
    mirrored = effective_conductance(G.transpose(-1, -2).flip(-1, -2), **swapped)
    torch.testing.assert_close(mirrored.flip(-1, -2).transpose(-1, -2), direct, rtol=1e-11, atol=0)


def test_solve_currents_is_v_times_g_eff() -> None:
    rng = np.random.default_rng(9)
    G = torch.from_numpy(random_g(rng, (3, 12, 7)))
    V = torch.from_numpy(rng.uniform(-1, 1, (5, 3, 12)))
    currents = solve_currents(G, V, **P1)
    assert currents.shape == (5, 3, 7)
    expect = torch.einsum("kbm,bmn->kbn", V, effective_conductance(G, **P1))
    torch.testing.assert_close(currents, expect, rtol=1e-13, atol=0)


def test_p1_constant_and_parasitics_dataclass() -> None:
    assert (P1_PARASITICS.r_driver_ohm, P1_PARASITICS.r_wire_row_ohm) == (1000.0, 5.0)
    assert (P1_PARASITICS.r_wire_col_ohm, P1_PARASITICS.r_sense_ohm) == (10.0, 1000.0)
    assert not P1_PARASITICS.is_ideal and Parasitics(0, 0, 0, 0).is_ideal
    G = torch.from_numpy(random_g(np.random.default_rng(10), (9, 11)))
    assert torch.equal(effective_conductance_p(G, P1_PARASITICS), effective_conductance(G, **P1))


# --------------------------------------------------------------------------------------------------------------
# physics sanity


def test_total_current_falls_strictly_with_every_resistance() -> None:
    # Rayleigh monotonicity: with all inputs at the same voltage the crossbar is a two-terminal resistor network,
    # so its total current strictly falls when any resistance grows.
    rng = np.random.default_rng(11)
    G = torch.from_numpy(random_g(rng, (6, 16, 16)))
    values = [0.0, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4]
    for name in NAMES:
        totals = torch.stack([effective_conductance(G, **{**P1, name: v}).sum((-1, -2)) for v in values])
        assert bool((totals[1:] < totals[:-1]).all()), name


@pytest.mark.parametrize("name", ["r_driver", "r_wire_col", "r_sense"])
def test_every_output_current_falls_with_driver_column_wire_and_sense(name: str) -> None:
    rng = np.random.default_rng(12)
    G = torch.from_numpy(random_g(rng, (8, 16, 16)))
    V = torch.from_numpy(rng.uniform(0.0, 1.0, (8, 16)))
    values = [0.0, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4]
    currents = torch.stack([solve_currents(G, V, **{**P1, name: v}) for v in values])  # (values, 8, 16)
    assert bool((currents[1:] < currents[:-1]).all())


def test_row_wire_redistributes_current_between_columns() -> None:
    # A longer row wire starves the far devices, so less current flows through the driver and the devices next
    # to it see more voltage: some columns GAIN current although the total falls. Per-column monotonicity in
    # r_wire_row is therefore not a law (the total is, see above).
    G = torch.full((4, 8), 20e-6, dtype=torch.float64)
    lo = solve_currents(G, torch.ones(4, dtype=torch.float64), **{**P1, "r_wire_row": 0.0})
    hi = solve_currents(G, torch.ones(4, dtype=torch.float64), **{**P1, "r_wire_row": 100.0})
    assert hi.sum() < lo.sum()
    assert hi[0] > lo[0] and hi[-1] < lo[-1]


def test_far_cells_lose_more_than_near_cells() -> None:
    # Uniform array: the cell far from both the driver (high j) and the sense amplifier (low i) keeps the
    # smallest fraction of its conductance; the ratio falls along every row and rises down every column.
    G = torch.full((32, 32), 10e-6, dtype=torch.float64)
    ratio = effective_conductance(G, **P1) / G
    assert bool((ratio[:, 1:] < ratio[:, :-1]).all())
    assert bool((ratio[1:, :] > ratio[:-1, :]).all())
    assert ratio[0, -1] == ratio.min() and ratio[-1, 0] == ratio.max()
    assert 0.5 < ratio[0, -1] < ratio[-1, 0] < 0.7


def test_larger_arrays_lose_more() -> None:
    rng = np.random.default_rng(13)
    gains = []
    for n in (8, 16, 32, 64):
        G = torch.from_numpy(random_g(rng, (4, n, n)))
        gains.append(float(effective_conductance(G, **P1).sum() / G.sum()))
    assert all(b < a for a, b in pairwise(gains)), gains
    assert gains[0] < 1.0
    # Mean of the per-cell ratios G_eff/G on uniform arrays (with log-uniform devices the mean of ratios is not a
    # loss measure: sneak paths lift tiny devices above their own conductance, see docs/ir_drop.md).
    ratios = [
        float((effective_conductance(torch.full((n, n), 10e-6, dtype=torch.float64), **P1) / 10e-6).mean())
        for n in (8, 16, 32, 64)
    ]
    assert all(b < a for a, b in pairwise(ratios)), ratios
    assert 0.3 < ratios[-1] < 0.5 < ratios[0] < 1.0


def test_p1_weight_gain_matches_reference_precheck() -> None:
    # papers.md §1.11 "Parasitics pre-check": RRAM (20/2 µS), Gaussian weights with max|W|/std = 4, one
    # differential pair per weight on separate tiles, P1 parasitics. The slope of W_NI against W is 0.60 on
    # 64×64 tiles, 0.75 without the driver resistance and 0.37 on 128×128 tiles (a 128×128 tile set here).
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(256, 128, generator=gen, dtype=torch.float64).clamp(-4.0, 4.0)
    w_max = float(W.abs().max())
    g_on, g_off = 20e-6, 2e-6
    g_pos = g_off + (g_on - g_off) * W.clamp_min(0.0) / w_max
    g_neg = g_off + (g_on - g_off) * (-W).clamp_min(0.0) / w_max

    def gain(tile: int, r_driver: float) -> float:
        def tiles(g: torch.Tensor) -> torch.Tensor:
            return g.reshape(256 // tile, tile, 128 // tile, tile).transpose(1, 2)

        eff = effective_conductance(torch.stack([tiles(g_pos), tiles(g_neg)]), **{**P1, "r_driver": r_driver})
        w_ni = (eff[0] - eff[1]).transpose(1, 2).reshape(256, 128) * w_max / (g_on - g_off)
        return float((w_ni * W).sum() / (W * W).sum())

    assert gain(64, 1000.0) == pytest.approx(0.60, abs=0.02)
    assert gain(64, 0.0) == pytest.approx(0.75, abs=0.02)
    assert gain(128, 1000.0) == pytest.approx(0.37, abs=0.02)


# --------------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), -float("inf"), "5", None, True])
def test_bad_resistance_names_the_argument(name: str, value: object) -> None:
    G = torch.full((3, 3), 1e-6, dtype=torch.float64)
    with pytest.raises(ValueError, match=rf"^{name}: invalid value .*allowed: a finite number >= 0 \(ohm\)"):
        effective_conductance(G, **{**P1, name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1e-6, float("nan"), float("inf")])
def test_bad_conductance_names_g_value_and_index(value: float) -> None:
    G = torch.full((2, 4, 5), 1e-6, dtype=torch.float64)
    G[1, 2, 3] = value
    with pytest.raises(ValueError, match=r"^G: invalid value .*at index \(1, 2, 3\).*allowed: finite conductances"):
        effective_conductance(G, **P1)


@pytest.mark.parametrize(
    ("G", "fragment"),
    [
        ([[1e-6]], "torch.Tensor"),
        (torch.ones(5, dtype=torch.float64), "shape"),
        (torch.ones(0, 3, dtype=torch.float64), "M >= 1"),
        (torch.ones(3, 3, dtype=torch.int64), "floating-point"),
    ],
)
def test_bad_g_type_and_shape(G: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=rf"^G: invalid value .*{fragment}"):
        effective_conductance(G, **P1)  # type: ignore[arg-type]


def test_bad_voltages_and_max_batch() -> None:
    G = torch.full((4, 3), 1e-6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^V: invalid value 'tensor of shape \(3,\)'; allowed: .*\(\.\.\., 4\)"):
        solve_currents(G, torch.ones(3, dtype=torch.float64), **P1)
    with pytest.raises(ValueError, match=r"^V: invalid value .*non-finite"):
        solve_currents(G, torch.tensor([1.0, float("nan"), 0.0, 0.0], dtype=torch.float64), **P1)
    with pytest.raises(ValueError, match=r"^V: .*broadcastable"):
        solve_currents(torch.ones(2, 4, 3, dtype=torch.float64) * 1e-6, torch.ones(3, 4, dtype=torch.float64), **P1)
    with pytest.raises(ValueError, match=r"^max_batch: invalid value 0"):
        effective_conductance(G, max_batch=0, **P1)


def test_bad_parasitics_dataclass_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"^r_wire_col_ohm: invalid value -3"):
        Parasitics(1000.0, 5.0, -3.0, 1000.0)
    with pytest.raises(ValueError, match=r"^r_sense_ohm: invalid value nan"):
        Parasitics(1000.0, 5.0, 10.0, float("nan"))
    with pytest.raises(ValueError, match=r"^p: invalid value"):
        effective_conductance_p(torch.ones(2, 2), {"r_driver_ohm": 1.0})  # type: ignore[arg-type]
