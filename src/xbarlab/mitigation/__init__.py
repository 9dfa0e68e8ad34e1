"""Mitigation of crossbar non-idealities without re-programming the weights.

* BatchNorm methods (:mod:`xbarlab.mitigation.bn`): BN adaptation / noise-aware BN (P2 reading A, P1's
  baseline), online test-batch statistics (P2 reading B), BN γ/β fine-tuning (P1), BN state snapshots.

The on-chip training cost model (P1 §5) is analysis, not mitigation: :mod:`xbarlab.analysis.cost`.
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

__all__ = [
    "BNAdaptResult",
    "BNFinetuneResult",
    "BNModuleState",
    "adabs_momentum",
    "adapt_bn",
    "bn_modules",
    "finetune_bn",
    "online_bn",
    "restore_bn_state",
    "snapshot_bn_state",
]
