"""Exact resistive-parasitic (IR-drop) model of a crossbar: the input-independent effective conductance.

Circuit (the contract; see ``docs/ir_drop.md``)
------------------------------------------------
An M×N crossbar with device conductances ``G[i, j]`` (S):

- row i is driven by an ideal voltage source ``V[i]`` (V) through ``r_driver`` (Ω) into row node (i, 0);
- along row i, row node (i, j) connects to (i, j+1) through ``r_wire_row`` (Ω);
- device ``G[i, j]`` connects row node (i, j) to column node (i, j);
- along column j, column node (i, j) connects to (i+1, j) through ``r_wire_col`` (Ω);
- the last column node (M−1, j) connects to ground (the sense amplifier's virtual ground) through ``r_sense`` (Ω);
- the output ``I[j]`` (A) is the current through ``r_sense`` of column j.

The network is linear, so ``I = V @ G_eff`` exactly, for an M×N matrix ``G_eff`` (S) that depends on ``G`` and the
four resistances only. A zero resistance is an ideal short.

Algorithm (block-tridiagonal elimination as a Norton-equivalent sweep)
----------------------------------------------------------------------
Row i alone, seen from its N column nodes (held at voltages x), injects the currents ``h_i·V[i] − S_i·x`` into them.
``S_i`` (N×N, S) and ``h_i`` (N, S) follow in O(N²) from the row's resistor chain: its loaded impedance matrix is the
inverse of a tridiagonal M-matrix, hence semiseparable, and is built from two scalar ladder recursions.
Rows 0..k together are one Norton equivalent on the column nodes of row k: short-circuit currents ``J_k`` (one
column per input row) and admittance ``E_k`` (N×N). Passing the column wire adds a resistor r in series with every
port, ``E ← (1 + r·E)⁻¹·E`` and ``J ← (1 + r·E)⁻¹·J`` (no division by r, so r = 0 is exact); then row k+1 adds in
parallel, ``E ← E + S_{k+1}``. The sense resistors are a last series step, after which the port currents are the
output currents. The series step is computed by a recursive 2×2 block algorithm ("add the resistors to half of
the ports, then to the other half") whose work is batched matrix products, with small LU solves at the leaves.
All quantities stay at device scale (the wire conductances never appear), so the result is accurate to ~1e-12
relative in float64 even with 0.04 µS devices and 5 Ω wires.

Cost per crossbar: ``max(M, N)`` steps, each about ``(4/3)·n³ + 2·n²·k`` flops with ``n = min(M, N)`` (k ≤ the
number of inputs seen so far): O(max·min³). A wide array is solved as its reciprocal (transposed) circuit so that
the dense blocks have size ``min(M, N)``. Everything is batched over the leading dimensions of ``G``.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from xbarlab.hardware import ConfigError

__all__ = [
    "P1_PARASITICS",
    "Parasitics",
    "effective_conductance",
    "effective_conductance_p",
    "solve_currents",
]

# Leaf size of the recursive series step (a batched LU solve of this size or smaller).
_LEAF = 16
# Target bytes of one (chunk, n, n) float64 working matrix; chunks of about this size stay cache friendly.
_CHUNK_BYTES = 4 * 2**20
# The O(1)-pass "min" construction of the row impedance matrix is used while the voltage transfer along a row
# stays above exp(-_MAX_LOG_SPAN); beyond that (absurd parasitics) a slower overflow-free form is used.
_MAX_LOG_SPAN = 200.0


# --------------------------------------------------------------------------------------------------------------
# validation


def _check_resistance(name: str, value: Any) -> float:
    """A resistance argument (Ω) as a float; ConfigError unless a finite number >= 0."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, value, "a finite number >= 0 (ohm)")
    r = float(value)
    if math.isnan(r) or math.isinf(r) or r < 0.0:
        raise ConfigError(name, value, "a finite number >= 0 (ohm)")
    # A positive resistance so small that its conductance overflows is a short to within float64 precision.
    if r > 0.0 and math.isinf(1.0 / r):
        return 0.0
    return r


