"""Results of the on-chip training cost model (:mod:`xbarlab.analysis.cost`): memory (bits) and energy (pJ)
breakdowns per layer and in total, savings of BN-only fine-tuning, and their Markdown rendering."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from xbarlab.analysis.cost_config import MODES, CostConfig

__all__ = ["EnergyBreakdown", "LayerCost", "MemoryBreakdown", "TrainingCostReport"]


def _add_fieldwise(total: Any, part: Any) -> None:
    """Add every dataclass field of ``part`` to the same field of ``total`` (in place)."""
    for f in fields(total):
        setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))


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
        _add_fieldwise(self, other)
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
        _add_fieldwise(self, other)
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
