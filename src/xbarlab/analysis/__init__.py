"""Analysis of a network on a chip (not mitigation): what running or training it there would cost.

* On-chip training cost model (:mod:`xbarlab.analysis.cost`; assumptions in :mod:`xbarlab.analysis.cost_config`,
  results in :mod:`xbarlab.analysis.cost_report`, graph walk in :mod:`xbarlab.analysis.cost_trace`): memory (bits)
  and energy (pJ) of BN-only fine-tuning vs full retraining (P1 §5).
"""

from __future__ import annotations

from xbarlab.analysis.cost import (
    MODES,
    CostConfig,
    EnergyBreakdown,
    EnergyConstants,
    LayerCost,
    MemoryBreakdown,
    TrainingCostReport,
    training_cost,
)

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