def _check_conductances(G: Any, name: str = "G") -> torch.Tensor:
    """G (S) unchanged; ConfigError unless a real floating tensor (..., M, N), M, N >= 1, finite and >= 0."""
    if not isinstance(G, torch.Tensor):
        raise ConfigError(name, type(G).__name__, "a torch.Tensor of shape (..., M, N), conductances in S")
    if G.dim() < 2 or G.shape[-1] < 1 or G.shape[-2] < 1:
        raise ConfigError(
            name, f"tensor of shape {tuple(G.shape)}", "a tensor of shape (..., M, N) with M >= 1 and N >= 1"
        )
    if not G.dtype.is_floating_point:
        raise ConfigError(name, f"tensor of dtype {G.dtype}", "a real floating-point tensor (conductances in S)")
    if G.device.type == "meta":  # meta tensors carry no values: nothing to check (and no host read possible)
        return G
    bad = ~torch.isfinite(G) | (G < 0)
    if bool(bad.any()):
        idx = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
        raise ConfigError(name, f"{G[idx].item()!r} at index {idx}", "finite conductances >= 0 (S) in every element")
    return G


@dataclass(frozen=True)
class Parasitics:
    """The four parasitic resistances of the crossbar circuit (module docstring), in Ω; each finite and >= 0.

    ``r_driver_ohm``: source → row node (i, 0); ``r_wire_row_ohm``: between adjacent row nodes;
    ``r_wire_col_ohm``: between adjacent column nodes; ``r_sense_ohm``: last column node → virtual ground.
    """

    r_driver_ohm: float
    r_wire_row_ohm: float
    r_wire_col_ohm: float
    r_sense_ohm: float

    def __post_init__(self) -> None:
        for field_name in ("r_driver_ohm", "r_wire_row_ohm", "r_wire_col_ohm", "r_sense_ohm"):
            _check_resistance(field_name, getattr(self, field_name))

    @property
    def is_ideal(self) -> bool:
        """True when all four resistances are 0 Ω (then G_eff == G)."""
        return all(r == 0 for r in self.as_kwargs().values())

    def as_kwargs(self) -> dict[str, float]:
        """Keyword arguments for :func:`effective_conductance` (Ω)."""
        return {
            "r_driver": float(self.r_driver_ohm),
            "r_wire_row": float(self.r_wire_row_ohm),
            "r_wire_col": float(self.r_wire_col_ohm),
            "r_sense": float(self.r_sense_ohm),
        }


P1_PARASITICS = Parasitics(r_driver_ohm=1000.0, r_wire_row_ohm=5.0, r_wire_col_ohm=10.0, r_sense_ohm=1000.0)
"""P1 parasitics (docs/papers.md §1.3): driver 1 kΩ, row wire 5 Ω and column wire 10 Ω per cell segment, sense 1 kΩ.
"""


# --------------------------------------------------------------------------------------------------------------
# row Norton equivalents


@dataclass
class _RowModels:
    """Per-row Norton equivalents seen from the column nodes, for a chunk of crossbars (all float64, (B, M, N)).

    ``S_i = diag(s_diag) − offdiag(G_a·G_b·Z[a, b])`` and ``h_i = h``, where Z (Ω) is the loaded impedance matrix
    of the row chain (column nodes grounded). ``Z[a, b] = min(x_a·y_b, x_b·y_a)``, so the off-diagonal part of S is
    ``min(p_a·q_b, p_b·q_a)`` with ``p = G·x``, ``q = G·y``. When that form could overflow, ``zdiag`` (Ω) and
    ``log_v`` (log voltage transfer along the row) give ``Z[a, b] = zdiag[min]·exp(−|log_v[a] − log_v[b]|)``.
    """

    s_diag: torch.Tensor  # S
    h: torch.Tensor  # S
    p: torch.Tensor | None  # S·Ω
    q: torch.Tensor | None  # S
    zdiag: torch.Tensor  # Ω
    log_v: torch.Tensor  # dimensionless


