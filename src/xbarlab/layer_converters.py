"""Converters of an analog layer: DAC and ADC calibration and the conversions of its forward paths.

:class:`ConverterMixin` is a base of :class:`xbarlab.layers.AnalogLayer` (which holds the chip state it reads):

* **calibration**: :meth:`~ConverterMixin.start_calibration` / :meth:`~ConverterMixin.finish_calibration` observe
  the DAC inputs, then the ADC partial sums per slice, and store the ranges (refused when the data held a NaN or
  Inf or a range is 0, NaN or Inf);
* **DAC**: uniform quantisation of the layer input over the calibrated range;
* **ADC**: per-MVM read noise and ADC input noise (one Gaussian draw with the summed variance) and per-slice
  quantisation of every partial sum; with per-MVM noise the ADC scale is folded into the tile weights
  (:class:`FusedTiles`), so partial sums come out of the convolution / matmul in LSB.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from xbarlab.converters import ConverterRangeError, RangeObserver, max_code, quantize_uniform, straight_through
from xbarlab.hardware import HardwareConfig
from xbarlab.mapping import TileLayout

__all__ = ["ROW_CONSTANT_NOISE_KINDS", "ConverterMixin", "FusedTiles", "NotProgrammedError"]

ROW_CONSTANT_NOISE_KINDS = ("absolute_uS", "relative_to_G_on")
"""Read-noise kinds whose σ does not depend on the conductance: every weight of a (group, slice) has the same
per-MVM variance c, so a tile column's variance is c·Σx² over the tile's rows (a sum, no variance convolution)."""


class FusedTiles(NamedTuple):
    """Per-forward tile weights of the per-MVM noise path, in ADC LSB (see :meth:`AnalogLayer._fused_weights`)."""

    weights: torch.Tensor
    """Tile weights divided by the ADC step of their slice: partial sums come out as codes before rounding."""
    variances: torch.Tensor | None
    """Per-weight variances / step² (LSB²), for the general variance convolution; None on the row-sum path."""
    row_var: torch.Tensor | None
    """(G, S) variance per unit Σx² in LSB² when σ does not depend on G (``ROW_CONSTANT_NOISE_KINDS``)."""
    row_mask: torch.Tensor | None
    """Convolutions on the row-sum path: (G·Tr, cg, *kernel) indicator of the rows each tile holds."""


class NotProgrammedError(RuntimeError):
    """Raised when an analog layer is used before a chip instance was programmed or calibrated."""


class ConverterMixin:
    """DAC/ADC calibration and conversion of an analog layer (a base of :class:`xbarlab.layers.AnalogLayer`).

    The attributes below are the layer's (declared here for the type checker): its hardware, tile layout,
    converter ranges, tile weights and calibration state; ``_gaussian`` and ``_signed_dac`` are its methods.
    """

    hw: HardwareConfig
    layout: TileLayout
    layer_name: str
    weight: nn.Parameter
    w_tiles: torch.Tensor | None
    var_tiles: torch.Tensor | None
    dac_range: torch.Tensor | None
    dac_signed: torch.Tensor | None
    adc_range: torch.Tensor | None
    _observers: dict[str, RangeObserver] | None
    _calibration_stage: str | None
    _calib_batch: int
    _host_dac_signed: bool | None

    def _gaussian(self, like: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # AnalogLayer draws the per-MVM noise

    def _signed_dac(self) -> bool:
        raise NotImplementedError  # AnalogLayer reads the DAC sign

    def start_calibration(self, stage: str) -> None:
        """Begin observing converter ranges: stage ``dac`` (inputs) or ``adc`` (partial sums)."""
        hw = self.hw
        self._calib_batch = -1
        if stage == "dac":
            self._observers = {"dac": RangeObserver(hw.dac.range_mode, hw.dac.percentile)}
        else:
            self._observers = {
                "adc": RangeObserver(hw.adc.range_mode, hw.adc.percentile, channels=self.layout.num_slices)
            }
        self._calibration_stage = stage

    def finish_calibration(self) -> None:
        """Store the observed ranges as the converter calibration (the only host reads of the observers).

        Raises :class:`~xbarlab.converters.ConverterRangeError` (nothing stored) when the calibration data held a
        NaN or Inf (naming the first such batch) or a range is 0, NaN or Inf. A layer that observed nothing (it
        did not run) stores nothing and stays uncalibrated: it refuses to run, and :func:`xbarlab.calibrate`'s
        coverage check names it.
        """
        if self._observers is None:
            return
        if not any(sum(obs.updates) for obs in self._observers.values()):
            self._observers = None
            self._calibration_stage = None
            return
        device = self.weight.device
        dac_range = adc_range = None
        dac_signed = False
        if "dac" in self._observers:
            obs = self._observers["dac"]
            dac_range = self._checked_range(obs, "DAC", "input")[0].to(device=device, dtype=torch.float32)
            dac_signed = obs.min_value < 0
        if "adc" in self._observers:
            adc_range = self._checked_range(self._observers["adc"], "ADC", "partial sums").to(device, torch.float32)
        if dac_range is not None:
            self.dac_range = dac_range
            self.dac_signed = torch.tensor(dac_signed, device=device)
            self._host_dac_signed = dac_signed
        if adc_range is not None:
            self.adc_range = adc_range
        self._observers = None
        self._calibration_stage = None

    def _checked_range(self, obs: RangeObserver, kind: str, what: str) -> torch.Tensor:
        """The observer's ranges (float64), refused when the data was not finite or a range is 0, NaN or Inf."""
        name = f"analog layer '{self.layer_name}'"
        per = (lambda c: f" (slice {c})") if obs.channels > 1 else (lambda c: "")
        for c, batch in enumerate(obs.first_nonfinite_batch()):
            if batch is not None:
                raise ConverterRangeError(
                    f"{name}: {kind} calibration {what}{per(c)} not finite (NaN or Inf) in calibration batch "
                    f"{batch} (0-based); allowed: finite calibration data"
                )
        ranges = obs.result()
        values = ranges.to(torch.float32).tolist()  # as stored: a range may underflow or overflow float32
        for c, r in enumerate(values):
            if r > 0 and math.isfinite(r):
                continue
            batches = self._calib_batch + 1
            if obs.updates[c] == 0:
                why = "no value observed"
            elif r == 0:
                why = f"every observed value is 0 in {batches} calibration batch{'es' if batches != 1 else ''}"
            else:
                why = "the observed values overflow float32"
            raise ConverterRangeError(
                f"{name}: {kind} range{per(c)} calibrated to {r:g} ({why}); allowed: a finite range > 0 "
                "(calibrate with data that exercises this layer)"
            )
        return ranges

    def _dac(self, x: torch.Tensor) -> torch.Tensor:
        bits = self.hw.dac.bits
        if self._calibration_stage is not None:
            self._calib_batch += 1  # one DAC pass per layer call: the calibration batch index
        if self._calibration_stage == "dac":
            assert self._observers is not None
            self._observers["dac"].update(x, batch=self._calib_batch)
            return x
        if bits is None:
            return x
        if self.dac_range is None or self.dac_signed is None:
            raise NotProgrammedError(
                f"analog layer '{self.layer_name}': DAC range not calibrated; call xbarlab.calibrate(model, loader)"
            )
        return quantize_uniform(x, bits, self.dac_range, signed=self._signed_dac())

    def _adc_sums(
        self, partial: torch.Tensor, var: torch.Tensor | None, *, slice_dim: int, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-MVM read noise (variance ``var``) plus ADC input noise, then per-slice quantisation.

        Both noises are Gaussian and independent, so one draw with the summed variance represents them: in LSB,
        code = round(p/step + sqrt(var/step² + noise_lsb²)·z), clamped to the signed code range. ``partial`` and
        ``var`` are consumed (modified in place) when they do not need gradients; with gradients the quantiser is a
        straight-through estimator. While calibrating, partial sums (with read noise) are observed and returned
        unquantised. ``out`` (only without gradients): the tensor the quantised values are written to (the layer's
        output when one tile and one slice leave nothing to accumulate; the same multiply, no extra pass).
        """
        hw = self.hw
        if self._calibration_stage == "adc":
            assert self._observers is not None
            if var is not None:
                partial = partial + var.clamp_min(0).sqrt() * self._gaussian(var)
            for s in range(partial.shape[slice_dim]):
                self._observers["adc"].update(partial.select(slice_dim, s), channel=s, batch=self._calib_batch)
            return partial
        if self.adc_range is None:
            raise NotProgrammedError(
                f"analog layer '{self.layer_name}': ADC range not calibrated; call xbarlab.calibrate(model, loader)"
            )
        assert hw.adc.bits is not None
        top = max_code(hw.adc.bits, True)
        shape = [1] * partial.dim()
        shape[slice_dim] = -1
        rng = self.adc_range.to(partial.dtype)
        step = (rng / top).view(shape)
        inv_step = torch.where(rng > 0, top / rng.clamp_min(torch.finfo(rng.dtype).tiny), 0.0).view(shape)
        codes = partial.detach().clone() if partial.requires_grad else partial
        codes.mul_(inv_step)
        if var is not None:
            std = var.detach().mul_(inv_step.square())
            if hw.adc.noise_lsb > 0:
                std.add_(hw.adc.noise_lsb**2)
            codes.addcmul_(std.clamp_min_(0).sqrt_(), self._gaussian(codes))
        elif hw.adc.noise_lsb > 0:
            codes.add_(self._gaussian(codes), alpha=hw.adc.noise_lsb)
        codes.round_().clamp_(-top, top)
        if out is not None:
            return torch.mul(codes, step, out=out)
        return straight_through(partial, codes.mul_(step))

    def _fused_weights(self, *, slice_dim: int) -> FusedTiles | None:
        """Tile weights with the ADC scale folded in, for the per-MVM noise path: (W/step, σ²/step²), or None.

        Outside calibration and with per-MVM noise: then the partial sums come out of the convolution / matmul
        in LSB (codes before rounding) and their variances in LSB², which saves two passes over every partial
        sum. The values differ from scaling after the convolution by float rounding only (≈ 1e-7 relative); the
        noise distribution is unchanged. With gradients the same values are produced (the unscaled partial sums
        carry the straight-through gradient). ``slice_dim``: 2 for linear layers, 3 for convolutions.

        When σ does not depend on the conductance (``ROW_CONSTANT_NOISE_KINDS``) every weight of a (group, slice)
        has the same variance c (read here from the first row of the first tile, a real weight; nothing is read
        on the host), and a column's variance is c·Σx² over its tile's rows: the row-sum path computes Σx² once
        per tile and output position instead of a variance convolution over every column and slice.
        """
        if self.var_tiles is None or self.w_tiles is None or self._calibration_stage is not None:
            return None
        if self.adc_range is None or self.hw.adc.bits is None:
            return None
        top = max_code(self.hw.adc.bits, True)
        rng = self.adc_range.to(self.w_tiles.dtype)
        inv_step = torch.where(rng > 0, top / rng.clamp_min(torch.finfo(rng.dtype).tiny), 0.0)  # (S,)
        s, n = self.layout.num_slices, self.layout.n
        g, tr = self.layout.groups, self.layout.tiles_r
        if slice_dim == 2:  # linear: weights (Tr, R, S·N)
            scale = inv_step.view(s, 1).expand(s, n).reshape(1, 1, s * n)
            first = self.var_tiles[0, 0].view(1, s, n)[:, :, 0]  # (G = 1, S): row 0 of tile 0, column 0
        else:  # convolution: weights (G·Tr·S·N, cg, *kernel), output channels in (g, t, s, n) order
            scale = inv_step.view(1, s, 1).expand(g * tr, s, n).reshape(-1, *([1] * (self.w_tiles.dim() - 1)))
            first = self.var_tiles.reshape(g, tr, s, n, -1)[:, 0, :, 0, 0]  # (G, S): channel 0, kernel position 0
        weights = self.w_tiles * scale
        if self.hw.read_noise.kind not in ROW_CONSTANT_NOISE_KINDS:
            return FusedTiles(weights, self.var_tiles * scale.square(), None, None)
        row_var = first * inv_step.view(1, s).square()
        mask = None
        if slice_dim != 2:  # the rows of each tile: where its first column (slice 0, column 0) has a weight
            per_tile = self.var_tiles.reshape(g * tr, s * n, *self.var_tiles.shape[1:])[:, 0]
            mask = (per_tile != 0).to(self.w_tiles.dtype)
        return FusedTiles(weights, None, row_var, mask)

    def _adc_codes_noisy(
        self, codes: torch.Tensor, var: torch.Tensor, *, slice_dim: int, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ADC of partial sums already in LSB (``codes``) with per-MVM read-noise variance in LSB² (``var``).

        The same conversion as :meth:`_adc_sums` (one Gaussian draw with the summed variance of read noise and
        ADC input noise, round, clamp to the signed code range, times the step); both inputs are consumed.
        ``var`` may broadcast against ``codes`` (the row-sum path: one variance for every column of a tile).
        ``out``: as in :meth:`_adc_sums`.
        """
        hw = self.hw
        assert hw.adc.bits is not None and self.adc_range is not None
        top = max_code(hw.adc.bits, True)
        shape = [1] * codes.dim()
        shape[slice_dim] = -1
        step = (self.adc_range.to(codes.dtype) / top).view(shape)
        if hw.adc.noise_lsb > 0:
            var.add_(hw.adc.noise_lsb**2)
        codes.addcmul_(var.clamp_min_(0).sqrt_(), self._gaussian(codes))
        codes.round_().clamp_(-top, top)
        return codes.mul_(step) if out is None else torch.mul(codes, step, out=out)
