"""Tile-size invariance (issue 15): with perfect IO and per-layer scaling, the tile size changes no statistic.

What must hold, and is checked here:

* the same devices laid out on 64×64 or 512×512 tiles decode to the same effective weights, drift-compensation
  factor and outputs (the tiling is a pure re-indexing of the per-weight device state);
* padding devices never enter a read-out (the effective weights and the global factor ignore them);
* the per-weight error statistics (W_eff·s − W)/w_max binned by |W|/w_max, and the factor s, agree between tile
  sizes within sampling tolerance (the tile size only changes which draw a weight gets);
* a layer's MVM split over row tiles (K-split) sums to the unsplit MVM within float error.
"""

from __future__ import annotations

import torch
from torch import nn

import xbarlab
from xbarlab.hardware import HardwareConfig
from xbarlab.layer_types import AnalogConv, AnalogLinear
from xbarlab.layers import AnalogLayer
from xbarlab.mapping import TileLayout
from xbarlab.mitigation.drift_compensation import compensate, compensation_scales, record_reference

YEAR_S = 365.25 * 86400.0


def _hw(tile: int, **extra: object) -> HardwareConfig:
    """pcm-nandakumar at tile² with unquantised weights and every layer analog (the bench's fidelity setup)."""
    base: dict[str, object] = {
        "crossbar.rows": tile,
        "crossbar.cols": tile,
        "weights.quantize": False,
        "keep_digital": [],
    }
    return xbarlab.load_preset("pcm-nandakumar").override({**base, **extra})


def _linear(k: int, n: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(k, n)).eval()


def _chip(model: nn.Module, tile: int, seed: int, **extra: object) -> nn.Module:
    chip = xbarlab.program(xbarlab.convert(model, _hw(tile, **extra)), seed)
    record_reference(chip)
    return chip


def _untile(t: torch.Tensor, lay: TileLayout) -> torch.Tensor:
    """(G, S, P, Tr, Tc, R, C) → (G, S, P, K, N): the per-weight device state, padding removed."""
    g, s, p = t.shape[:3]
    m = t.permute(0, 1, 2, 3, 5, 4, 6).reshape(g, s, p, lay.k_pad, lay.n_pad)
    return m[..., : lay.k, : lay.n]


def _retile(m: torch.Tensor, lay: TileLayout, fill: float) -> torch.Tensor:
    """(G, S, P, K, N) → (G, S, P, Tr, Tc, R, C) on ``lay``, padding set to ``fill``."""
    g, s, p = m.shape[:3]
    out = torch.full((g, s, p, lay.k_pad, lay.n_pad), fill, dtype=m.dtype)
    out[..., : lay.k, : lay.n] = m
    out = out.reshape(g, s, p, lay.tiles_r, lay.rows, lay.tiles_c, lay.data_cols)
    return out.permute(0, 1, 2, 3, 5, 4, 6).contiguous()


def _transplant(src: AnalogLayer, dst: AnalogLayer, pad_g: float) -> None:
    """Give ``dst`` the devices of ``src`` (same weights, other tiling); padding devices of ``dst`` at ``pad_g``."""
    a, b = src.layout, dst.layout
    assert src.g_prog is not None and src.nu is not None and src.read_xi is not None
    dst.g_prog = _retile(_untile(src.g_prog, a), b, pad_g)
    dst.nu = _retile(_untile(src.nu, a), b, 0.7)
    dst.read_xi = _retile(_untile(src.read_xi, a), b, 3.0)
    dst.refresh()


