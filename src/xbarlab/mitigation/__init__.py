"""Mitigation of crossbar non-idealities without re-programming the weights.

* BatchNorm methods (:mod:`xbarlab.mitigation.bn`): BN adaptation / noise-aware BN (P2 reading A, P1's
  baseline), online test-batch statistics (P2 reading B), BN γ/β fine-tuning (P1), BN state snapshots.
* On-chip training cost model (:mod:`xbarlab.mitigation.cost`): memory and energy of BN-only fine-tuning vs
  full retraining (P1 §5).
"""

from __future__ import annotations

from xbarlab.mitigation.bn import (
    BNAdaptResult,
    BNFinetuneResult,
    BNModuleState,
    adabs_momentum,
    adapt_bn,
    bn_modules,
    finetune_bn,
    online_bn,
    restore_bn_state,
    snapshot_bn_state,
)
from xbarlab.mitigation.cost import (
    CostConfig,
    EnergyBreakdown,
    EnergyConstants,
    LayerCost,
    MemoryBreakdown,
    TrainingCostReport,
    training_cost,
)

__all__ = [
    "BNAdaptResult",
    "BNFinetuneResult",
    "BNModuleState",
    "CostConfig",
    "EnergyBreakdown",
    "EnergyConstants",
    "LayerCost",
    "MemoryBreakdown",
    "TrainingCostReport",
    "adabs_momentum",
    "adapt_bn",
    "bn_modules",
    "finetune_bn",
    "online_bn",
    "restore_bn_state",
    "snapshot_bn_state",
    "training_cost",
]
