"""On-chip training cost model: BN-only fine-tuning vs full retraining (P1 §5, docs/papers.md §1.9 R5).

P1 reports that fine-tuning only γ/β on a chip of 64×64 RRAM crossbars that support online training saves
~95 % (VGG16/CIFAR-10) and ~52 % (ResNet-18/TinyImageNet) of the training memory but only ~8 % of the energy,
with batch size 1 and 8-bit weights, activations and gradients. P1 takes its energies from Marinella et al.
(IEEE JETCAS 2018), which xbarlab does not have; the per-operation energies below are **assumptions** with
stated sources (see :class:`EnergyConstants` and ``docs/mitigation.md``).

The model walks the network once with forward hooks on a dummy input (no data needed) and counts, per executed
leaf module, for both training modes:

* **memory** (bits): activations saved for the backward pass, activation gradients, weight gradients (full
  retraining only), BN γ/β gradients, optimiser state; the resident weights and BN parameters/statistics are
  reported separately (they are needed for inference anyway and are the same in both modes);
* **energy** (pJ) for one training step of one mini-batch: forward pass (crossbar MVMs with DAC/ADC and
  partial-sum accumulation, digital BN/activation/pooling/FC, SRAM activation traffic), backward pass
  (activation-gradient MVMs through the *transposed* crossbars -- needed in both modes to reach the γ/β of
  earlier layers -- BN gradients, SRAM traffic), and the parameter update (γ/β in both modes; weight-gradient
  computation and RRAM re-programming in full retraining only).

Which tensors a layer must keep for backward (per mode):

======================  ====================================  ==========================================
layer                   saved for backward                    needed when
======================  ====================================  ==========================================
Conv / Linear           its input (activation bits)           its weights are trained (full retraining)
BatchNorm               x̂ (activation bits) + batch µ, 1/σ    always (γ/β are trained in both modes)
ReLU-like               1-bit mask                            a gradient must pass through it
MaxPool                 argmax index (log2(window) bits)      a gradient must pass through it
other activations       their output (activation bits)        a gradient must pass through it
======================  ====================================  ==========================================

A gradient must reach a layer's output iff a trainable parameter is at or before it in execution order, and
must pass through a layer iff a trainable parameter is strictly before it. Every activation gradient is
counted as stored (P1: "activations and their gradients are still stored"); a streaming implementation could
free them earlier, so the memory figures are upper bounds for both modes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from xbarlab.analysis.cost_trace import _Call, _is_analog, _trace

__all__ = [
    "MODES",
    "CostConfig",
    "EnergyBreakdown",
    "EnergyConstants",
    "LayerCost",
    "MemoryBreakdown",
    "TrainingCostReport",
    "training_cost",
]

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


@dataclass
class MemoryBreakdown:
    """Memory of one layer (or a total) in **bits**; :attr:`training_bytes` is what training adds.

    Attributes:
        saved_activations: activations kept for the backward pass.
        activation_gradients: gradients w.r.t. layer outputs.
        weight_gradients: weight (and bias) gradients of Conv/Linear layers.
        bn_gradients: γ/β gradients.
        optimizer_state: optimiser buffers of trainable parameters.
        resident_weights: Conv/Linear weights and biases (crossbar cells / FC SRAM); same in both modes.
        resident_bn: BN γ, β, running mean and variance; same in both modes.
    """

    saved_activations: int = 0
    activation_gradients: int = 0
    weight_gradients: int = 0
    bn_gradients: int = 0
    optimizer_state: int = 0
    resident_weights: int = 0
    resident_bn: int = 0

    @property
    def training_bits(self) -> int:
        """Bits training needs on top of the inference-resident parameters."""
        return (
            self.saved_activations
            + self.activation_gradients
            + self.weight_gradients
            + self.bn_gradients
            + self.optimizer_state
        )

    @property
    def training_bytes(self) -> float:
        """:attr:`training_bits` in bytes."""
        return self.training_bits / 8

    @property
    def total_bytes(self) -> float:
        """Training memory plus resident weights and BN parameters, in bytes."""
        return (self.training_bits + self.resident_weights + self.resident_bn) / 8

    def __iadd__(self, other: MemoryBreakdown) -> MemoryBreakdown:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


@dataclass
class EnergyBreakdown:
    """Energy of one training step (one mini-batch) in **pJ**.

    Attributes:
        forward: forward pass (crossbar MVMs incl. DAC/ADC, digital layers, SRAM activation traffic).
        backward: activation-gradient propagation and BN γ/β gradients (incl. transposed crossbar MVMs and
            SRAM traffic of saved activations and gradients).
        weight_update: weight-gradient computation and crossbar re-programming / in-array update, and digital
            weight updates (full retraining only).
        bn_update: SGD update of γ/β.
    """

    forward: float = 0.0
    backward: float = 0.0
    weight_update: float = 0.0
    bn_update: float = 0.0

    @property
    def total(self) -> float:
        """Sum of all parts, pJ."""
        return self.forward + self.backward + self.weight_update + self.bn_update

    def __iadd__(self, other: EnergyBreakdown) -> EnergyBreakdown:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


@dataclass
class LayerCost:
    """Counts and costs of one executed leaf module (a module called twice appears twice, ``name#2``).

    Attributes:
        name: module name. kind: conv, linear, bn, relu, maxpool, avgpool, act, reshape or other.
        analog: computed on crossbars. out_shape: output shape incl. batch.
        in_numel, out_numel: input / output elements (whole batch).
        params: weights + biases (Conv/Linear) or γ+β (BN). cells: crossbar cells (weights × slices).
        macs: multiply-accumulates of the forward pass. tiles: crossbar tiles (incl. slices).
        memory: per mode ("full", "bn") memory breakdown (bits). energy: per mode energy breakdown (pJ).
    """

    name: str
    kind: str
    analog: bool
    out_shape: tuple[int, ...]
    in_numel: int
    out_numel: int
    params: int
    cells: int
    macs: int
    tiles: int
    memory: dict[str, MemoryBreakdown]
    energy: dict[str, EnergyBreakdown]


def _pct_saving(full: float, bn: float) -> float:
    return 100.0 * (1.0 - bn / full) if full > 0 else 0.0


@dataclass
class TrainingCostReport:
    """Per-layer costs and totals for full retraining vs BN-only fine-tuning.

    Attributes:
        layers: per-layer records in execution order.
        input_shape: the input shape without batch.
        config: the :class:`CostConfig` used.
        notes: modules the model could not classify exactly, etc.
    """

    layers: list[LayerCost]
    input_shape: tuple[int, ...]
    config: CostConfig
    notes: list[str] = field(default_factory=list)

    def memory(self, mode: str) -> MemoryBreakdown:
        """Total memory breakdown (bits) of ``mode`` ("full" or "bn")."""
        _check_mode(mode)
        tot = MemoryBreakdown()
        for lc in self.layers:
            tot += lc.memory[mode]
        return tot

    def energy(self, mode: str) -> EnergyBreakdown:
        """Total energy breakdown (pJ per training step) of ``mode`` ("full" or "bn")."""
        _check_mode(mode)
        tot = EnergyBreakdown()
        for lc in self.layers:
            tot += lc.energy[mode]
        return tot

    @property
    def memory_saving_pct(self) -> float:
        """Training-memory saving of BN fine-tuning vs full retraining, in %."""
        return _pct_saving(self.memory("full").training_bits, self.memory("bn").training_bits)

    @property
    def memory_saving_incl_resident_pct(self) -> float:
        """Saving when the resident weights and BN parameters are counted too, in %."""
        return _pct_saving(self.memory("full").total_bytes, self.memory("bn").total_bytes)

    @property
    def energy_saving_pct(self) -> float:
        """Training-energy saving of BN fine-tuning vs full retraining, in % (same per step and per epoch)."""
        return _pct_saving(self.energy("full").total, self.energy("bn").total)

    def energy_per_epoch_uj(self, mode: str, train_samples: int) -> float:
        """Energy of one epoch over ``train_samples`` samples, in µJ."""
        if isinstance(train_samples, bool) or not isinstance(train_samples, int) or train_samples < 1:
            raise ValueError(f"energy_per_epoch_uj: train_samples must be an int >= 1, got {train_samples!r}")
        steps = math.ceil(train_samples / self.config.batch_size)
        return self.energy(mode).total * steps * 1e-6

    def summary(self) -> dict[str, Any]:
        """JSON-friendly totals: memory in bytes, energy per step in µJ, savings in %."""
        out: dict[str, Any] = {"input_shape": list(self.input_shape), "batch_size": self.config.batch_size}
        for mode in MODES:
            m = self.memory(mode)
            e = self.energy(mode)
            out[mode] = {
                "memory_bytes": {f.name: getattr(m, f.name) / 8 for f in fields(m)},
                "training_memory_bytes": m.training_bytes,
                "total_memory_bytes": m.total_bytes,
                "energy_uj": {f.name: getattr(e, f.name) * 1e-6 for f in fields(e)},
                "total_energy_uj": e.total * 1e-6,
            }
        out["memory_saving_pct"] = self.memory_saving_pct
        out["memory_saving_incl_resident_pct"] = self.memory_saving_incl_resident_pct
        out["energy_saving_pct"] = self.energy_saving_pct
        out["params"] = sum(lc.params for lc in self.layers)
        out["macs"] = sum(lc.macs for lc in self.layers)
        out["config"] = asdict(self.config)
        return out

    def to_markdown(self, *, per_layer: bool = True) -> str:
        """Markdown tables: per-layer (memory in kB, energy in nJ per step) and totals with savings."""
        lines: list[str] = []
        if per_layer:
            lines += [
                "| layer | kind | output | params | MACs | mem full (kB) | mem BN (kB) | E full (nJ) | E BN (nJ) |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|",
            ]
            for lc in self.layers:
                if lc.kind == "reshape":
                    continue
                shape = "×".join(str(s) for s in lc.out_shape[1:])
                lines.append(
                    f"| {lc.name} | {lc.kind}{' (analog)' if lc.analog else ''} | {shape} | {lc.params:,} | "
                    f"{lc.macs:,} | {lc.memory['full'].training_bytes / 1e3:,.1f} | "
                    f"{lc.memory['bn'].training_bytes / 1e3:,.1f} | {lc.energy['full'].total / 1e3:,.1f} | "
                    f"{lc.energy['bn'].total / 1e3:,.1f} |"
                )
            lines.append("")
        mf, mb = self.memory("full"), self.memory("bn")
        ef, eb = self.energy("full"), self.energy("bn")
        lines += [
            "| quantity | full retraining | BN fine-tuning | saving |",
            "|---|---:|---:|---:|",
        ]
        for label, attr in (
            ("saved activations (kB)", "saved_activations"),
            ("activation gradients (kB)", "activation_gradients"),
            ("weight gradients (kB)", "weight_gradients"),
            ("BN γ/β gradients (kB)", "bn_gradients"),
            ("optimiser state (kB)", "optimizer_state"),
        ):
            a, b = getattr(mf, attr) / 8e3, getattr(mb, attr) / 8e3
            lines.append(f"| {label} | {a:,.1f} | {b:,.1f} | |")
        lines.append(
            f"| **training memory (kB)** | **{mf.training_bytes / 1e3:,.1f}** "
            f"| **{mb.training_bytes / 1e3:,.1f}** "
            f"| **{self.memory_saving_pct:.1f} %** |"
        )
        lines.append(
            f"| memory incl. resident weights + BN (kB) | {mf.total_bytes / 1e3:,.1f} "
            f"| {mb.total_bytes / 1e3:,.1f} "
            f"| {self.memory_saving_incl_resident_pct:.1f} % |"
        )
        for label, attr in (
            ("forward energy (µJ/step)", "forward"),
            ("backward energy (µJ/step)", "backward"),
            ("weight update energy (µJ/step)", "weight_update"),
            ("γ/β update energy (µJ/step)", "bn_update"),
        ):
            a, b = getattr(ef, attr) * 1e-6, getattr(eb, attr) * 1e-6
            lines.append(f"| {label} | {a:,.3f} | {b:,.3f} | |")
        lines.append(
            f"| **training energy (µJ/step)** | **{ef.total * 1e-6:,.3f}** | **{eb.total * 1e-6:,.3f}** "
            f"| **{self.energy_saving_pct:.1f} %** |"
        )
        return "\n".join(lines) + "\n"


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


# ----------------------------------------------------------------------------------------------------
# Counting
# ----------------------------------------------------------------------------------------------------


@dataclass
class _MatGeom:
    """Matrix view of a Conv/Linear call: P input vectors of K_g per group, N_g outputs per group."""

    positions: int  # output positions incl. batch (P)
    groups: int
    k: int  # fan-in per group (K_g)
    n: int  # outputs per group (N_g)
    row_tiles: int
    col_tiles: int

    @property
    def macs(self) -> int:
        return self.positions * self.groups * self.k * self.n


def _geometry(call: _Call, cfg: CostConfig) -> _MatGeom:
    w = getattr(call.module, "weight", None)
    assert isinstance(w, torch.Tensor)
    if call.kind == "conv":
        groups = int(getattr(call.module, "groups", 1))
        c_out = int(w.shape[0])
        k = int(w[0].numel())  # C_in/groups · kernel elements
        positions = call.out_numel // c_out
        n = c_out // groups
    else:
        groups = 1
        n = int(w.shape[0])
        k = int(w.shape[1])
        positions = call.out_numel // n
    return _MatGeom(positions, groups, k, n, math.ceil(k / cfg.xbar_rows), math.ceil(n / cfg.xbar_cols))


def _maxpool_index_bits(call: _Call) -> int:
    ks = getattr(call.module, "kernel_size", None) if call.module is not None else call.window
    if ks is not None:
        window = math.prod(ks) if isinstance(ks, (tuple, list)) else int(ks) ** (len(call.out_shape) - 2)
    else:  # adaptive: the largest window covers ceil(in/out) elements per spatial dim
        window = max(1, math.ceil(call.in_numel / max(call.out_numel, 1)))
    return max(1, math.ceil(math.log2(window))) if window > 1 else 1


def training_cost(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    config: CostConfig | None = None,
) -> TrainingCostReport:
    """Memory and energy of full retraining vs BN-only fine-tuning on chip, per layer and in total.

    Args:
        model: the network (plain PyTorch or converted; analog layers are recognised by ``effective_weight``).
            Every Conv layer is assumed to run on crossbars; Linear layers only if ``config.analog_linear``.
        input_shape: one input sample's shape without the batch dimension, e.g. ``(3, 32, 32)``.
        config: assumptions (:class:`CostConfig`); default: P1 §5 (batch 1, 8-bit, 64×64 crossbars).

    Returns:
        A :class:`TrainingCostReport`; ``.to_markdown()`` renders it, ``.summary()`` gives totals and savings.
    """
    cfg = config if config is not None else CostConfig()
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"training_cost: input_shape must be a non-empty sequence of positive ints, got {shape}")
    if not any(isinstance(m, _BatchNorm) and m.affine for m in model.modules()):
        raise ValueError(
            "training_cost: the model has no affine BatchNorm layer, so BN fine-tuning has nothing to train; "
            "allowed: a model with BN (e.g. resnet20, vgg16-bn, vgg-small)"
        )
    calls = _trace(model, shape, cfg.batch_size)
    if not calls:
        raise ValueError("training_cost: the forward pass called no countable module")
    notes: list[str] = []
    E = cfg.energy
    act_B = cfg.activation_bits / 8
    grad_B = cfg.gradient_bits / 8
    layers: list[LayerCost] = []

    def trainable(c: _Call, mode: str) -> bool:
        if c.module is None:
            return False
        if c.kind == "bn":
            return getattr(c.module, "weight", None) is not None
        if mode == "bn":
            return False
        return any(p.numel() for p in c.module.parameters(recurse=True))

    train_flags = {mode: [trainable(c, mode) for c in calls] for mode in MODES}

    for idx, c in enumerate(calls):
        m = c.module
        if c.kind == "other":
            notes.append(f"{c.name}: unrecognised module {type(m).__name__}, counted as pass-through")
        analog = c.kind == "conv" or (c.kind == "linear" and (cfg.analog_linear or (m is not None and _is_analog(m))))
        geom = _geometry(c, cfg) if c.kind in ("conv", "linear") else None
        w = getattr(m, "weight", None)
        b = getattr(m, "bias", None)
        n_w = int(w.numel()) if isinstance(w, torch.Tensor) else 0
        n_b = int(b.numel()) if isinstance(b, torch.Tensor) else 0
        if c.kind == "bn":
            params = n_w + n_b
            channels = int(c.out_shape[1])
        elif c.kind in ("conv", "linear"):
            params = n_w + n_b
            channels = 0
        else:
            params = sum(p.numel() for p in m.parameters()) if m is not None else 0
            channels = 0
            if params:
                notes.append(f"{c.name}: {params} parameters of {type(m).__name__} are not counted")
                params = 0
        cells = n_w * cfg.slices_per_weight if analog else 0
        macs = geom.macs if geom is not None else 0
        tiles = geom.groups * geom.row_tiles * geom.col_tiles * cfg.slices_per_weight if (geom and analog) else 0
        mem: dict[str, MemoryBreakdown] = {}
        en: dict[str, EnergyBreakdown] = {}
        for mode in MODES:
            flags = train_flags[mode]
            is_tr = flags[idx]
            need_out_grad = any(flags[: idx + 1])
            need_in_grad = any(flags[:idx])
            mb = MemoryBreakdown()
            eb = EnergyBreakdown()
            saved_new = 0  # bits of saved tensors created by this layer (written in forward)
            saved_reuse = 0  # bits of saved tensors that are the layer's input (already in SRAM)
            # ---- memory ----
            if c.kind in ("conv", "linear"):
                mb.resident_weights = params * cfg.weight_bits
                if is_tr:
                    saved_reuse = c.in_numel * cfg.activation_bits
                    if cfg.count_weight_gradient_memory:
                        mb.weight_gradients = params * cfg.gradient_bits
                    mb.optimizer_state = params * cfg.optimizer_state_per_param * cfg.gradient_bits
            elif c.kind == "bn":
                mb.resident_bn = (params + 2 * channels) * cfg.bn_bits
                if is_tr:
                    saved_new = c.out_numel * cfg.activation_bits + 2 * channels * cfg.bn_bits
                    mb.bn_gradients = params * cfg.gradient_bits
                    mb.optimizer_state = params * cfg.optimizer_state_per_param * cfg.gradient_bits
            elif need_in_grad:
                if c.kind == "relu":
                    saved_new = c.out_numel * cfg.mask_bits
                elif c.kind == "maxpool":
                    saved_new = c.out_numel * _maxpool_index_bits(c)
                elif c.kind == "act":
                    saved_new = c.out_numel * cfg.activation_bits
            mb.saved_activations = saved_new + saved_reuse
            if need_out_grad and c.kind != "reshape":
                mb.activation_gradients = c.out_numel * cfg.gradient_bits
            # ---- energy: forward (identical in both modes) ----
            fwd = 0.0
            if c.kind in ("conv", "linear"):
                assert geom is not None
                if analog:
                    s = cfg.slices_per_weight
                    pg = geom.positions * geom.groups
                    fwd += macs * s * E.cell_read_pj
                    fwd += pg * geom.k * geom.col_tiles * s * E.dac_pj
                    conv_out = pg * geom.n * geom.row_tiles * s
                    fwd += conv_out * (E.adc_pj + E.digital_op_pj)
                else:
                    fwd += macs * E.digital_mac_pj + params * cfg.weight_bits / 8 * E.sram_read_pj_per_byte
            elif c.kind == "bn":
                fwd += c.out_numel * 2 * E.digital_mac_pj
            elif c.kind == "relu":
                fwd += c.out_numel * E.digital_op_pj
            elif c.kind in ("maxpool", "avgpool"):
                fwd += c.in_numel * E.digital_op_pj
            elif c.kind == "add":
                fwd += c.out_numel * E.digital_op_pj
            elif c.kind == "act":
                fwd += c.out_numel * 4 * E.digital_mac_pj
            if c.kind != "reshape":
                fwd += c.in_numel * act_B * E.sram_read_pj_per_byte + c.out_numel * act_B * E.sram_write_pj_per_byte
            fwd += saved_new / 8 * E.sram_write_pj_per_byte
            eb.forward = fwd
            # ---- energy: backward ----
            bwd = 0.0
            if need_out_grad and c.kind != "reshape":
                bwd += c.out_numel * grad_B * E.sram_read_pj_per_byte  # read the output gradient
                bwd += (saved_new + saved_reuse) / 8 * E.sram_read_pj_per_byte  # read saved activations
            if need_in_grad and c.kind != "reshape":
                bwd += c.in_numel * grad_B * E.sram_write_pj_per_byte  # write the input gradient
                if c.kind in ("conv", "linear"):
                    assert geom is not None
                    if analog:  # transposed MVM: inputs on the columns, outputs on the rows
                        s = cfg.slices_per_weight
                        pg = geom.positions * geom.groups
                        bwd += macs * s * E.cell_read_pj
                        bwd += pg * geom.n * geom.row_tiles * s * E.dac_pj
                        bwd += pg * geom.k * geom.col_tiles * s * (E.adc_pj + E.digital_op_pj)
                    else:
                        bwd += macs * E.digital_mac_pj
                elif c.kind == "bn":
                    bwd += c.out_numel * 3 * E.digital_mac_pj
                elif c.kind in ("relu", "maxpool"):
                    bwd += c.out_numel * E.digital_op_pj
                elif c.kind == "avgpool":
                    bwd += c.in_numel * E.digital_op_pj
                elif c.kind == "act":
                    bwd += c.out_numel * 2 * E.digital_mac_pj
            if c.kind == "bn" and is_tr:  # dγ = Σ dy·x̂, dβ = Σ dy
                bwd += c.out_numel * (E.digital_mac_pj + E.digital_op_pj)
                bwd += params * grad_B * E.sram_write_pj_per_byte
            eb.backward = bwd
            # ---- energy: updates ----
            if c.kind == "bn" and is_tr:  # SGD: read γ/β and grads, multiply-add, write back
                nbytes_p = params * cfg.bn_bits / 8
                eb.bn_update = (
                    params * E.digital_mac_pj
                    + nbytes_p * (E.sram_read_pj_per_byte + E.sram_write_pj_per_byte)
                    + params * grad_B * E.sram_read_pj_per_byte
                )
            if c.kind in ("conv", "linear") and is_tr:
                assert geom is not None
                upd = 0.0
                # bias gradient (Σ over positions of dy) and update, digital
                upd += c.out_numel * E.digital_op_pj if n_b else 0.0
                upd += n_b * (
                    E.digital_mac_pj + cfg.weight_bits / 8 * (E.sram_read_pj_per_byte + E.sram_write_pj_per_byte)
                )
                s = cfg.slices_per_weight
                if analog and cfg.update_scheme == "outer_product":
                    pg = geom.positions * geom.groups
                    upd += pg * (geom.k * geom.col_tiles + geom.n * geom.row_tiles) * s * E.opu_drive_pj
                    upd += macs * s * E.opu_cell_pj
                else:
                    # dW = Σ_p x_p δ_pᵀ with digital MACs, buffered, then applied
                    upd += macs * E.digital_mac_pj
                    if cfg.count_weight_gradient_memory:
                        upd += n_w * grad_B * (E.sram_write_pj_per_byte + E.sram_read_pj_per_byte)
                    if analog:
                        upd += n_w * s * E.rram_program_pj
                    else:
                        upd += n_w * (
                            E.digital_mac_pj
                            + cfg.weight_bits / 8 * (E.sram_read_pj_per_byte + E.sram_write_pj_per_byte)
                        )
                eb.weight_update = upd
            mem[mode] = mb
            en[mode] = eb
        layers.append(
            LayerCost(
                name=c.name,
                kind=c.kind,
                analog=analog,
                out_shape=c.out_shape,
                in_numel=c.in_numel,
                out_numel=c.out_numel,
                params=params,
                cells=cells,
                macs=macs,
                tiles=tiles,
                memory=mem,
                energy=en,
            )
        )
    return TrainingCostReport(layers=layers, input_shape=shape, config=cfg, notes=notes)
