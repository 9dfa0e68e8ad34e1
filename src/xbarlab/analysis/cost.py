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
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from xbarlab.analysis.cost_config import MODES, CostConfig, EnergyConstants
from xbarlab.analysis.cost_report import EnergyBreakdown, LayerCost, MemoryBreakdown, TrainingCostReport
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
