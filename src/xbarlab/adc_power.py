"""ADC energy model: energy per conversion from a figure of merit, and total ADC energy per inference.

CorrectNet+ optimises the quantisation setting for total ADC power, which grows with the ADC resolution
(docs/papers.md §3.7, §4.9). Two scalings are offered:

* ``walden`` (default): the Walden figure of merit ``FOM_W = P / (2^ENOB · f_s)`` is an energy per conversion
  step, so at a fixed FOM one conversion costs ``E(B) = FOM_W · 2^B`` (doubling per added bit). ENOB is taken
  equal to the nominal resolution B (an ideal converter; a real ADC's ENOB is lower, which scales every layer
  alike and cancels in the relative figures).
* ``schreier`` (option, thermal-noise-limited converters, 6 dB of SNDR per bit at a fixed Schreier FOM):
  ``E(B) = E_W(B_ref) · 4^(B − B_ref)``, anchored to the Walden energy at ``reference_bits`` (8) so both models
  agree there and only the slope differs.

Default constant: ``FOM_W = 5 fJ/conversion-step``, a round mid-range value for SAR ADCs of the kind used in
crossbar accelerators (published designs span roughly 1–50 fJ/conversion-step); an 8-bit conversion then costs
5 · 256 = 1280 fJ = 1.28 pJ. Absolute energies scale linearly with this constant; relative figures (savings
against uniform 8-bit ADCs) do not depend on it.

Conversions (:func:`layer_conversions`): xbarlab's ADC converts the **differential** partial sum of one column of
one row tile for one weight slice (``layers.py``: the G+ − G− or reference subtraction happens before the ADC),
and inputs are applied in one analog step (multi-bit DAC, not bit-serial). Per inference, a layer therefore
needs ``output positions × groups × row tiles × slices × used columns`` conversions. Options: convert the two
polarities separately (×2, ``separate_polarities``), count every physical column of every column tile
including padding (``count_unused_columns``) and bit-serial inputs (``input_cycles`` = input bits).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from xbarlab.conversion import convert
from xbarlab.hardware import HardwareConfig
from xbarlab.hooks import ForwardHook, forward_hooks
from xbarlab.layers import analog_layers
from xbarlab.mapping import TileLayout

__all__ = [
    "ADC_SCALINGS",
    "DEFAULT_FOM_FJ_PER_STEP",
    "ADCEnergyReport",
    "ADCPowerModel",
    "LayerADCEnergy",
    "adc_energy_report",
    "layer_conversions",
    "output_positions",
]

DEFAULT_FOM_FJ_PER_STEP = 5.0
"""Walden figure of merit, fJ per conversion step (see the module docstring for the choice)."""
ADC_SCALINGS = ("walden", "schreier")


def _check_bits(bits: int, name: str = "bits") -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise ValueError(f"{name}: invalid value {bits!r}; allowed: an integer in [1, 16]")


@dataclass(frozen=True)
class ADCPowerModel:
    """Energy per conversion of a ``bits``-bit ADC.

    Attributes:
        scaling: ``walden`` (E ∝ 2^B) or ``schreier`` (E ∝ 4^B, anchored at ``reference_bits``).
        fom_fj_per_step: Walden figure of merit in fJ per conversion step.
        reference_bits: resolution at which the Schreier scaling equals the Walden one, and the baseline of
            relative figures.
    """

    scaling: str = "walden"
    fom_fj_per_step: float = DEFAULT_FOM_FJ_PER_STEP
    reference_bits: int = 8

    def __post_init__(self) -> None:
        if self.scaling not in ADC_SCALINGS:
            raise ValueError(f"scaling: invalid value {self.scaling!r}; allowed: one of {', '.join(ADC_SCALINGS)}")
        if not (math.isfinite(self.fom_fj_per_step) and self.fom_fj_per_step > 0):
            raise ValueError(f"fom_fj_per_step: invalid value {self.fom_fj_per_step!r}; allowed: a number > 0")
        _check_bits(self.reference_bits, "reference_bits")

    def energy_per_conversion_fj(self, bits: int) -> float:
        """Energy of one ``bits``-bit conversion in fJ."""
        _check_bits(bits)
        if self.scaling == "walden":
            return self.fom_fj_per_step * 2.0**bits
        anchor = self.fom_fj_per_step * 2.0**self.reference_bits
        return anchor * 4.0 ** (bits - self.reference_bits)

    def energy_per_conversion_pj(self, bits: int) -> float:
        """Energy of one ``bits``-bit conversion in pJ."""
        return self.energy_per_conversion_fj(bits) * 1e-3

    def power_mw(self, bits: int, sample_rate_hz: float) -> float:
        """Power of one ADC converting at ``sample_rate_hz`` (samples/s), in mW."""
        if not (math.isfinite(sample_rate_hz) and sample_rate_hz > 0):
            raise ValueError(f"sample_rate_hz: invalid value {sample_rate_hz!r}; allowed: a number > 0")
        return self.energy_per_conversion_fj(bits) * 1e-15 * sample_rate_hz * 1e3

    def relative(self, bits: int) -> float:
        """Energy per conversion relative to a ``reference_bits`` ADC (2^(B−8) for Walden)."""
        return self.energy_per_conversion_fj(bits) / self.energy_per_conversion_fj(self.reference_bits)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scaling": self.scaling,
            "fom_fj_per_step": self.fom_fj_per_step,
            "reference_bits": self.reference_bits,
        }


def layer_conversions(
    layout: TileLayout,
    positions: int,
    *,
    separate_polarities: bool = False,
    count_unused_columns: bool = False,
    input_cycles: int = 1,
) -> int:
    """ADC conversions per inference of one layer: positions × groups × row tiles × slices × columns (× options).

    ``positions``: output positions per sample (H_out·W_out for a 2-D conv, 1 for a linear layer on a vector).
    Columns are the layer's outputs per group (``layout.n``), or every physical column of its column tiles
    with ``count_unused_columns`` (padding and the offset mapping's reference column included).
    """
    if isinstance(positions, bool) or not isinstance(positions, int) or positions < 0:
        raise ValueError(f"positions: invalid value {positions!r}; allowed: an integer >= 0")
    if isinstance(input_cycles, bool) or not isinstance(input_cycles, int) or input_cycles < 1:
        raise ValueError(f"input_cycles: invalid value {input_cycles!r}; allowed: an integer >= 1")
    columns = layout.tiles_c * layout.cols if count_unused_columns else layout.n
    polarities = layout.polarities if separate_polarities else 1
    return positions * layout.groups * layout.tiles_r * layout.num_slices * columns * polarities * input_cycles


@torch.no_grad()
def output_positions(model: nn.Module, example: Tensor) -> dict[str, int]:
    """Output positions per sample of every Conv1d/Conv2d/Linear of a digital ``model`` for input ``example``.

    A conv's positions are its output's spatial size; a linear layer's are the product of the leading
    dimensions after the batch (1 for vectors). Keys are module paths (= analog layer names after conversion).
    """
    found: dict[str, int] = {}

    def hook_for(path: str) -> ForwardHook:
        def hook(mod: nn.Module, _inp: Any, out: Tensor) -> None:
            if isinstance(mod, nn.Linear):
                found[path] = int(math.prod(out.shape[1:-1]))
            else:
                found[path] = int(math.prod(out.shape[2:]))

        return hook

    layers = (nn.Conv1d, nn.Conv2d, nn.Linear)
    hooks = [(m, hook_for(path)) for path, m in model.named_modules() if isinstance(m, layers)]
    was_training = model.training
    model.eval()
    try:
        with forward_hooks(hooks):
            model(example[:1])
    finally:
        model.train(was_training)
    return found


@dataclass(frozen=True)
class LayerADCEnergy:
    """ADC conversions and energy of one analog layer per inference (bits None: ADC off, no energy counted)."""

    name: str
    positions: int
    groups: int
    tiles_r: int
    slices: int
    columns: int
    conversions: int
    bits: int | None
    energy_pj: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ADCEnergyReport:
    """Per-layer and total ADC energy per inference (pJ) for one hardware configuration."""

    layers: tuple[LayerADCEnergy, ...]
    model: ADCPowerModel
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def total_pj(self) -> float:
        return sum(la.energy_pj for la in self.layers)

    @property
    def total_conversions(self) -> int:
        return sum(la.conversions for la in self.layers if la.bits is not None)

    def relative_to(self, reference: ADCEnergyReport) -> float:
        """Total energy as a fraction of ``reference``'s total."""
        ref = reference.total_pj
        if ref <= 0:
            raise ValueError("reference: total ADC energy is 0 (ADCs off?); allowed: a report with ADCs on")
        return self.total_pj / ref

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_pj": self.total_pj,
            "total_conversions": self.total_conversions,
            "model": self.model.as_dict(),
            "options": self.options,
            "layers": [la.as_dict() for la in self.layers],
        }

    def table(self) -> str:
        """Markdown table of the per-layer figures."""
        lines = [
            "| layer | positions | row tiles | slices | columns | conversions | ADC bits | energy (pJ) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for la in self.layers:
            bits = "off" if la.bits is None else str(la.bits)
            lines.append(
                f"| {la.name} | {la.positions} | {la.tiles_r} | {la.slices} | {la.columns} | {la.conversions} "
                f"| {bits} | {la.energy_pj:.1f} |"
            )
        lines.append(f"| **total** | | | | | {self.total_conversions} | | {self.total_pj:.1f} |")
        return "\n".join(lines)


def adc_energy_report(
    model: nn.Module,
    hw: HardwareConfig,
    example: Tensor,
    power: ADCPowerModel | None = None,
    *,
    adc_bits: Mapping[str, int] | None = None,
    separate_polarities: bool = False,
    count_unused_columns: bool = False,
    input_cycles: int = 1,
    positions: Mapping[str, int] | None = None,
) -> ADCEnergyReport:
    """ADC energy per inference of the digital ``model`` mapped with ``hw`` (per-layer overrides applied).

    ``adc_bits`` overrides the resolution of named layers (a what-if without a new config). ``positions``
    (from :func:`output_positions`) skips the shape-inference forward pass. Layers kept digital are left out.
    """
    power = power or ADCPowerModel()
    pos = dict(positions) if positions is not None else output_positions(model, example)
    chip = convert(model, hw)
    rows = []
    for layer in analog_layers(chip):
        lay = layer.layout
        bits = layer.hw.adc.bits
        if adc_bits is not None and layer.layer_name in adc_bits:
            bits = adc_bits[layer.layer_name]
        if layer.layer_name not in pos:
            raise KeyError(f"positions: no entry for layer {layer.layer_name!r}")
        n_conv = layer_conversions(
            lay,
            pos[layer.layer_name],
            separate_polarities=separate_polarities,
            count_unused_columns=count_unused_columns,
            input_cycles=input_cycles,
        )
        energy = 0.0 if bits is None else n_conv * power.energy_per_conversion_pj(bits)
        columns = lay.tiles_c * lay.cols if count_unused_columns else lay.n
        rows.append(
            LayerADCEnergy(
                layer.layer_name,
                pos[layer.layer_name],
                lay.groups,
                lay.tiles_r,
                lay.num_slices,
                columns,
                n_conv,
                bits,
                energy,
            )
        )
    return ADCEnergyReport(
        layers=tuple(rows),
        model=power,
        options={
            "separate_polarities": separate_polarities,
            "count_unused_columns": count_unused_columns,
            "input_cycles": input_cycles,
        },
    )
