"""Digital error compensation after analog layers (CorrectNet's "error compensation", docs/papers.md §3.6).

A compensated layer computes ``y' = y + g(y)`` where ``y`` is the analog layer's output and ``g`` a small
digital, noise-free branch (it runs after the ADC, in the digital domain, and never sees device variation):

* convolutions: ``g = B ∘ ReLU ∘ A`` with A a 1×1 conv C → max(1, C/r) and B a 1×1 conv back to C (r = 4,
  docs/papers.md §3.6 default);
* linear layers: the same bottleneck with ``nn.Linear`` maps (a low-rank branch of rank max(1, C/r));
* optionally (``affine=True``, default) a per-channel affine term ``a ⊙ y + s`` (2·C parameters), the exact
  correction of a per-channel gain/offset error, which a rank-C/r branch cannot represent.

B, a and s start at zero, so an attached branch is exactly the identity until it is trained. Training
(:func:`train_compensation`) updates only the branch parameters; the analog weights (and BN statistics) stay
frozen and a fresh chip instance is programmed every batch (``xbarlab.program(chip, fresh_seed)``), so the
branch learns a correction that holds across chips, not a calibration of one chip.

Overhead (:func:`compensation_overhead`): branch parameters and multiply-accumulates per inference as % of the
base model's weight-layer parameters and MACs.

Modules: :mod:`~xbarlab.mitigation.compensation.branches` (the branch, attach/detach, state),
:mod:`~xbarlab.mitigation.compensation.counting` (parameter/MAC overhead),
:mod:`~xbarlab.mitigation.compensation.training` (chip pool, losses, :func:`train_compensation`).
"""

from __future__ import annotations

from xbarlab.mitigation.compensation.branches import (
    DEFAULT_REDUCTION,
    CompensatedLayer,
    CompensationBranch,
    CompensationConfig,
    attach_compensation,
    branch_for,
    compensated_layers,
    compensation_state,
    detach_compensation,
    layer_names,
    load_compensation_state,
)
from xbarlab.mitigation.compensation.counting import (
    OverheadReport,
    compensation_overhead,
    count_macs,
)
from xbarlab.mitigation.compensation.training import (
    LOSSES,
    ChipPool,
    CompensationTrainResult,
    FeatureMatchingLoss,
    NormalizedCrossEntropy,
    distillation_loss,
    train_compensation,
    training_chip_seed,
)

__all__ = [
    "DEFAULT_REDUCTION",
    "LOSSES",
    "ChipPool",
    "CompensatedLayer",
    "CompensationBranch",
    "CompensationConfig",
    "CompensationTrainResult",
    "FeatureMatchingLoss",
    "NormalizedCrossEntropy",
    "OverheadReport",
    "attach_compensation",
    "branch_for",
    "compensated_layers",
    "compensation_overhead",
    "compensation_state",
    "count_macs",
    "detach_compensation",
    "distillation_loss",
    "layer_names",
    "load_compensation_state",
    "train_compensation",
    "training_chip_seed",
]