def _row_models(G: torch.Tensor, r_drv: float, r_w: float) -> _RowModels:
    """Norton equivalents of every row (resistor chain with driver ``r_drv`` and segments ``r_w``, in Ω).

    Two scalar ladder recursions along the row (vectorised over crossbars and rows), in impedance/admittance forms
    that stay finite for zero resistances:

    - ``lr[j]`` (S): admittance seen from node j into the part of the row right of j (through the wire j→j+1);
    - ``rex[j]`` (Ω): impedance seen from node j to the left (through the wire j−1→j, or the driver for j = 0),
      excluding node j's own device.
    """
    n = G.shape[-1]
    lr = torch.zeros_like(G)
    acc = torch.zeros_like(G[..., 0])
    for j in range(n - 2, -1, -1):
        t = G[..., j + 1] + acc
        acc = t / (1.0 + r_w * t)
        lr[..., j] = acc
    rex = torch.empty_like(G)
    cur = torch.full_like(G[..., 0], r_drv)
    rex[..., 0] = cur
    for j in range(1, n):
        cur = r_w + cur / (1.0 + cur * G[..., j - 1])
        rex[..., j] = cur
    load = G + lr  # S, admittance of node j to ground excluding the left part
    den = 1.0 + rex * load
    zdiag = rex / den  # Ω, Z[j, j]
    s_diag = G * (1.0 + rex * lr) / den  # S, = G − G²·Z[j, j] without cancellation
    log_mu = -torch.log1p(r_w * load)  # voltage ratio node j / node j−1 when driven from the left
    log_mu[..., 0] = 0.0
    log_v = torch.cumsum(log_mu, dim=-1)
    v0 = 1.0 / (1.0 + r_drv * load[..., :1])  # row node (i, 0) voltage per volt of V[i], columns grounded
    h = G * v0 * torch.exp(log_v)
    p: torch.Tensor | None = None
    q: torch.Tensor | None = None
    # one host read per chunk (at programming time, never in a forward); meta has no values: the usual fast form
    if log_v.device.type == "meta" or float(log_v[..., -1].min()) > -_MAX_LOG_SPAN:
        vhat = torch.exp(log_v)
        p = G * zdiag / vhat
        q = G * vhat
    return _RowModels(s_diag=s_diag, h=h, p=p, q=q, zdiag=zdiag, log_v=log_v)


def _row_offdiag(rows: _RowModels, Gk: torch.Tensor, k: int) -> torch.Tensor:
    """(B, N, N) matrix whose off-diagonal part is ``G_a·G_b·Z[a, b]`` of row k (S); the diagonal is ``−s_diag``."""
    if rows.p is not None and rows.q is not None:
        pk, qk = rows.p[:, k], rows.q[:, k]
        off = torch.minimum(pk[:, :, None] * qk[:, None, :], qk[:, :, None] * pk[:, None, :])
    else:
        lv = rows.log_v[:, k]
        zd = rows.zdiag[:, k]
        n = lv.shape[-1]
        upper = torch.ones(n, n, dtype=torch.bool, device=lv.device).triu_()
        d = lv[:, None, :] - lv[:, :, None]  # [a, b] = log_v[b] − log_v[a] (<= 0 for b >= a)
        d = torch.where(upper, d, d.transpose(-1, -2))
        zmin = torch.where(upper, zd[:, :, None], zd[:, None, :])
        off = torch.exp(d) * zmin * Gk[:, :, None] * Gk[:, None, :]
    off.diagonal(dim1=-2, dim2=-1).copy_(-rows.s_diag[:, k])
    return off


# --------------------------------------------------------------------------------------------------------------
# series step


def _series(E: torch.Tensor, r: float) -> torch.Tensor:
    """``(1 + r·E)⁻¹·E`` for symmetric PSD admittance matrices ``E`` (B, n, n) in S and a resistance r > 0 in Ω.

    Physically: the admittance seen through a resistor r in series with every port. Recursive on a 2×2 block
    split (:func:`_series_blocks`); leaves of at most ``_LEAF`` ports are batched LU solves. All matrices
    inverted, ``1 + r·E_block``, have eigenvalues >= 1: no pivoting issue, no cancellation beyond cond(1 + r·E).
    """
    n = E.shape[-1]
    if n <= _LEAF:
        A = E * r
        A.diagonal(dim1=-2, dim2=-1).add_(1.0)
        return torch.linalg.solve_ex(A, E)[0]
    h = n // 2
    App, Y, Dp = _series_blocks(E[:, :h, :h], E[:, h:, :h], E[:, h:, h:], r)
    return torch.cat([torch.cat([App, Y.transpose(-1, -2)], dim=-1), torch.cat([Y, Dp], dim=-1)], dim=-2)


# --------------------------------------------------------------------------------------------------------------
# the sweep


