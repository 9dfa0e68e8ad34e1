"""The sections of a hardware description: one frozen dataclass per part of the crossbar and its periphery.

Each section validates its own fields (``validate(path)``: :class:`xbarlab.schema.ConfigError` naming the field
path, the value and the allowed range) and carries its units in the field names (``_ohm``, ``_uS``, ``_s``) or
docstrings. :class:`xbarlab.hardware.HardwareConfig` combines them; the classes are re-exported there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from xbarlab import schema
from xbarlab.schema import ConfigError

__all__ = [
    "GAUSSIAN_SAMPLERS",
    "ADCConfig",
    "CrossbarConfig",
    "DACConfig",
    "DeviceConfig",
    "DriftConfig",
    "FaultConfig",
    "ParasiticsConfig",
    "ProgrammingConfig",
    "ReadNoiseConfig",
    "SamplingConfig",
    "WeightConfig",
]


@dataclass(frozen=True)
class CrossbarConfig:
    """Physical array size: ``rows`` word lines (inputs) × ``cols`` bit lines (outputs) per crossbar tile."""

    rows: int = 64
    cols: int = 64

    def validate(self, path: str) -> None:
        schema.integer(f"{path}.rows", self.rows, lo=1, hi=4096)
        schema.integer(f"{path}.cols", self.cols, lo=1, hi=4096)


@dataclass(frozen=True)
class WeightConfig:
    """How weights become conductances.

    ``bits``: magnitude bits of the per-layer symmetric quantiser (levels 0 … 2^bits−1, the sign is carried by
    the mapping). ``bits_per_cell``: bits stored per device; a weight uses ceil(bits / bits_per_cell) slices,
    combined by shift-and-add. ``mapping``: ``differential`` (G+/G− pair, idle device at G_off) or ``offset``
    (offset-binary weights, one reference column per tile subtracted per slice). ``quantize``: when false, weights
    keep full precision on one analog device pair (no slicing). ``noise_granularity``: ``slice`` (every physical
    device is perturbed independently) or ``weight`` (P1's reading: one device pair holds the full ``bits``-bit
    magnitude, docs/papers.md §1.10). With ``weight`` there is one cell per weight, so ``bits_per_cell`` must equal
    ``bits``: any other value would be a field that does nothing, and is refused (docs/hardware.md, "Bit slices").
    """

    bits: int = 8
    bits_per_cell: int = 4
    mapping: str = "differential"
    quantize: bool = True
    noise_granularity: str = "slice"

    def validate(self, path: str) -> None:
        schema.integer(f"{path}.bits", self.bits, lo=1, hi=16)
        schema.choice(f"{path}.noise_granularity", self.noise_granularity, ("slice", "weight"))
        if self.quantize is True and self.noise_granularity == "weight" and self.bits_per_cell != self.bits:
            slices = -(-self.bits // self.bits_per_cell) if isinstance(self.bits_per_cell, int) else "?"
            raise ConfigError(
                f"{path}.bits_per_cell",
                self.bits_per_cell,
                f"{self.bits} (= {path}.bits) with {path}.noise_granularity 'weight', or noise_granularity "
                f"'slice' to store the weight in {slices} cells of {self.bits_per_cell} bits",
                problem=f"{self.bits_per_cell!r} has no effect with noise_granularity 'weight' (one device pair "
                f"holds all {self.bits} bits of a weight)",
            )
        schema.integer(f"{path}.bits_per_cell", self.bits_per_cell, lo=1, hi=max(1, self.bits))
        schema.choice(f"{path}.mapping", self.mapping, ("differential", "offset"))
        schema.boolean(f"{path}.quantize", self.quantize)
        schema.choice(f"{path}.noise_granularity", self.noise_granularity, ("slice", "weight"))
        if self.mapping == "offset" and self.quantize and self.bits < 2:
            raise ConfigError(f"{path}.bits", self.bits, ">= 2 with the offset mapping (one bit is the sign)")


@dataclass(frozen=True)
class DeviceConfig:
    """Memory device. ``r_on_ohm``: low-resistance state (Ω); ``on_off_ratio``: R_off/R_on (> 1, may be inf).

    G_on = 1/R_on and G_off = G_on / on_off_ratio (siemens). A cell stores 2^bits_per_cell equally spaced
    conductance levels between G_off and G_on.
    """

    name: str = "generic"
    r_on_ohm: float = 50e3
    on_off_ratio: float = 10.0

    def validate(self, path: str) -> None:
        if not isinstance(self.name, str):
            raise ConfigError(f"{path}.name", self.name, "a string")
        schema.number(f"{path}.r_on_ohm", self.r_on_ohm, lo=0.0, lo_open=True)
        schema.number(f"{path}.on_off_ratio", self.on_off_ratio, lo=1.0, lo_open=True, allow_inf=True)

    @property
    def g_on_s(self) -> float:
        """Conductance of the ON state, siemens."""
        return 1.0 / self.r_on_ohm

    @property
    def g_off_s(self) -> float:
        """Conductance of the OFF state, siemens (0 for an infinite ON/OFF ratio)."""
        return 0.0 if math.isinf(self.on_off_ratio) else self.g_on_s / self.on_off_ratio

    @property
    def g_on_us(self) -> float:
        """Conductance of the ON state, µS."""
        return self.g_on_s * 1e6

    @property
    def g_off_us(self) -> float:
        """Conductance of the OFF state, µS."""
        return self.g_off_s * 1e6


@dataclass(frozen=True)
class ProgrammingConfig:
    """Static programming variation, sampled once per chip instance.

    ``kind``: ``none``; ``gaussian_abs`` (G + N(0, sigma²), sigma in µS); ``gaussian_rel`` (G·(1 + sigma·ξ));
    ``lognormal`` (G·e^θ, θ ~ N(0, sigma²), CorrectNet); ``pcm_nandakumar`` (aihwkit's PCM polynomial
    σ_prog(g), sigma = prog_noise_scale). Conductances are floored at 0 S (a device cannot be negative).
    """

    KINDS: ClassVar[tuple[str, ...]] = ("none", "gaussian_abs", "gaussian_rel", "lognormal", "pcm_nandakumar")

    kind: str = "none"
    sigma: float = 0.0

    def validate(self, path: str) -> None:
        schema.choice(f"{path}.kind", self.kind, self.KINDS)
        schema.number(f"{path}.sigma", self.sigma, lo=0.0)


@dataclass(frozen=True)
class ReadNoiseConfig:
    """Stochastic read noise G' = G + N(0, σ²) (P1 Eq. 1).

    ``kind`` fixes the unit of σ: ``absolute_uS`` (σ = sigma µS), ``relative_to_G`` (σ = sigma·G + offset_uS,
    the P1 default for FeFET/RRAM; PCM-i/ii use sigma 0.03 and offset 0.13 µS), ``relative_to_G_on``
    (σ = sigma·G_on), ``pcm_1f`` (aihwkit's accumulated 1/f noise, sigma = read_noise_scale) or ``none``.
    ``mode``: ``frozen`` (sampled once per chip instance) or ``per_mvm`` (an independent draw for every sample
    of every matrix-vector multiplication, simulated exactly through the output variance Σ x_i² σ_ij²).
    """

    KINDS: ClassVar[tuple[str, ...]] = ("none", "absolute_uS", "relative_to_G", "relative_to_G_on", "pcm_1f")

    kind: str = "none"
    sigma: float = 0.0
    offset_us: float = 0.0
    mode: str = "frozen"

    def validate(self, path: str) -> None:
        schema.choice(f"{path}.kind", self.kind, self.KINDS)
        schema.number(f"{path}.sigma", self.sigma, lo=0.0)
        schema.number(f"{path}.offset_us", self.offset_us, lo=0.0)
        schema.choice(f"{path}.mode", self.mode, ("frozen", "per_mvm"))
        if self.kind == "pcm_1f" and self.mode != "frozen":
            raise ConfigError(f"{path}.mode", self.mode, "'frozen' with kind 'pcm_1f' (noise accumulated over time)")


@dataclass(frozen=True)
class DriftConfig:
    """Temporal conductance drift G(t) = G0·(t/t0)^−ν (P1 Eq. 2).

    ``kind``: ``none``, ``power_law`` (ν ~ N(nu_mean, nu_std²) per device) or ``pcm_nandakumar`` (aihwkit's
    conductance-dependent ν(g), multiplied by ``scale``). ``t0_s``: reference time in seconds (P1: 1 s; aihwkit:
    20 s). A chip is read at t0 until :func:`xbarlab.drift` moves it.
    """

    KINDS: ClassVar[tuple[str, ...]] = ("none", "power_law", "pcm_nandakumar")

    kind: str = "none"
    nu_mean: float = 0.0
    nu_std: float = 0.0
    t0_s: float = 1.0
    scale: float = 1.0

    def validate(self, path: str) -> None:
        schema.choice(f"{path}.kind", self.kind, self.KINDS)
        schema.number(f"{path}.nu_mean", self.nu_mean, lo=0.0, hi=2.0)
        schema.number(f"{path}.nu_std", self.nu_std, lo=0.0, hi=2.0)
        schema.number(f"{path}.t0_s", self.t0_s, lo=0.0, lo_open=True)
        schema.number(f"{path}.scale", self.scale, lo=0.0)


@dataclass(frozen=True)
class FaultConfig:
    """Stuck-at faults: a fraction ``sa0_rate`` of devices stuck at G_off, ``sa1_rate`` stuck at G_on."""

    sa0_rate: float = 0.0
    sa1_rate: float = 0.0

    def validate(self, path: str) -> None:
        schema.number(f"{path}.sa0_rate", self.sa0_rate, lo=0.0, hi=1.0)
        schema.number(f"{path}.sa1_rate", self.sa1_rate, lo=0.0, hi=1.0)
        if self.sa0_rate + self.sa1_rate > 1.0:
            raise ConfigError(f"{path}.sa1_rate", self.sa1_rate, f"<= {1.0 - self.sa0_rate} (sa0 + sa1 <= 1)")


@dataclass(frozen=True)
class DACConfig:
    """Input DAC: inputs quantised to ``bits`` bits over a range calibrated on data (None = ideal inputs).

    ``range_mode``: ``max`` (largest |x| seen) or ``percentile`` (that percentile of |x|). Non-negative inputs
    use the unsigned range [0, r]; signed inputs a symmetric range [−r, r] with zero exactly representable.
    """

    bits: int | None = None
    range_mode: str = "max"
    percentile: float = 99.99

    def validate(self, path: str) -> None:
        if self.bits is not None:
            schema.integer(f"{path}.bits", self.bits, lo=2, hi=16)
        schema.choice(f"{path}.range_mode", self.range_mode, ("max", "percentile"))
        schema.number(f"{path}.percentile", self.percentile, lo=50.0, hi=100.0, lo_open=True)


@dataclass(frozen=True)
class ADCConfig:
    """Column ADC: each tile column's partial sum (per slice and row tile) quantised to ``bits`` bits.

    The symmetric range [−r, r] is calibrated per layer and slice (``max`` or ``percentile`` of |partial sum|).
    ``noise_lsb``: Gaussian ADC input noise, standard deviation in LSB. None bits = ideal readout.
    """

    bits: int | None = None
    range_mode: str = "max"
    percentile: float = 99.99
    noise_lsb: float = 0.0

    def validate(self, path: str) -> None:
        if self.bits is not None:
            schema.integer(f"{path}.bits", self.bits, lo=2, hi=16)
        schema.choice(f"{path}.range_mode", self.range_mode, ("max", "percentile"))
        schema.number(f"{path}.percentile", self.percentile, lo=50.0, hi=100.0, lo_open=True)
        schema.number(f"{path}.noise_lsb", self.noise_lsb, lo=0.0)
        if self.noise_lsb > 0 and self.bits is None:
            raise ConfigError(f"{path}.noise_lsb", self.noise_lsb, "0 when the ADC is off (bits: null)")


@dataclass(frozen=True)
class ParasiticsConfig:
    """Resistive parasitics (IR drop), solved exactly per physical array. Resistances in Ω.

    P1's values (refs [3, 4] of the paper): driver 1 kΩ, row wire 5 Ω and column wire 10 Ω per cell segment,
    sense 1 kΩ.
    """

    enabled: bool = False
    r_driver_ohm: float = 1000.0
    r_wire_row_ohm: float = 5.0
    r_wire_col_ohm: float = 10.0
    r_sense_ohm: float = 1000.0

    def validate(self, path: str) -> None:
        schema.boolean(f"{path}.enabled", self.enabled)
        for name in ("r_driver_ohm", "r_wire_row_ohm", "r_wire_col_ohm", "r_sense_ohm"):
            schema.number(f"{path}.{name}", getattr(self, name), lo=0.0)


GAUSSIAN_SAMPLERS: tuple[str, ...] = ("exact", "pooled")
"""Samplers of the per-MVM N(0, 1) draws (:class:`SamplingConfig`, implemented in :mod:`xbarlab.sampling`)."""


@dataclass(frozen=True)
class SamplingConfig:
    """How the per-MVM Gaussian draws are made: per-MVM read noise and ADC input noise (both unit-free N(0, 1)).

    ``gaussian``: ``exact`` (default; ``torch.randn``, every draw independent) or ``pooled`` (approximate and
    faster: each call draws n/16 exact values and reads them in 64-long blocks at random offsets with random signs;
    every draw is exactly N(0, 1) and any two are uncorrelated, so sums of k draws have variance k, but within one
    call each value is reused about 16 times. Do not use it where the statistics of one forward's noise matter
    (e.g. measuring the noise itself); docs/sampling.md). Static noise (programming, frozen read noise) is always
    exact. Left out of :meth:`HardwareConfig.to_dict` while at its default, so configuration hashes that predate
    this section are unchanged.
    """

    gaussian: str = "exact"

    def validate(self, path: str) -> None:
        schema.choice(f"{path}.gaussian", self.gaussian, GAUSSIAN_SAMPLERS)
