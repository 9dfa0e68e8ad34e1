"""Data converters: input DAC and column ADC quantisers, and their range calibration.

Both quantisers are uniform and mid-tread, so zero is exactly representable:

* DAC, unsigned range [0, r] (non-negative inputs): 2^b levels, step r/(2^b − 1).
* DAC signed and ADC: symmetric range [−r, r], codes −(2^(b−1) − 1) … 2^(b−1) − 1, step r/(2^(b−1) − 1).

Values beyond the range clip to the end codes. Gradients pass straight through (STE) so that BN fine-tuning and
compensation training can backpropagate through a chip with converters.

Device rule (CUDA / ``meta``-clean): the forward quantisers and :class:`RangeObserver` make every tensor on the
input's device and never read a value on the host; the observer's statistics are read once, by
:meth:`RangeObserver.result` / :meth:`RangeObserver.first_nonfinite_batch`, when calibration finishes.
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
    noise at a converter's input. A range r ≤ 0 maps everything to 0 (calibrated layers refuse such a range in
    :meth:`xbarlab.layers.AnalogLayer.finish_calibration`). No value is read on the host: the zero-range case is
    handled by range-sized ``torch.where`` terms, bit-identical to the plain formula for r > 0.
    """
    top = max_code(bits, signed)
    r = torch.as_tensor(full_range, dtype=x.dtype, device=x.device)
    step = r / top
    positive = step > 0
    codes = x.detach() / torch.where(positive, step, torch.ones_like(step))
    if noise is not None:
        codes.add_(noise)
    lo = -top if signed else 0
    # r ≤ 0: the clamped codes (finite even for infinite inputs) times 0 give 0
    q = codes.round_().clamp_(lo, top).mul_(torch.where(positive, step, torch.zeros_like(step)))
    return straight_through(x, q)


class ConverterRangeError(ValueError):
    """A converter range calibrated to 0, NaN or Inf, or calibration data that is not finite."""


class RangeObserver:
    """Collects |x| statistics to calibrate a converter range: the maximum, or a percentile of a subsample.

    The running statistics stay on the observed tensors' device (maximum and minimum as device tensors,
    percentile subsamples drawn with a generator on that device, and per channel the first batch index with a
    non-finite value), so observing never synchronises with the host.
    """

    def __init__(self, mode: str, percentile: float, *, channels: int = 1, max_samples: int = 200_000) -> None:
        self.mode = mode
        self.percentile = percentile
        self.channels = channels
        self.max_samples = max_samples
        self.maximum = torch.zeros(channels, dtype=torch.float64)
        """Running max |x| per channel (float64, on the observed device after the first update)."""
        self.minimum = torch.full((), float("inf"), dtype=torch.float64)
        """Running minimum of x over all channels (0-dim float64; +Inf before any value)."""
        self.first_bad = torch.full((channels,), -1, dtype=torch.int64)
        """Per channel: first batch index with a NaN or Inf value (−1: none)."""
        self.updates = [0] * channels
        """Non-empty tensors observed per channel."""
        self.samples: list[list[torch.Tensor]] = [[] for _ in range(channels)]
        self._generators: dict[str, torch.Generator] = {}

    def _to(self, device: torch.device) -> None:
        if self.maximum.device != device:
            self.maximum = self.maximum.to(device)
            self.minimum = self.minimum.to(device)
            self.first_bad = self.first_bad.to(device)

    def _generator(self, device: torch.device) -> torch.Generator:
        """The subsampling generator of ``device`` (seed 0; ``meta`` has none and takes a CPU generator)."""
        key = str(device)
        if key not in self._generators:
            gen_device = device if device.type != "meta" else torch.device("cpu")
            self._generators[key] = torch.Generator(device=gen_device).manual_seed(0)
        return self._generators[key]

    def update(self, x: torch.Tensor, channel: int = 0, *, batch: int | None = None) -> None:
        """Observe a tensor of values for one channel (e.g. one slice) from calibration batch ``batch``
        (0-based; by default the count of earlier updates of the channel)."""
        flat = x.detach().reshape(-1).to(torch.float64)
        if flat.numel() == 0:
            return
        index = self.updates[channel] if batch is None else batch
        self.updates[channel] += 1
        self._to(flat.device)
        bad = ~torch.isfinite(flat).all()
        seen = self.first_bad[channel]
        self.first_bad[channel] = torch.where((seen < 0) & bad, index, seen)
        self.minimum = torch.minimum(self.minimum, flat.min())
        mag = flat.abs()
        self.maximum[channel] = torch.maximum(self.maximum[channel], mag.max())
        if self.mode == "percentile":
            if mag.numel() > self.max_samples:
                gen = self._generator(mag.device)
                idx = torch.randint(0, mag.numel(), (self.max_samples,), generator=gen, device=mag.device)
                mag = mag[idx]
            self.samples[channel].append(mag)

    @property
    def min_value(self) -> float:
        """Smallest observed value (host read; +Inf before any value)."""
        return float(self.minimum)

    def first_nonfinite_batch(self) -> list[int | None]:
        """Per channel, the first batch index with a NaN or Inf value, or None (one host read)."""
        return [None if b < 0 else int(b) for b in self.first_bad.tolist()]

    def result(self) -> torch.Tensor:
        """Calibrated range r per channel (float64, on the observed device)."""
        if self.mode == "max":
            return self.maximum.clone()
        out = torch.zeros(self.channels, dtype=torch.float64, device=self.maximum.device)
        for c, chunks in enumerate(self.samples):
            if chunks:
                values = torch.cat(chunks)
                k = max(1, min(values.numel(), round(self.percentile / 100.0 * values.numel())))
                out[c] = torch.kthvalue(values, k).values
        return out