def _sweep_full(G: torch.Tensor, r_drv: float, r_wr: float, r_wc: float, r_sen: float) -> torch.Tensor:
    """G_eff (B, M, N) in S for a chunk of crossbars G (B, M, N) in S, float64: sweep over the M rows."""
    B, M, N = G.shape
    rows = _row_models(G, r_drv, r_wr)
    # E: admittance (S) of rows 0..k seen from the column nodes of row k. J: its short-circuit currents into those
    # nodes, one row per input row (A per V), i.e. J[:, i] is the current vector for V = e_i.
    E = -_row_offdiag(rows, G[:, 0], 0)
    J = torch.zeros(B, M, N, dtype=G.dtype, device=G.device)
    J[:, 0] = rows.h[:, 0]
    for k in range(1, M):
        if r_wc > 0.0:
            E = _series(E, r_wc)
            Jk = J[:, :k]
            Jk.copy_(torch.baddbmm(Jk, Jk, E, alpha=-r_wc))  # J·(1 + r·E_old)⁻¹ = J − r·J·E_new (E symmetric)
        else:
            E = E.clone()
        E.sub_(_row_offdiag(rows, G[:, k], k))
        J[:, k] = rows.h[:, k]
    if r_sen > 0.0:
        E = _series(E, r_sen)
        J = torch.baddbmm(J, J, E, alpha=-r_sen)
    return J


_Blocks = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _row_offdiag_blocks(rows: _RowModels, Gk: torch.Tensor, k: int, h: int) -> _Blocks:
    """:func:`_row_offdiag` of row k as 2×2 blocks (11, 21, 22) split at h; the 21 block needs no ``min``."""
    if rows.p is None or rows.q is None:
        full = _row_offdiag(rows, Gk, k)
        return full[:, :h, :h], full[:, h:, :h], full[:, h:, h:]
    pk, qk = rows.p[:, k], rows.q[:, k]
    sk = rows.s_diag[:, k]
    out = []
    for sl in (slice(None, h), slice(h, None)):
        p, q = pk[:, sl], qk[:, sl]
        o = torch.minimum(p[:, :, None] * q[:, None, :], q[:, :, None] * p[:, None, :])
        o.diagonal(dim1=-2, dim2=-1).copy_(-sk[:, sl])
        out.append(o)
    o21 = qk[:, h:, None] * pk[:, None, :h]  # a >= h > b: Z[a, b] = x_b·y_a
    return out[0], o21, out[1]


def _series_blocks(A: torch.Tensor, C: torch.Tensor, D: torch.Tensor, r: float) -> _Blocks:
    """:func:`_series` of the symmetric matrix with blocks A = E11, C = E21, D = E22; returns the new blocks.

    Resistors on ports 1: ``A' = (1 + r·A)⁻¹·A`` (recursion), ``Xᵀ = C·(1 + r·A)⁻¹ = C − r·C·A'``, and ports 2
    see ``D1 = D − r·C·X``; resistors on ports 2: ``D' = (1 + r·D1)⁻¹·D1`` (recursion), the new E21
    ``Y = (1 + r·D1)⁻¹·Xᵀ = Xᵀ − r·D'·Xᵀ`` and ``A'' = A' − r·X·Y``. Only contiguous matrices are accumulated
    into (no transposed copies).
    """
    Ap = _series(A, r)
    Xt = torch.baddbmm(C, C, Ap, alpha=-r)
    Dp = _series(torch.baddbmm(D, C, Xt.transpose(-1, -2), alpha=-r), r)
    Y = torch.baddbmm(Xt, Dp, Xt, alpha=-r)
    App = torch.baddbmm(Ap, Xt.transpose(-1, -2), Y, alpha=-r)
    return App, Y, Dp


def _update_currents(J: torch.Tensor, k: int, blocks: _Blocks, h: int, r: float) -> None:
    """``J[:, :k] ← J[:, :k] − r·J[:, :k]·E_new`` with the symmetric E_new given as blocks (in place)."""
    A, C, D = blocks
    J1, J2 = J[:, :k, :h], J[:, :k, h:]
    n1 = torch.baddbmm(J1, J1, A, alpha=-r).baddbmm_(J2, C, alpha=-r)
    n2 = torch.baddbmm(J2, J2, D, alpha=-r).baddbmm_(J1, C.transpose(-1, -2), alpha=-r)
    J1.copy_(n1)
    J2.copy_(n2)


