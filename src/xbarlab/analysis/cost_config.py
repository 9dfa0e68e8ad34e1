"""Assumptions of the on-chip training cost model (:mod:`xbarlab.analysis.cost`): per-operation energies and the
counting configuration (batch size, bit widths, crossbar size, update scheme), frozen and validated."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal

__all__ = ["MODES", "CostConfig", "EnergyConstants", "Mode"]

Mode = Literal["full", "bn"]
#: Training modes: full retraining (all weights + BN γ/β) and BN-only fine-tuning (γ/β).
MODES: tuple[Mode, Mode] = ("full", "bn")


@dataclass(frozen=True)
class EnergyConstants:
    """Per-operation energies in pJ. **Assumptions**, not P1's (Marinella et al. 2018) numbers.

    Attributes:
        digital_mac_pj: one 8-bit digital multiply-accumulate: 0.2 pJ (8-bit multiply) + 0.03 pJ (8-bit add),
            Horowitz, ISSCC 2014, 45 nm.
        digital_op_pj: one 8-bit digital add/compare/select (0.03 pJ, Horowitz 2014).
        sram_read_pj_per_byte: SRAM read energy per byte: 10 pJ per 64-bit access of an 8 KB SRAM
            (Horowitz 2014) = 1.25 pJ/B.
        sram_write_pj_per_byte: SRAM write energy per byte, assumed equal to a read (1.25 pJ/B).
        cell_read_pj: crossbar array energy per cell per MVM (one analog MAC): ``V_read² · G · t_read`` with
            V_read = 0.2 V, mean G = 10 µS (RRAM 2–20 µS, docs/papers.md Table 1), t_read = 10 ns → 0.004 pJ.
        dac_pj: driving one 8-bit input onto one crossbar row (or column, for the transposed MVM): 0.1 pJ
            (assumption; driver/DAC dominated, the line's C·V² is ~1 fJ for 64 cells).
        adc_pj: one 8-bit ADC conversion: 2.0 pJ = Walden figure of merit ≈ 8 fJ/conversion-step × 2^8
            (good SAR ADCs reach 1–10 fJ/step).
        opu_drive_pj: one row or column pulse driver firing for an in-array outer-product update (OPU), 0.1 pJ
            (assumption, same as ``dac_pj``).
        opu_cell_pj: energy deposited in one cell by one outer-product update: 0.01 pJ (assumption: a partial
            SET/RESET pulse of 1 V · 10 µA · 10 ns = 0.1 pJ when row and column pulses fully coincide, times a
            mean coincidence fraction of 0.1 for pulse-width/stochastic-coded 8-bit x and δ).
        rram_program_pj: re-programming one cell with program-and-verify (``update_scheme="digital"``):
            10 pJ (assumption: ~5 pulses of 1 V · 20 µA · 100 ns).
    """

    digital_mac_pj: float = 0.23
    digital_op_pj: float = 0.03
    sram_read_pj_per_byte: float = 1.25
    sram_write_pj_per_byte: float = 1.25
    cell_read_pj: float = 0.004
    dac_pj: float = 0.1
    adc_pj: float = 2.0
    opu_drive_pj: float = 0.1
    opu_cell_pj: float = 0.01
    rram_program_pj: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"EnergyConstants: {f.name} must be a finite energy >= 0 pJ, got {v!r}")


@dataclass(frozen=True)
class CostConfig:
    """Hardware/training assumptions of the cost model (defaults: P1 §5 where stated).

    Attributes:
        batch_size: training batch size (P1: 1).
        weight_bits, activation_bits, gradient_bits: bit widths (P1: 8 each).
        bn_bits: bit width of BN γ/β, running and batch statistics (P1: unstated; 8 assumed).
        mask_bits: bits per element of a ReLU mask (1).
        xbar_rows, xbar_cols: crossbar size (P1: 64×64).
        slices_per_weight: crossbar cells (tiles) per weight: 8-bit weights as two 4-bit slices (P1 §1.3).
        analog_linear: map Linear layers onto crossbars too (P1: the FC classifier is digital, so False).
        count_weight_gradient_memory: count an 8-bit weight-gradient buffer per weight in full retraining (as
            P1
            does: "no weight gradients" is its first saving). A strictly in-array outer-product update at
            batch 1 needs no such buffer; set False for that reading.
        optimizer_state_per_param: extra stored values per trainable parameter (0: plain SGD at batch 1;
            1: SGD with momentum).
        update_scheme: how full retraining updates the crossbar weights: ``"outer_product"`` (default;
            in-array parallel outer-product update of an analog training accelerator as in Marinella et al.
            2018: one OPU per output position, no ADC) or ``"digital"`` (weight gradient computed with digital
            MACs, buffered in SRAM, then every cell re-programmed once per step).
        energy: per-operation energies (:class:`EnergyConstants`).
    """

    batch_size: int = 1
    weight_bits: int = 8
    activation_bits: int = 8
    gradient_bits: int = 8
    bn_bits: int = 8
    mask_bits: int = 1
    xbar_rows: int = 64
    xbar_cols: int = 64
    slices_per_weight: int = 2
    analog_linear: bool = False
    count_weight_gradient_memory: bool = True
    optimizer_state_per_param: int = 0
    update_scheme: Literal["outer_product", "digital"] = "outer_product"
    energy: EnergyConstants = field(default_factory=EnergyConstants)

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "weight_bits",
            "activation_bits",
            "gradient_bits",
            "bn_bits",
            "mask_bits",
            "xbar_rows",
            "xbar_cols",
            "slices_per_weight",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"CostConfig: {name} must be an int >= 1, got {v!r}")
        v = self.optimizer_state_per_param
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"CostConfig: optimizer_state_per_param must be an int >= 0, got {v!r}")
        if self.update_scheme not in ("outer_product", "digital"):
            raise ValueError(
                f"CostConfig: update_scheme must be 'outer_product' or 'digital', got {self.update_scheme!r}"
            )
        if not isinstance(self.energy, EnergyConstants):
            raise TypeError(f"CostConfig: energy must be an EnergyConstants, got {type(self.energy).__name__}")
