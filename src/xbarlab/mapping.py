"""Weights → quantised integers → bit slices → conductances on crossbar tiles, and back.

Layout conventions (docs/papers.md §1.10): a layer's weight becomes, per group, the matrix ``W2d`` of shape
(K, N) = (C_in/groups · prod(kernel), C_out/groups): rows are crossbar inputs (word lines), columns outputs
(bit lines). It is zero-padded to whole tiles of ``rows × data_cols`` and every physical array is a tensor slice
of shape (groups, slices, polarities, row_tiles, col_tiles, rows, cols): tiles are tensor dimensions.

Encoding (``w_max = max|W|`` per layer, symmetric):

* differential, quantised: q = round(W/w_max·(2^b − 1)); the positive and negative device of a pair hold the
  slices of max(q, 0) and max(−q, 0); the idle device sits at G_off.
* offset, quantised: q = round(W/w_max·(2^(b−1) − 1)); devices hold the slices of X = q + 2^(b−1) and every
  tile's last column is a reference column holding the slices of 2^(b−1), subtracted per slice.
* unquantised: one device pair (or one device plus reference) holds |W|/w_max (or (W/w_max + 1)/2) exactly.

A digit d ∈ [0, L−1] of a device with L levels is programmed to G = G_off + (G_on − G_off)·d/(L − 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch

from xbarlab.hardware import HardwareConfig

WMax = TypeVar("WMax", float, torch.Tensor)
"""A layer's max|W| (weight units): a Python float, or a 0-dim tensor on the weights' device (no host read)."""


@dataclass(frozen=True)
class TileLayout:
    """Geometry and encoding of one layer on crossbar tiles."""

    groups: int
    k: int
    """Rows of the per-group weight matrix (inputs, C_in/groups·prod(kernel))."""
    n: int
    """Columns of the per-group weight matrix (outputs, C_out/groups)."""
    rows: int
    cols: int
    data_cols: int
    """Columns per tile that hold weights (cols − 1 with the offset mapping's reference column)."""
    num_slices: int
    levels: int
    """Conductance levels per device (2 means a continuous device for unquantised weights)."""
    differential: bool
    quantized: bool
    weight_bits: int
    bits_per_slice: int

    @property
    def tiles_r(self) -> int:
        return -(-self.k // self.rows)

    @property
    def tiles_c(self) -> int:
        return -(-self.n // self.data_cols)

    @property
    def k_pad(self) -> int:
        return self.tiles_r * self.rows

    @property
    def n_pad(self) -> int:
        return self.tiles_c * self.data_cols

    @property
    def polarities(self) -> int:
        return 2 if self.differential else 1

    @property
    def max_level(self) -> float:
        """L − 1: the digit that maps to G_on (1 for continuous devices)."""
        return 1.0 if not self.quantized else float(self.levels - 1)

    @property
    def num_arrays(self) -> int:
        """Physical crossbar arrays used by the layer."""
        return self.groups * self.num_slices * self.polarities * self.tiles_r * self.tiles_c

    def slice_significance(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """Shift-and-add weight of each slice (LSB first), on ``device`` (CPU by default), float64 by default."""
        base = float(2**self.bits_per_slice)
        return torch.tensor([base**s for s in range(self.num_slices)], dtype=dtype, device=device)

    def weight_unit(self, w_max: WMax) -> WMax:
        """Weight value represented by one integer step (weight units); a tensor ``w_max`` gives a tensor."""
        if not self.quantized:
            return w_max if self.differential else 2.0 * w_max
        top = 2**self.weight_bits - 1 if self.differential else 2 ** (self.weight_bits - 1) - 1
        return w_max / top


def make_layout(hw: HardwareConfig, *, groups: int, k: int, n: int) -> TileLayout:
    """Tile layout of a (groups, k, n) weight matrix under a hardware config."""
    w = hw.weights
    differential = w.mapping == "differential"
    cols = hw.crossbar.cols
    data_cols = cols if differential else cols - 1
    if data_cols < 1:
        raise ValueError(f"crossbar.cols: invalid value {cols}; allowed: >= 2 with the offset mapping")
    if not w.quantize:
        slices, levels, bits_per_slice = 1, 2, w.bits
    elif w.noise_granularity == "weight":
        slices, levels, bits_per_slice = 1, 2**w.bits, w.bits
    else:
        slices, levels, bits_per_slice = hw.num_slices, 2**w.bits_per_cell, w.bits_per_cell
    return TileLayout(
        groups=groups,
        k=k,
        n=n,
        rows=hw.crossbar.rows,
        cols=cols,
        data_cols=data_cols,
        num_slices=slices,
        levels=levels,
        differential=differential,
        quantized=w.quantize,
        weight_bits=w.bits,
        bits_per_slice=bits_per_slice,
    )


# --------------------------------------------------------------------------------------------------- matrices


def weight_to_matrix(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(C_out, C_in/groups, *kernel) or (out, in) → (groups, K, N) with rows = inputs, columns = outputs."""
    c_out = weight.shape[0]
    per_group = c_out // groups
    flat = weight.reshape(groups, per_group, -1)  # (G, N, K)
    return flat.transpose(1, 2).contiguous()


def matrix_to_weight(matrix: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`weight_to_matrix`: (..., groups, K, N) → weight of ``shape``."""
    lead = matrix.shape[:-3]
    flat = matrix.transpose(-1, -2)  # (..., G, N, K)
    return flat.reshape(*lead, *shape)


# --------------------------------------------------------------------------------------------------- encoding


def quantize(w2d: torch.Tensor, w_max: float | torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """Signed integer weights (float64) for quantised layouts; W/w_max in [−1, 1] for continuous ones.

    ``w_max`` may be a 0-dim tensor on ``w2d``'s device: then no value is read on the host.
    """
    if isinstance(w_max, torch.Tensor):
        w = w_max.to(torch.float64)
        scale: float | torch.Tensor = torch.where(w > 0, w, torch.ones_like(w))
    else:
        scale = w_max if w_max > 0 else 1.0
    x = w2d.to(torch.float64) / scale
    if not layout.quantized:
        return x
    top = 2**layout.weight_bits - 1 if layout.differential else 2 ** (layout.weight_bits - 1) - 1
    return torch.round(x * top).clamp(-top, top)


def split_slices(value: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """Non-negative integer (or continuous) values → digits per slice, new leading dim S (LSB first)."""
    if not layout.quantized or layout.num_slices == 1:
        return value.unsqueeze(0)
    base = 2**layout.bits_per_slice
    digits = []
    rest = value
    for _ in range(layout.num_slices):
        digits.append(torch.remainder(rest, base))
        rest = torch.div(rest, base, rounding_mode="floor")
    return torch.stack(digits, 0)


def reference_digits(layout: TileLayout, device: torch.device | str | None = None) -> torch.Tensor:
    """Digits (S,) of the offset mapping's reference value (float64, on ``device``, CPU by default)."""
    ref = 0.5 if not layout.quantized else float(2 ** (layout.weight_bits - 1))
    return split_slices(torch.tensor(ref, dtype=torch.float64, device=device), layout)


def _tile(m: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """(..., k_pad, n_pad) → (..., Tr, Tc, rows, data_cols)."""
    lead = m.shape[:-2]
    t = m.reshape(*lead, layout.tiles_r, layout.rows, layout.tiles_c, layout.data_cols)
    nd = len(lead)
    return t.permute(*range(nd), nd, nd + 2, nd + 1, nd + 3)


def _untile(t: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """(..., Tr, Tc, rows, data_cols) → (..., k_pad, n_pad)."""
    lead = t.shape[:-4]
    nd = len(lead)
    m = t.permute(*range(nd), nd, nd + 2, nd + 1, nd + 3)
    return m.reshape(*lead, layout.k_pad, layout.n_pad)


def target_digits(w2d: torch.Tensor, w_max: float | torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """Digits of every physical device: (groups, S, P, Tr, Tc, rows, cols), float64 on ``w2d``'s device, padding
    at digit 0."""
    q = quantize(w2d, w_max, layout)
    q = torch.nn.functional.pad(q, (0, layout.n_pad - layout.n, 0, layout.k_pad - layout.k))
    if layout.differential:
        pos = split_slices(q.clamp_min(0), layout)  # (S, G, Kp, Np)
        neg = split_slices((-q).clamp_min(0), layout)
        digits = torch.stack([pos, neg], 2).transpose(0, 1)  # (G, S, 2, Kp, Np)
        return _tile(digits, layout)
    offset = 0.5 if not layout.quantized else float(2 ** (layout.weight_bits - 1))
    x = q + offset if layout.quantized else (q + 1.0) / 2.0
    # padding cells hold digit 0 (G_off): re-zero them after the offset
    mask = torch.zeros_like(x)
    mask[..., : layout.k, : layout.n] = 1.0
    x = x * mask
    digits = split_slices(x, layout).transpose(0, 1).unsqueeze(2)  # (G, S, 1, Kp, Np)
    tiles = _tile(digits, layout)  # (G, S, 1, Tr, Tc, R, Cd)
    ref = reference_digits(layout, tiles.device).view(1, -1, 1, 1, 1, 1, 1)
    ref = ref.expand(*tiles.shape[:-1], 1)
    return torch.cat([tiles, ref], -1)


def digits_to_conductance_us(digits: torch.Tensor, layout: TileLayout, g_on_us: float, g_off_us: float) -> torch.Tensor:
    """G = G_off + (G_on − G_off)·d/(L − 1), µS."""
    return g_off_us + (g_on_us - g_off_us) * digits / layout.max_level


def _slice_scale(layout: TileLayout, w_max: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(1, S, 1, 1) slice significance × weight unit, on ``like``'s device and float64 (no host read)."""
    sig = layout.slice_significance(like.device).view(1, -1, 1, 1)
    unit = (
        layout.weight_unit(w_max.to(device=like.device, dtype=torch.float64))
        if isinstance(w_max, torch.Tensor)
        else layout.weight_unit(w_max)
    )
    return sig * unit


def decode_weights(
    g_us: torch.Tensor, layout: TileLayout, w_max: float | torch.Tensor, g_on_us: float, g_off_us: float
) -> torch.Tensor:
    """Per-slice effective weights (groups, S, K, N) from array conductances (groups, S, P, Tr, Tc, rows, cols).

    Slice significance and the weight unit are included, so the layer's weights are the sum over S. Every tensor
    is made on ``g_us``'s device; ``w_max`` may be a 0-dim tensor (then no value is read on the host).
    """
    per_digit = layout.max_level / (g_on_us - g_off_us)
    if layout.differential:
        diff = g_us[:, :, 0] - g_us[:, :, 1]
    else:
        diff = g_us[:, :, 0, ..., : layout.data_cols] - g_us[:, :, 0, ..., layout.data_cols :]
    digits = diff * per_digit  # (G, S, Tr, Tc, R, Cd)
    m = _untile(digits, layout)[..., : layout.k, : layout.n]
    return m * _slice_scale(layout, w_max, m)


def decode_variance(
    var_us2: torch.Tensor, layout: TileLayout, w_max: float | torch.Tensor, g_on_us: float, g_off_us: float
) -> torch.Tensor:
    """Per-slice weight variance (groups, S, K, N) from per-device conductance variances (µS²)."""
    per_digit = layout.max_level / (g_on_us - g_off_us)
    if layout.differential:
        total = var_us2[:, :, 0] + var_us2[:, :, 1]
    else:
        total = var_us2[:, :, 0, ..., : layout.data_cols] + var_us2[:, :, 0, ..., layout.data_cols :]
    m = _untile(total * per_digit**2, layout)[..., : layout.k, : layout.n]
    return m * _slice_scale(layout, w_max, m) ** 2
