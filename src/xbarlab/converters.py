"""Data converters: input DAC and column ADC quantisers, and their range calibration.

Both quantisers are uniform and mid-tread, so zero is exactly representable:

* DAC, unsigned range [0, r] (non-negative inputs): 2^b levels, step r/(2^b − 1).
* DAC signed and ADC: symmetric range [−r, r], codes −(2^(b−1) − 1) … 2^(b−1) − 1, step r/(2^(b−1) − 1).

Values beyond the range clip to the end codes. Gradients pass straight through (STE) so that BN fine-tuning and
compensation training can backpropagate through a chip with converters.
"""

from __future__ import annotations

import torch


def straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward value ``q`` (bit-exact: ``q + 0``) with the gradient of the identity on ``x``."""
    if not x.requires_grad:
        return q
    return q.detach() + (x - x.detach())


def max_code(bits: int, signed: bool) -> int:
    """Largest code of a ``bits``-bit quantiser."""
    return 2 ** (bits - 1) - 1 if signed else 2**bits - 1


def quantize_uniform(
    x: torch.Tensor,
    bits: int,
    full_range: torch.Tensor | float,
    *,
    signed: bool,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Quantise ``x`` onto ``bits``-bit codes over [0, r] (unsigned) or [−r, r] (signed); returns values.

    ``full_range`` (r) broadcasts against ``x``. ``noise`` (already in LSB units) is added before rounding, like
    noise at a converter's input. A zero range maps everything to 0.
    """
    top = max_code(bits, signed)
    r = torch.as_tensor(full_range, dtype=x.dtype, device=x.device)
    step = r / top
    zero_range = bool((step <= 0).any())
    if zero_range:
        step = torch.where(step > 0, step, torch.ones_like(step))
    codes = x.detach() / step
    if noise is not None:
        codes.add_(noise)
    lo = -top if signed else 0
    q = codes.round_().clamp_(lo, top).mul_(step)
    if zero_range:
        q = torch.where(r > 0, q, torch.zeros_like(q))
    return straight_through(x, q)


class RangeObserver:
    """Collects |x| statistics to calibrate a converter range: the maximum, or a percentile of a subsample."""

    def __init__(self, mode: str, percentile: float, *, channels: int = 1, max_samples: int = 200_000) -> None:
        self.mode = mode
        self.percentile = percentile
        self.channels = channels
        self.max_samples = max_samples
        self.maximum = torch.zeros(channels, dtype=torch.float64)
        self.samples: list[list[torch.Tensor]] = [[] for _ in range(channels)]
        self.min_value = float("inf")
        self._generator = torch.Generator().manual_seed(0)

    def update(self, x: torch.Tensor, channel: int = 0) -> None:
        """Observe a tensor of values for one channel (e.g. one slice)."""
        flat = x.detach().reshape(-1).to(torch.float64).cpu()
        if flat.numel() == 0:
            return
        self.min_value = min(self.min_value, float(flat.min()))
        mag = flat.abs()
        self.maximum[channel] = max(float(self.maximum[channel]), float(mag.max()))
        if self.mode == "percentile":
            if mag.numel() > self.max_samples:
                idx = torch.randint(0, mag.numel(), (self.max_samples,), generator=self._generator)
                mag = mag[idx]
            self.samples[channel].append(mag)

    def result(self) -> torch.Tensor:
        """Calibrated range r per channel (float64)."""
        if self.mode == "max":
            return self.maximum.clone()
        out = torch.zeros(self.channels, dtype=torch.float64)
        for c, chunks in enumerate(self.samples):
            if chunks:
                values = torch.cat(chunks)
                k = max(1, min(values.numel(), round(self.percentile / 100.0 * values.numel())))
                out[c] = torch.kthvalue(values, k).values
        return out
