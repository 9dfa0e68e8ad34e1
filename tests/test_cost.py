"""On-chip training cost model: exact hand-computed counts for a tiny net, and behaviour on larger ones."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from xbarlab.analysis.cost import CostConfig, EnergyConstants, TrainingCostReport, training_cost

ZERO = {f.name: 0.0 for f in fields(EnergyConstants)}


def tiny_net() -> nn.Module:
    """conv(1→2, 3×3, pad 1, no bias) → BN(2) → ReLU → Flatten → Linear(32 → 3) on a 1×4×4 input."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1, bias=False),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32, 3),
    )


def only(**pj: float) -> CostConfig:
    """Default config with every energy 0 except the given ones."""
    return CostConfig(energy=EnergyConstants(**{**ZERO, **pj}))


def report(cfg: CostConfig | None = None) -> TrainingCostReport:
    return training_cost(tiny_net(), (1, 4, 4), config=cfg)


def test_layer_inventory() -> None:
    r = report()
    assert [(lc.name, lc.kind) for lc in r.layers] == [
        ("0", "conv"),
        ("1", "bn"),
        ("2", "relu"),
        ("3", "reshape"),
        ("4", "linear"),
    ]
    conv, bn, _, _, lin = r.layers
    # conv: P = 16 positions, K = 9, N = 2 → 288 MACs; one 64×64 tile per slice, 2 slices
    assert (conv.in_numel, conv.out_numel, conv.params, conv.macs, conv.cells, conv.tiles) == (
        16,
        32,
        18,
        288,
        36,
        2,
    )
    assert conv.analog and not lin.analog  # P1: the FC classifier is digital
    assert (bn.params, bn.out_numel) == (4, 32)
    assert (lin.params, lin.macs) == (99, 96)


def test_memory_counts_full_retraining() -> None:
    m = report().memory("full")
    # saved: conv input 16×8 + BN x̂ 32×8 + batch µ, 1/σ 2·2×8 + ReLU mask 32×1 + linear input 32×8
    assert m.saved_activations == 128 + 256 + 32 + 32 + 256 == 704
    # output gradients of conv, BN, ReLU (32 each) and linear (3), 8 bits; Flatten is a view
    assert m.activation_gradients == (32 + 32 + 32 + 3) * 8 == 792
    assert m.weight_gradients == (18 + 99) * 8 == 936
    assert m.bn_gradients == 4 * 8
    assert m.optimizer_state == 0
    assert m.training_bits == 2464
    assert m.training_bytes == 308.0
    assert m.resident_weights == (18 + 99) * 8
    assert m.resident_bn == (4 + 4) * 8  # γ, β, running mean, running var
    assert m.total_bytes == (2464 + 936 + 64) / 8


def test_memory_counts_bn_finetuning() -> None:
    r = report()
    m = r.memory("bn")
    # no conv/linear inputs saved (no weight gradients); BN x̂ + µ, 1/σ; ReLU mask (gradient passes through)
    assert m.saved_activations == 288 + 32 == 320
    # nothing trainable before the BN → the conv output gradient is not needed
    assert m.activation_gradients == (32 + 32 + 3) * 8 == 536
    assert m.weight_gradients == 0
    assert m.bn_gradients == 32
    assert m.training_bits == 888
    assert r.memory_saving_pct == pytest.approx(100 * (1 - 888 / 2464))


def test_memory_bit_widths_and_options() -> None:
    cfg = CostConfig(activation_bits=4, gradient_bits=16, bn_bits=16, optimizer_state_per_param=1)
    r = training_cost(tiny_net(), (1, 4, 4), config=cfg)
    full, bn = r.memory("full"), r.memory("bn")
    assert full.saved_activations == 16 * 4 + (32 * 4 + 4 * 16) + 32 + 32 * 4
    assert full.activation_gradients == 99 * 16
    assert full.weight_gradients == 117 * 16
    assert full.optimizer_state == (18 + 4 + 99) * 16
    assert bn.optimizer_state == 4 * 16
    no_dw = training_cost(tiny_net(), (1, 4, 4), config=CostConfig(count_weight_gradient_memory=False))
    assert no_dw.memory("full").weight_gradients == 0
    # batch size scales activations, not parameters
    b4 = training_cost(tiny_net(), (1, 4, 4), config=CostConfig(batch_size=4))
    assert b4.memory("bn").activation_gradients == 4 * 536
    assert b4.memory("full").weight_gradients == 936


def test_energy_crossbar_terms() -> None:
    # ADC: P·N·row_tiles·slices = 16·2·1·2 conversions in the forward pass; no input gradient for conv 1
    r = report(only(adc_pj=1.0))
    assert r.energy("full").forward == 64 and r.energy("full").backward == 0
    assert r.energy("bn").total == 64
    # DAC: P·K·col_tiles·slices = 16·9·1·2
    assert report(only(dac_pj=1.0)).energy("full").forward == 288
    # array reads: MACs × slices
    assert report(only(cell_read_pj=1.0)).energy("full").forward == 576
    # outer-product update (full retraining only): cells × positions, drivers P·(K + N)·slices
    r = report(only(opu_cell_pj=1.0))
    assert r.energy("full").weight_update == 576 and r.energy("bn").total == 0
    assert report(only(opu_drive_pj=1.0)).energy("full").weight_update == 16 * (9 + 2) * 2
    # digital scheme: every cell re-programmed once per step
    cfg = CostConfig(update_scheme="digital", energy=EnergyConstants(**{**ZERO, "rram_program_pj": 1.0}))
    r = training_cost(tiny_net(), (1, 4, 4), config=cfg)
    assert r.energy("full").weight_update == 18 * 2 and r.energy("bn").weight_update == 0