def _sweep_blocked(G: torch.Tensor, r_drv: float, r_wr: float, r_wc: float, r_sen: float) -> torch.Tensor:
    """As :func:`_sweep_full`, with E kept as 2×2 blocks between steps (no assembly copies); N >= 2."""
    B, M, N = G.shape
    h = N // 2
    rows = _row_models(G, r_drv, r_wr)
    o11, o21, o22 = _row_offdiag_blocks(rows, G[:, 0], 0, h)
    blocks: _Blocks = (-o11, -o21, -o22)
    J = torch.zeros(B, M, N, dtype=G.dtype, device=G.device)
    J[:, 0] = rows.h[:, 0]
    for k in range(1, M):
        if r_wc > 0.0:
            blocks = _series_blocks(*blocks, r_wc)
            _update_currents(J, k, blocks, h, r_wc)
        else:
            blocks = (blocks[0].clone(), blocks[1].clone(), blocks[2].clone())
        for b, o in zip(blocks, _row_offdiag_blocks(rows, G[:, k], k, h), strict=True):
            b.sub_(o)
        J[:, k] = rows.h[:, k]
    if r_sen > 0.0:
        blocks = _series_blocks(*blocks, r_sen)
        _update_currents(J, M, blocks, h, r_sen)
    return J


def _sweep(G: torch.Tensor, r_drv: float, r_wr: float, r_wc: float, r_sen: float) -> torch.Tensor:
    """G_eff (S) of a chunk G (B, M, N) in S, float64, resistances in Ω (blocked form beyond two leaves)."""
    if G.shape[-1] > 2 * _LEAF:
        return _sweep_blocked(G, r_drv, r_wr, r_wc, r_sen)
    return _sweep_full(G, r_drv, r_wr, r_wc, r_sen)


