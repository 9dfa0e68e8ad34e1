"""Standard-normal draws for the per-MVM noise (per-MVM read noise and ADC input noise): exact or pooled.

The noise of every matrix-vector multiplication is ``σ·z`` with ``z ~ N(0, 1)``, σ in the unit of the quantity it
perturbs (LSB for the ADC codes, the output unit for the direct path); this module only makes the unit-free
``z``. Two samplers, chosen by ``sampling.gaussian`` in the hardware config (:class:`xbarlab.hardware.SamplingConfig`):

``exact`` (the default)
    ``torch.randn(shape, generator=...)``: bit-identical to what xbarlab always drew; every element independent.

``pooled`` (approximate and several times faster per element on a CPU; figures in docs/sampling.md)
    For ``n`` elements: a pool of ``P = n // POOL_REUSE`` exact N(0, 1) draws ``z`` is drawn afresh from the
    generator on every call; the output is ``ceil(n / POOL_BLOCK)`` blocks of ``POOL_BLOCK`` consecutive values of
    the circular sequence ``(z, −z)`` (length 2P), each block starting at its own uniform random offset in
    [0, 2P) (one ``randint`` per block), gathered by one ``index_select`` (no Python loop). Properties, each tested
    in tests/test_sampling.py:

    - every element is exactly N(0, 1) (a pool value with a sign independent of it);
    - any two elements are uncorrelated (E[x_i x_j] = 0 exactly: within a block they are distinct pool values,
      across blocks the second offset is uniform over a sequence that sums to zero), so the variance of any sum of
      k draws is exactly k and the mean of a sum is 0;
    - two calls are independent (each draws its own pool and offsets);
    - NOT independent within one call: each |z| appears about ``POOL_REUSE`` (16) times, with random signs, so
      even functionals of one call (its sample variance, kurtosis, tail counts, the energy of the noise) fluctuate
      as if it had ``n / (1 + POOL_REUSE)`` independent values. Higher moments of sums are very slightly off.

    Calls of fewer than :data:`MIN_POOLED_ELEMENTS` elements draw exactly (the pool would not pay off).

Both are deterministic for a given generator state (bit-identical reruns, any thread count) and device-clean: every
tensor is made on ``device`` with the generator the caller passes (a CPU generator for ``meta``, as
:meth:`xbarlab.layers.AnalogLayer._mvm_generator` does); nothing is read on the host.
"""

from __future__ import annotations

import math

import torch

from xbarlab.hardware import GAUSSIAN_SAMPLERS, ConfigError

__all__ = ["GAUSSIAN_SAMPLERS", "MIN_POOLED_ELEMENTS", "POOL_BLOCK", "POOL_REUSE", "standard_normal"]

POOL_REUSE = 16
"""Elements per exact pool draw in the ``pooled`` sampler (pool size P = n // POOL_REUSE)."""

POOL_BLOCK = 64
"""Length of the contiguous pool blocks of the ``pooled`` sampler (one random offset and sign pattern each)."""

MIN_POOLED_ELEMENTS = POOL_REUSE * 4096
"""Below this many elements (65,536) the ``pooled`` sampler draws exactly: the pool has at least 4,096 values."""


def standard_normal(
    shape: torch.Size | tuple[int, ...],
    *,
    generator: torch.Generator,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    sampler: str = "exact",
) -> torch.Tensor:
    """A contiguous tensor of N(0, 1) draws (unit-free) of ``shape`` on ``device``, drawn with ``generator``.

    ``sampler``: ``"exact"`` (``torch.randn``, bit-identical to it for the same generator state) or ``"pooled"``
    (the approximate sampler of this module's docstring). An unknown sampler or a non-floating ``dtype`` raises
    :class:`~xbarlab.hardware.ConfigError` (a :class:`ValueError`) naming the value and the allowed ones.
    """
    if sampler not in GAUSSIAN_SAMPLERS:
        raise ConfigError("sampling.gaussian", sampler, "one of " + ", ".join(repr(s) for s in GAUSSIAN_SAMPLERS))
    if not dtype.is_floating_point:
        raise ConfigError("dtype", dtype, "a floating-point dtype (N(0, 1) draws are real numbers)")
    n = math.prod(shape)
    if sampler == "exact" or n < MIN_POOLED_ELEMENTS:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    pool_size = n // POOL_REUSE
    # the circular sequence (z, -z) of length 2P, extended by its first POOL_BLOCK - 1 values so that a block
    # starting anywhere in [0, 2P) reads POOL_BLOCK consecutive values without wrapping; z is drawn in place
    # (torch.randn is empty + normal_: the same values), so the ring costs one allocation and no extra copy
    ring = torch.empty(2 * pool_size + POOL_BLOCK - 1, device=device, dtype=dtype)
    pool = ring[:pool_size].normal_(generator=generator)
    torch.neg(pool, out=ring[pool_size : 2 * pool_size])
    ring[2 * pool_size :].copy_(pool[: POOL_BLOCK - 1])
    blocks = -(-n // POOL_BLOCK)
    starts = torch.randint(0, 2 * pool_size, (blocks,), generator=generator, device=device)
    out = ring.unfold(0, POOL_BLOCK, 1).index_select(0, starts)  # (blocks, POOL_BLOCK), contiguous
    return out.view(-1)[:n].view(shape)