def test_energy_digital_terms() -> None:
    r = report(only(digital_mac_pj=1.0))
    full, bn = r.energy("full"), r.energy("bn")
    assert full.forward == bn.forward == 32 * 2 + 96  # BN (2 MAC/element) + digital FC
    # full: BN dx (3/element) + dγ (1/element) + FC dX; BN mode: no BN dx (nothing trainable before it)
    assert full.backward == 96 + 32 + 96
    assert bn.backward == 32 + 96
    assert full.bn_update == bn.bn_update == 4
    assert full.weight_update == 3 + 96 + 96  # bias + dW MACs + SGD on the digital FC weights
    assert bn.weight_update == 0
    assert full.total == 583 and bn.total == 292
    assert r.energy_saving_pct == pytest.approx(100 * (1 - 292 / 583))


def test_energy_sram_reads() -> None:
    r = report(only(sram_read_pj_per_byte=1.0))
    full, bn = r.energy("full"), r.energy("bn")
    assert full.forward == bn.forward == (16 + 32 + 32 + 32) + 99  # layer inputs + FC weights
    assert full.backward == (32 + 32 + 32 + 3) + 704 / 8  # output gradients + saved activations
    assert bn.backward == (32 + 32 + 3) + 320 / 8
    assert full.bn_update == bn.bn_update == 4 + 4  # γ/β and their gradients
    assert full.weight_update == 3 + 96 + 96  # bias, dW buffer, FC weights
    assert r.energy_per_epoch_uj("bn", 10) == pytest.approx(bn.total * 10 * 1e-6)


def test_functional_ops_and_reuse_are_counted() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(2)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.act(self.bn(self.conv(x)))
            return F.relu(self.act(y) + x)  # module reused, residual add, functional ReLU

    r = training_cost(Block(), (2, 3, 3))
    names = [(lc.name, lc.kind) for lc in r.layers]
    assert names == [
        ("conv", "conv"),
        ("bn", "bn"),
        ("act", "relu"),
        ("act#2", "relu"),
        ("add", "add"),
        ("relu", "relu"),
    ]
    add = r.layers[4]
    assert (add.in_numel, add.out_numel) == (36, 18)
    # functional ReLU: mask saved and output gradient stored in both modes
    relu_bn = r.layers[5].memory["bn"]
    assert relu_bn.saved_activations == 18 and relu_bn.activation_gradients == 18 * 8


def test_report_rendering_and_state() -> None:
    net = tiny_net().train()
    r = training_cost(net, (1, 4, 4))
    assert all(m.training for m in net.modules())  # training flags restored
    md = r.to_markdown()
    assert "| **training memory (kB)** | **0.3** | **0.1** | **64.0 %** |" in md
    s = r.summary()
    json.dumps(s)
    assert s["full"]["training_memory_bytes"] == 308.0
    assert s["params"] == 18 + 4 + 99 and s["macs"] == 288 + 96


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="xbar_rows"):
        CostConfig(xbar_rows=0)
    with pytest.raises(ValueError, match="update_scheme"):
        CostConfig(update_scheme="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="adc_pj"):
        EnergyConstants(adc_pj=-1.0)
    with pytest.raises(ValueError, match="input_shape"):
        training_cost(tiny_net(), (1, 0, 4))
    with pytest.raises(ValueError, match="mode"):
        report().memory("half")


def vgg_like() -> nn.Module:
    """A small VGG-style net where weights dominate training memory (like VGG16 on 32×32)."""
    cfg = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M"]
    layers: list[nn.Module] = []
    c = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            assert isinstance(v, int)
            layers += [nn.Conv2d(c, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
            c = v
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    return nn.Sequential(*layers)


def test_shape_of_p1_result_on_vgg_like_net() -> None:
    """Large memory saving, small energy saving (P1 §5) with the default assumptions."""
    r = training_cost(vgg_like(), (3, 32, 32))
    assert r.memory_saving_pct > 85
    assert 3 < r.energy_saving_pct < 30
    # the energy saving is the weight update: forward energy is identical in both modes
    assert r.energy("full").forward == r.energy("bn").forward
    assert r.energy("bn").weight_update == 0
    # crossbar tiles: conv 3 (27 × 64) → 1 tile per slice; conv 512←256 (2304 × 512) → 36 × 8 per slice
    tiles = [lc.tiles for lc in r.layers if lc.kind == "conv"]
    assert tiles[0] == 2 and tiles[-2] == 36 * 8 * 2
