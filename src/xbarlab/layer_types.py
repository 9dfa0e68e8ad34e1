"""The two analog layer types: :class:`AnalogLinear` (``nn.Linear``) and :class:`AnalogConv` (``nn.Conv1d`` /
``nn.Conv2d``). Each supplies the digital computation (``_compute``), the tile layout of its weights and the
tiled forward over :class:`xbarlab.layers.AnalogLayer`'s crossbar state and converters.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xbarlab.converters import straight_through
from xbarlab.hardware import HardwareConfig
from xbarlab.layers import AnalogLayer

__all__ = ["AnalogConv", "AnalogLinear"]


class AnalogLinear(AnalogLayer):
    """Analog replacement of ``nn.Linear``."""

    def __init__(self, source: nn.Linear, layer_name: str, hw: HardwareConfig) -> None:
        super().__init__(source, layer_name, hw, groups=1)
        self.in_features = source.in_features
        self.out_features = source.out_features

    def _compute(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = self._tile_matmul(x.reshape(-1, self.in_features)).reshape(*lead, self.out_features)
        if self.bias is None:
            return y
        # a fresh output without gradients takes the bias in place (the same addition, no copy)
        return y.add_(self.bias) if not (y.requires_grad or self.bias.requires_grad) else y + self.bias


class AnalogConv(AnalogLayer):
    """Analog replacement of ``nn.Conv1d`` / ``nn.Conv2d`` (groups, dilation, stride and padding modes)."""

    def __init__(self, source: nn.Conv1d | nn.Conv2d, layer_name: str, hw: HardwareConfig) -> None:
        super().__init__(source, layer_name, hw, groups=source.groups)
        self.ndim = 1 if isinstance(source, nn.Conv1d) else 2
        self.in_channels = source.in_channels
        self.out_channels = source.out_channels
        self.kernel_size: tuple[int, ...] = tuple(source.kernel_size)
        self.stride: tuple[int, ...] = tuple(source.stride)
        self.dilation: tuple[int, ...] = tuple(source.dilation)
        self.padding: Any = source.padding
        self.padding_mode = source.padding_mode
        self._reversed_padding_repeated_twice = list(source._reversed_padding_repeated_twice)
        self._tile_channels_identity = False  # set by _to_tiles when every (group, tile) reads all its channels

    def _compute(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, groups: int | None = None
    ) -> torch.Tensor:
        fn = F.conv1d if self.ndim == 1 else F.conv2d
        groups = self.groups if groups is None else groups
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return fn(x, weight, bias, self.stride, 0, self.dilation, groups)  # type: ignore[arg-type]
        return fn(x, weight, bias, self.stride, self.padding, self.dilation, groups)  # type: ignore[arg-type]

    def _to_tiles(self, per_slice: torch.Tensor) -> torch.Tensor:
        """Per-slice weights (G, S, K, N) → one grouped convolution computing every tile's partial sums.

        Row tile t of group g holds rows [t·rows, (t+1)·rows) of the channel-major matrix (channel, kernel
        position). Its partial sums are a convolution over the channels it touches (at most ``cg``), with the
        kernel positions outside the tile zeroed: the result has G·Tr·S·N output channels in (g, t, s, n) order,
        and ``tile_channels`` lists the input channels each (g, t) group reads.
        """
        lay = self.layout
        g, s, tr, n = lay.groups, lay.num_slices, lay.tiles_r, lay.n
        kk = math.prod(self.kernel_size)
        cin_g = self.in_channels // g
        dev = per_slice.device
        # channels one tile touches: local channel index of each tile's last row (computed on the host, no read)
        cg = max((min((t + 1) * lay.rows, lay.k) - 1) // kk - (t * lay.rows) // kk for t in range(tr)) + 1
        rows = torch.arange(lay.k, device=dev)
        tile = rows // lay.rows
        chan = rows // kk
        pos = rows % kk
        first = torch.div(torch.arange(tr, device=dev) * lay.rows, kk, rounding_mode="floor")  # first channel
        local = chan - first[tile]
        w = torch.zeros(g, tr, cg, kk, s, n, dtype=per_slice.dtype, device=dev)
        w[:, tile, local, pos] = per_slice.permute(0, 2, 1, 3)  # (G, K, S, N)
        w = w.permute(0, 1, 4, 5, 2, 3).reshape(g * tr * s * n, cg, *self.kernel_size)
        chans = (first.view(tr, 1) + torch.arange(cg, device=dev).view(1, cg)).clamp_max(cin_g - 1)
        chans = chans.view(1, tr, cg) + (torch.arange(g, device=dev) * cin_g).view(g, 1, 1)
        self.tile_channels = chans.reshape(-1).to(self.weight.device)
        # one row tile reading every channel of its group: the channel selection is the identity (host ints only)
        self._tile_channels_identity = tr == 1 and cg == cin_g
        return w.contiguous()

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.ndim + 1:  # unbatched input, as nn.Conv accepts it
            return self._tiled(x.unsqueeze(0)).squeeze(0)
        lay = self.layout
        assert self.w_tiles is not None and self.tile_channels is not None
        g, s, tr, n = lay.groups, lay.num_slices, lay.tiles_r, lay.n
        outs = []
        chunk = self._chunk_for(x)
        fused = self._fused_weights(slice_dim=3)
        in_place = not (x.requires_grad or self.w_tiles.requires_grad)
        y: torch.Tensor | None = None
        # one tile and one slice leave nothing to accumulate: the ADC writes the output itself (not while calibrating)
        direct = in_place and tr * s == 1 and self._calibration_stage is None
        for start in range(0, x.shape[0], chunk):
            xs = x[start : start + chunk]
            if not self._tile_channels_identity:  # the identity selection would only copy the input
                xs = xs.index_select(1, self.tile_channels)
            if fused is not None:  # partial sums in LSB, variances in LSB² (ADC scale folded into the weights)
                with torch.no_grad():
                    codes = self._compute(xs.detach(), fused.weights, None, groups=g * tr)
                    spatial = codes.shape[2:]
                    mc = codes.shape[0]
                    shape = (mc, g, tr, s, n, *spatial)
                    if fused.row_var is not None:  # σ independent of G: c·Σx² per (tile, position, slice)
                        assert fused.row_mask is not None
                        sq = self._compute(xs.detach() ** 2, fused.row_mask, None, groups=g * tr)
                        row = fused.row_var.view(1, g, 1, s, 1, *([1] * len(spatial)))
                        var_lsb = sq.view(mc, g, tr, 1, 1, *spatial) * row
                    else:
                        assert fused.variances is not None
                        var_lsb = self._compute(xs.detach() ** 2, fused.variances, None, groups=g * tr).view(shape)
                    y, target = self._direct_target(y, x, codes, start, direct)
                    q = self._adc_codes_noisy(codes.view(shape), var_lsb, slice_dim=3, out=target)
                if not in_place:  # straight-through gradient of the unscaled partial sums, same forward values
                    q = straight_through(self._compute(xs, self.w_tiles, None, groups=g * tr).view(shape), q)
            else:
                p = self._compute(xs, self.w_tiles, None, groups=g * tr)  # (b, G·Tr·S·N, *out)
                spatial = p.shape[2:]
                mc = p.shape[0]
                shape = (mc, g, tr, s, n, *spatial)
                var = None
                if self.var_tiles is not None:
                    var = self._compute(xs.detach() ** 2, self.var_tiles, None, groups=g * tr).view(shape)
                y, target = self._direct_target(y, x, p, start, direct)
                q = self._adc_sums(p.view(shape), var, slice_dim=3, out=target)
            if direct:  # already written into y
                continue
            # tiles and slices accumulated digitally (the slice significance is folded into the decoded values)
            if not in_place:
                outs.append(q.sum((2, 3)).reshape(mc, g * n, *spatial))
                continue
            if y is None:  # the whole output, allocated once: each chunk's sum is written into it (no cat copy)
                y = q.new_empty((x.shape[0], g * n, *spatial))
            torch.sum(q, (2, 3), out=y[start : start + mc].view(mc, g, n, *spatial))
        if y is None:
            y = torch.cat(outs, 0)
        if self.bias is not None:
            bias = self.bias.view(1, -1, *([1] * self.ndim))
            y = y.add_(bias) if in_place and not self.bias.requires_grad else y + bias
        return y

    def _direct_target(
        self, y: torch.Tensor | None, x: torch.Tensor, partial: torch.Tensor, start: int, direct: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The output (allocated on the first chunk) and, when ``direct``, this chunk's slice of it shaped like the
        partial sums (mc, G, Tr = 1, S = 1, N, *spatial); ``partial``: the chunk's (mc, G·N, *spatial) partial sums."""
        if not direct:
            return y, None
        mc, spatial = partial.shape[0], partial.shape[2:]
        if y is None:
            y = partial.new_empty((x.shape[0], *partial.shape[1:]))
        lay = self.layout
        return y, y[start : start + mc].view(mc, lay.groups, 1, 1, lay.n, *spatial)

    def _chunk_for(self, x: torch.Tensor) -> int:
        lay = self.layout
        spatial = math.prod(x.shape[2:])  # upper bound of output positions (stride ≥ 1)
        return self._chunk(lay.groups * lay.tiles_r * lay.num_slices * lay.n * spatial)
