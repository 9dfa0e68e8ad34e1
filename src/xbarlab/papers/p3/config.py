"""The P3 configuration: :class:`P3Config` (every setting of one run), the P3 hardware and the stage names."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["P3_HARDWARE", "STAGES", "P3Config", "p3_hardware"]

P3_HARDWARE: dict[str, Any] = {
    "preset": "rram",
    "name": "p3-rram-lognormal",
    "weights": {"bits": 8, "bits_per_cell": 2, "noise_granularity": "slice"},
    "read_noise": {"kind": "none", "sigma": 0.0},
    "drift": {"kind": "none"},
    "programming": {"kind": "lognormal", "sigma": 0.0},
    "dac": {"bits": 8},
    "adc": {"bits": 8, "noise_lsb": 0.5},
}
"""P3 hardware (same as the shipped ``p3-correctnet`` sweep): RRAM preset (R_on 50 kΩ, ON/OFF 10, 64×64 arrays,
classifier digital), log-normal programming variation G·e^θ per device, 8-bit weights on 2-bit cells
(4 slices, every device perturbed independently), 8-bit DAC, 8-bit ADC per partial sum with 0.5 LSB noise."""


STAGES = ("models", "sweep", "placement", "quant", "perchip", "table")
"""Pipeline stages in run order (``models`` always runs: every later stage needs its models)."""


@dataclass(frozen=True)
class P3Config:
    """Settings of :func:`run_p3` (every field is recorded in ``config.json``)."""

    model: str = "lenet5-fmnist"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    out_dir: str = "runs/p3-lenet5-fmnist"
    hardware_overrides: dict[str, Any] = field(default_factory=dict)
    sigmas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    target_sigma: float | None = None
    chips: int = 5
    test_images: int = 10000
    sweep_images: int = 2000
    val_images: int = 2000
    calib_images: int = 512
    batch_size: int = 500
    # Lipschitz
    lipschitz_checkpoint: str | None = None
    lipschitz_kind: str = "parseval_neft"
    lipschitz_beta: float = 5e-4
    lipschitz_epochs: int = 5
    lipschitz_lr: float = 0.01
    # compensation
    comp_steps: int = 600
    comp_lr: float = 3e-3
    comp_batch_size: int = 128
    comp_reduction: int = 4
    comp_affine: bool = True
    comp_loss: str = "ce_normalized"
    comp_pool: int = 64
    adc_in_training: bool = False
    # placement
    budget_pct: float = 10.0
    penalty: float = 0.2
    cost_metric: str = "max"
    rl_episodes: int = 30
    random_samples: int = 5
    greedy_mode: str = "iterative"
    search_chips: int = 3
    # quantisation search
    quant_bits_per_cell: tuple[int, ...] = (1, 2, 4)
    quant_adc_bits: tuple[int, ...] = (4, 5, 6, 7, 8)
    quant_tolerance: float = 1.0
    quant_chips: int = 3
    quant_images: int = 1000
    quant_max_evaluations: int = 60
    adc_fom_fj: float = 5.0
    adc_scaling: str = "walden"
    # per-chip stage (an extension, not in P3): fine-tune the RL branches on each test chip; BN adaptation
    perchip_steps: int = 100
    perchip_images: int = 1000
    perchip_batch_size: int = 64
    perchip_lr: float = 3e-3
    bn_images: int = 2560
    # run
    seed: int = 0
    eval_seed: int = 10_000
    search_seed: int = 20_000
    threads: int = 1
    stages: tuple[str, ...] = ("models", "sweep", "placement", "quant", "perchip", "table")
    force: bool = False
    resume: str = "auto"
    device: str = "cpu"

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("sigmas", len(self.sigmas) > 0 and all(_finite(s, 0) for s in self.sigmas), "non-empty, every σ >= 0"),
            ("target_sigma", self.target_sigma is None or _finite(self.target_sigma, 0), "None or >= 0"),
            ("calib_images", self.calib_images >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lipschitz_beta", _finite(self.lipschitz_beta, 0), "finite, >= 0"),
            ("lipschitz_epochs", self.lipschitz_epochs >= 1, ">= 1"),
            ("lipschitz_lr", _finite(self.lipschitz_lr, 0, strict=True), "finite, > 0"),
            ("comp_lr", _finite(self.comp_lr, 0, strict=True), "finite, > 0"),
            ("comp_reduction", self.comp_reduction >= 1, ">= 1"),
            ("penalty", _finite(self.penalty, 0), "finite, >= 0"),
            (
                "quant_bits_per_cell",
                len(self.quant_bits_per_cell) > 0 and min(self.quant_bits_per_cell) >= 1,
                "non-empty, every value >= 1",
            ),
            (
                "quant_adc_bits",
                len(self.quant_adc_bits) > 0 and min(self.quant_adc_bits) >= 1,
                "non-empty, every value >= 1",
            ),
            ("quant_tolerance", _finite(self.quant_tolerance, 0), "finite, >= 0 (accuracy points)"),
            ("quant_max_evaluations", self.quant_max_evaluations >= 1, ">= 1"),
            ("adc_fom_fj", _finite(self.adc_fom_fj, 0, strict=True), "finite, > 0 (fJ per conversion step)"),
            ("seed", self.seed >= 0, ">= 0"),
            ("eval_seed", self.eval_seed >= 0, ">= 0"),
            ("search_seed", self.search_seed >= 0, ">= 0"),
            (
                "resume",
                self.resume in ("auto", "strict"),
                "'auto' (recompute stages whose settings changed) or 'strict' (refuse)",
            ),
            ("device", _device_ok(self.device), _DEVICES_ALLOWED),
            ("chips", self.chips >= 1, ">= 1"),
            ("test_images", self.test_images >= 1, ">= 1"),
            ("sweep_images", self.sweep_images >= 1, ">= 1"),
            ("val_images", self.val_images >= 1, ">= 1"),
            ("comp_steps", self.comp_steps >= 1, ">= 1"),
            ("budget_pct", _finite(self.budget_pct, 0), "finite, >= 0 (%)"),
            ("cost_metric", self.cost_metric in ("params", "macs", "max"), "'params', 'macs' or 'max'"),
            ("rl_episodes", self.rl_episodes >= 1, ">= 1"),
            ("greedy_mode", self.greedy_mode in ("iterative", "ranked"), "'iterative' or 'ranked'"),
            ("random_samples", self.random_samples >= 1, ">= 1"),
            ("comp_pool", self.comp_pool >= 0, ">= 0 (0: a fresh chip every batch)"),
            ("comp_batch_size", self.comp_batch_size >= 1, ">= 1"),
            ("quant_images", self.quant_images >= 1, ">= 1"),
            ("perchip_steps", self.perchip_steps >= 1, ">= 1"),
            ("perchip_images", self.perchip_images >= 1, ">= 1"),
            ("perchip_batch_size", self.perchip_batch_size >= 1, ">= 1"),
            ("perchip_lr", self.perchip_lr > 0 and math.isfinite(self.perchip_lr), "finite, > 0"),
            ("bn_images", self.bn_images >= 1, ">= 1"),
            ("search_chips", self.search_chips >= 1, ">= 1"),
            ("quant_chips", self.quant_chips >= 1, ">= 1"),
            ("threads", self.threads >= 1, ">= 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{name}: invalid value {getattr(self, name)!r}; allowed: {allowed}")
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"stages: invalid value {sorted(unknown)}; allowed: {', '.join(STAGES)}")
        from xbarlab.mitigation.compensation import LOSSES

        if self.comp_loss not in LOSSES:
            raise ValueError(f"comp_loss: invalid value {self.comp_loss!r}; allowed: {', '.join(LOSSES)}")

    @property
    def sigma_max(self) -> float:
        """The variation level of the placement and quantisation stages and of the table: ``target_sigma``,
        or the highest σ of the sweep."""
        return max(self.sigmas) if self.target_sigma is None else float(self.target_sigma)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_DEVICES_ALLOWED = (
    "'cpu', or 'cuda' / 'cuda:N' when torch.cuda.is_available() (the meta device holds no values to report)"
)


def _device_ok(device: str) -> bool:
    """``device`` names the CPU, or a CUDA device that exists here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        return False
    if dev.type == "cpu":
        return True
    if dev.type != "cuda" or not torch.cuda.is_available():
        return False
    return dev.index is None or dev.index < torch.cuda.device_count()


def _device(cfg: P3Config) -> torch.device:
    """The torch device every stage computes on (models, chips, chip pools, batches)."""
    return torch.device(cfg.device)


def _finite(value: float, lo: float, *, strict: bool = False) -> bool:
    """``value`` is a finite number >= ``lo`` (> ``lo`` with ``strict``)."""
    return math.isfinite(value) and (value > lo if strict else value >= lo)


def p3_hardware(sigma: float, overrides: dict[str, Any] | None = None) -> Any:
    """The P3 hardware (:data:`P3_HARDWARE`) at log-normal σ, with dotted-path ``overrides`` applied last."""
    from xbarlab.hardware import HardwareConfig

    hw = HardwareConfig.from_dict(P3_HARDWARE).override({"programming.sigma": float(sigma)})
    if overrides:
        hw = hw.override(overrides)
    return hw