def _solve_chunks(
    g: torch.Tensor, r: tuple[float, float, float, float], max_batch: int | None, num_threads: int | None
) -> list[torch.Tensor]:
    """:func:`_sweep` over chunks of the batch g (B, M, N), float64; CPU chunks on a pool of worker threads."""
    batch, n = g.shape[0], g.shape[-1]
    chunk = max_batch if max_batch is not None else max(1, _CHUNK_BYTES // (8 * n * n))
    if g.device.type != "cpu":
        return [_sweep(g[s : s + chunk], *r) for s in range(0, batch, chunk)]
    workers = num_threads if num_threads is not None else torch.get_num_threads()
    if max_batch is None and workers > 1:
        chunk = min(chunk, -(-batch // workers))  # give every worker a chunk
    starts = range(0, batch, chunk)
    workers = min(workers, len(starts))

    def job(s: int) -> torch.Tensor:
        torch.set_num_threads(1)  # per worker (OpenMP's thread count is a per-thread setting)
        return _sweep(g[s : s + chunk], *r)

    before = torch.get_num_threads()
    try:
        if workers == 1:
            return [job(s) for s in starts]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(job, starts))
    finally:
        torch.set_num_threads(before)


def effective_conductance(
    G: torch.Tensor,
    *,
    r_driver: float,
    r_wire_row: float,
    r_wire_col: float,
    r_sense: float,
    max_batch: int | None = None,
    num_threads: int | None = None,
) -> torch.Tensor:
    """Exact effective conductance matrix G_eff (S) of crossbars with resistive parasitics.

    ``I = V @ G_eff`` gives the sense currents I (A, shape (..., N)) for row voltages V (V, shape (..., M)) of the
    circuit in the module docstring, exactly (to float64 round-off, ~1e-12 relative).

    Args:
        G: device conductances in S, shape (..., M, N); leading dimensions are independent crossbars. Finite, >= 0.
        r_driver: driver resistance (source → row node (i, 0)), Ω, finite, >= 0.
        r_wire_row: row-wire resistance per cell segment, Ω, finite, >= 0.
        r_wire_col: column-wire resistance per cell segment, Ω, finite, >= 0.
        r_sense: sense resistance (last column node → virtual ground), Ω, finite, >= 0.
        max_batch: crossbars solved together (a memory bound: about ``max_batch·(10·min(M, N)² + 3·M·N)·8``
            bytes of temporaries, plus the output); default: chunks of about 4 MiB per (n×n) working matrix.
        num_threads: CPU worker threads, each solving whole chunks with one torch intra-op thread; default
            ``torch.get_num_threads()``. During the call torch's intra-op thread count is 1 (restored afterwards):
            the solver is many mid-sized batched matrix products, whose OpenMP/MKL barriers cost 10–100× more
            than they gain on a busy machine, while chunk-level threads scale without barriers. Ignored off CPU.

    Returns:
        G_eff with the shape, device and dtype of ``G`` (computed in float64). All four resistances 0 → ``G``
        exactly. Not differentiable (computed without autograd).

    Raises:
        ConfigError (a ValueError): a bad argument; the message names it, its value and the allowed range.
    """
    G = _check_conductances(G)
    r_drv = _check_resistance("r_driver", r_driver)
    r_wr = _check_resistance("r_wire_row", r_wire_row)
    r_wc = _check_resistance("r_wire_col", r_wire_col)
    r_sen = _check_resistance("r_sense", r_sense)
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise ConfigError("max_batch", max_batch, "None or an integer >= 1")
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
    ):
        raise ConfigError("num_threads", num_threads, "None or an integer >= 1")
    if r_drv == 0.0 and r_wr == 0.0 and r_wc == 0.0 and r_sen == 0.0:
        return G.detach().clone()
    *lead, M, N = G.shape
    with torch.no_grad():
        g = G.detach().to(torch.float64).reshape(-1, M, N)
        transposed = N > M
        if transposed:
            # Reciprocity: the transposed circuit (columns driven through r_sense from their far end, rows sensed
            # through r_driver) has G_eff' = rot180(G_eff)ᵀ; its dense blocks have size min(M, N).
            g = g.transpose(-1, -2).flip(-1, -2)
            r_drv, r_wr, r_wc, r_sen = r_sen, r_wc, r_wr, r_drv
        parts = _solve_chunks(g, (r_drv, r_wr, r_wc, r_sen), max_batch, num_threads)
        out = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
        if transposed:
            out = out.flip(-1, -2).transpose(-1, -2)
        return out.reshape(*lead, M, N).to(G.dtype).contiguous()


def effective_conductance_p(
    G: torch.Tensor, p: Parasitics, *, max_batch: int | None = None, num_threads: int | None = None
) -> torch.Tensor:
    """:func:`effective_conductance` with the resistances of a :class:`Parasitics` (Ω); G and result in S."""
    if not isinstance(p, Parasitics):
        raise ConfigError("p", p, "a Parasitics instance")
    return effective_conductance(G, max_batch=max_batch, num_threads=num_threads, **p.as_kwargs())


def solve_currents(
    G: torch.Tensor,
    V: torch.Tensor,
    *,
    r_driver: float,
    r_wire_row: float,
    r_wire_col: float,
    r_sense: float,
) -> torch.Tensor:
    """Sense currents I (A) for row voltages V (V): ``I[..., j] = Σ_i V[..., i]·G_eff[..., i, j]``.

    Args:
        G: conductances in S, shape (..., M, N).
        V: row voltages in V, shape (..., M); leading dimensions broadcast against those of G. Finite.
        r_driver, r_wire_row, r_wire_col, r_sense: as in :func:`effective_conductance` (Ω).

    Returns:
        I of shape broadcast(V.shape[:-1], G.shape[:-2]) + (N,), float64 unless G and V share another float dtype.
    """
    G = _check_conductances(G)
    if not isinstance(V, torch.Tensor):
        raise ConfigError("V", type(V).__name__, "a torch.Tensor of shape (..., M), voltages in V")
    M = G.shape[-2]
    if V.dim() < 1 or V.shape[-1] != M:
        raise ConfigError("V", f"tensor of shape {tuple(V.shape)}", f"a tensor of shape (..., {M}) (M = G rows)")
    if not V.dtype.is_floating_point:
        raise ConfigError("V", f"tensor of dtype {V.dtype}", "a real floating-point tensor (voltages in V)")
    if not bool(torch.isfinite(V).all()):
        raise ConfigError("V", "a tensor with non-finite elements", "finite voltages (V)")
    try:
        torch.broadcast_shapes(V.shape[:-1], G.shape[:-2])
    except RuntimeError as exc:
        raise ConfigError(
            "V", f"tensor of shape {tuple(V.shape)}", f"leading dims broadcastable to {tuple(G.shape[:-2])}"
        ) from exc
    g_eff = effective_conductance(
        G.to(torch.float64), r_driver=r_driver, r_wire_row=r_wire_row, r_wire_col=r_wire_col, r_sense=r_sense
    )
    out = (V.to(torch.float64).unsqueeze(-2) @ g_eff).squeeze(-2)
    dtype = G.dtype if G.dtype == V.dtype else torch.float64
    return out.to(dtype)