def test_same_devices_on_other_tiles_give_identical_weights_factor_and_outputs() -> None:
    """A 300×70 layer (5×2 tiles at 64², one at 512²): the 512² chip's devices moved onto 64² tiles, padding
    devices set to a large conductance, decode to the same W_eff and s after a year, bit for bit."""
    model = _linear(300, 70)
    big, small = _chip(model, 512, 7), _chip(model, 64, 7)
    lb, ls = big[0], small[0]
    assert isinstance(lb, AnalogLinear) and isinstance(ls, AnalogLinear)
    assert (ls.layout.tiles_r, ls.layout.tiles_c, lb.layout.tiles_r) == (5, 2, 1)
    assert not torch.equal(lb.effective_weight(), ls.effective_weight())  # other tiles: other draws
    _transplant(lb, ls, pad_g=25.0)  # padding at G_on: it must not enter any read-out
    record_reference(small)
    for chip in (big, small):
        xbarlab.drift(chip, YEAR_S)
        compensate(chip)
    assert torch.equal(lb.effective_weight(), ls.effective_weight())
    s_big, s_small = compensation_scales(big)["0"], compensation_scales(small)["0"]
    assert torch.equal(s_big, s_small)
    assert 1.5 < float(s_big) < 2.5  # a year of PCM drift: the outputs shrink to ~1/2
    x = torch.randn(8, 300, generator=torch.Generator().manual_seed(3))
    assert torch.equal(big(x), small(x))


def _binned_errors(tile: int, seeds: range) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per |W|/w_max bin, the errors (W_eff·s − W)/w_max of one 256×128 layer over ``seeds`` at 1 year, and s."""
    model = _linear(256, 128, seed=1)
    w = model[0].weight.detach().double()
    rel = w.abs() / w.abs().max()
    edges = [(0.0, 0.05), (0.05, 0.2), (0.2, 0.5), (0.5, 1.01)]
    errs: list[list[torch.Tensor]] = [[] for _ in edges]
    scales = []
    for seed in seeds:
        chip = _chip(model, tile, seed)
        xbarlab.drift(chip, YEAR_S)
        s = compensate(chip).scales["0"].double()
        e = (chip[0].effective_weight().double() * s - w) / w.abs().max()
        for i, (lo, hi) in enumerate(edges):
            errs[i].append(e[(rel >= lo) & (rel < hi)])
        scales.append(s)
    return [torch.cat(b) for b in errs], torch.stack(scales)


def test_error_statistics_per_weight_bin_do_not_depend_on_tile_size() -> None:
    """8 chips × 32,768 weights per tile size (64² and 512²): per bin, the error mean agrees within 5 standard
    errors and the std within 3 %; the global factor s within 5 standard errors of the mean of 8 chips."""
    seeds = range(100, 108)
    e64, s64 = _binned_errors(64, seeds)
    e512, s512 = _binned_errors(512, seeds)
    for a, b in zip(e64, e512, strict=True):
        assert a.numel() == b.numel() > 2000
        se = (a.var() / a.numel() + b.var() / b.numel()).sqrt()
        assert abs(float(a.mean() - b.mean())) < 5 * float(se)
        assert abs(float(a.std() / b.std()) - 1.0) < 0.03
        assert 0.005 < float(a.std()) < 0.2  # a real error: noise and drift are on
    se_s = ((s64.var() + s512.var()) / len(seeds)).sqrt()
    assert abs(float(s64.mean() - s512.mean())) < 5 * float(se_s) + 1e-6


def test_k_split_of_a_convolution_sums_to_the_unsplit_mvm() -> None:
    """Conv 40→24, 3×3 (K = 360): its 6 row tiles of 64 rows (tiled path's grouped convolution, before the ADC)
    summed over tiles equal the convolution with the layer's effective weights within float error."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(40, 24, 3, padding=1, bias=False)).eval()
    chip = xbarlab.program(xbarlab.convert(model, _hw(64, **{"adc.bits": 8})), 5)
    layer = chip[0]
    assert isinstance(layer, AnalogConv) and layer.layout.tiles_r == 6
    assert layer.w_tiles is not None and layer.tile_channels is not None
    x = torch.randn(2, 40, 6, 6, generator=torch.Generator().manual_seed(4))
    lay = layer.layout
    xs = x.index_select(1, layer.tile_channels)
    parts = layer._compute(xs, layer.w_tiles, None, groups=lay.groups * lay.tiles_r)
    parts = parts.view(2, lay.groups, lay.tiles_r, lay.num_slices, lay.n, 6, 6)
    split = parts.sum(dim=(2, 3)).reshape(2, 24, 6, 6)
    whole = layer._compute(x, layer.effective_weight(), None)
    assert float(whole.abs().max()) > 1.0
    assert torch.allclose(split, whole, rtol=0, atol=1e-5 * float(whole.abs().max()))
