"""Seeded, resumable training: SGD + momentum, weight decay, cosine learning rate, label smoothing.

Reproducibility: at the start of epoch ``e`` the global torch RNG (augmentation, dropout) and the loader's
shuffling generator are re-seeded from ``(seed, e)``; the same seed therefore gives the same batches and
augmentations in every epoch, whether or not the run was interrupted in between.

Learning rate: cosine annealing **per iteration**, ``lr(s) = lr · ½(1 + cos(π s / S))`` for global step
``s`` of ``S = epochs × batches_per_epoch`` (after an optional linear warm-up of ``warmup_epochs``). Its only
state is the global step, stored with the other state.

Resume: after every epoch, ``<out_dir>/state.{safetensors,json}`` holds the model, the optimizer state
(momentum buffers as tensors in safetensors, scalars in JSON), the epoch/step counters, RNG states and the
history, written atomically. ``train(..., resume=True)`` continues from it; the result is bit-identical to
an uninterrupted run with the same seed (same device and thread count). At the end,
``<out_dir>/model.{safetensors,json}`` is the final checkpoint (:func:`xbarlab.checkpoint.save_checkpoint`).

Extension points (used by later features such as noise-injection or Lipschitz-regularised training):

* ``forward_fn(model, inputs) -> logits`` replaces ``model(inputs)`` in training steps, e.g. a forward with
  perturbed weights through :func:`torch.func.functional_call` (gradients still reach the clean weights);
* ``regularizer(model) -> scalar tensor`` is added to the loss;
* ``callbacks``: :class:`TrainCallback` objects called after every optimizer step (e.g. weight clipping or
  projection) and after every epoch (logging, early stopping by raising :class:`StopTraining`).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from xbarlab.checkpoint import (
    CheckpointError,
    checkpoint_paths,
    load_model_state,
    load_state,
    save_checkpoint,
    save_state,
)
from xbarlab.data.base import make_loader

__all__ = [
    "EpochStats",
    "StopTraining",
    "TrainCallback",
    "TrainConfig",
    "TrainResult",
    "cosine_lr",
    "epoch_seed",
    "evaluate",
    "resolve_device",
    "train",
]

STATE_NAME = "state"
PROGRESS_READS = 20
"""Times per epoch the progress bar's running loss/accuracy is refreshed (each refresh is one host read of the
device-side sums; without a progress bar the sums are read once per epoch)."""
MODEL_NAME = "model"


class StopTraining(Exception):
    """Raise from a callback to end training after this epoch's checkpoint (the run stays resumable)."""


# "sgd": SGD + momentum (+ Nesterov); "adamw": AdamW (betas 0.9/0.999), weight decay on >= 2-D tensors only.
OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (all stored in the checkpoints)."""

    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    seed: int = 0
    eval_batch_size: int = 512
    num_workers: int = 0
    channels_last: bool = False
    optimizer: str = "sgd"

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("epochs", isinstance(self.epochs, int) and self.epochs >= 1, ">= 1"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, f"in [0, epochs={self.epochs}]"),
            ("eval_batch_size", self.eval_batch_size >= 1, ">= 1"),
            ("num_workers", self.num_workers >= 0, ">= 0"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {allowed}, got {getattr(self, name)!r}")

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of all fields."""
        return asdict(self)


@dataclass(frozen=True)
class EpochStats:
    """Metrics of one epoch (``test_*`` are ``None`` without a test set)."""

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float | None
    test_acc: float | None
    lr: float
    seconds: float
    regularizer: float | None = None


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: nn.Module
    history: list[EpochStats]
    test_acc: float | None
    wall_time_s: float
    out_dir: Path | None
    checkpoint: Path | None
    resumed_from_epoch: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


class TrainCallback:
    """Base class of training callbacks; override the hooks you need."""

    def on_step_end(self, model: nn.Module, step: int) -> None:
        """After each optimizer step (``step`` = global step count, starting at 1)."""

    def on_epoch_end(self, model: nn.Module, stats: EpochStats) -> None:
        """After each epoch, once its state checkpoint is written."""


class _DeviceSums:
    """Running sums of one training epoch kept on the training device (no host read per step).

    Loss and regulariser sums are float64 (the same products and order as host float sums, so the epoch stats are
    bit-identical); the first step whose total loss is not finite is recorded on the device and refused at the
    next read (a progress text or the end of the epoch) with :class:`FloatingPointError` naming that step.
    """

    def __init__(self, device: torch.device) -> None:
        f64 = torch.float64
        self.loss = torch.zeros((), dtype=f64, device=device)
        self.reg = torch.zeros((), dtype=f64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.bad_step = torch.full((), -1.0, dtype=f64, device=device)  # first non-finite step (0-based), -1: none
        self.bad_value = torch.zeros((), dtype=f64, device=device)
        self.bad_lr = torch.zeros((), dtype=f64, device=device)

    def add_reg(self, reg: Tensor, n: int) -> None:
        self.reg += reg.detach().double() * n

    def watch(self, total: Tensor, step: int, lr: float) -> None:
        first = ~torch.isfinite(total.detach()) & (self.bad_step < 0)
        self.bad_step = torch.where(first, float(step), self.bad_step)
        self.bad_value = torch.where(first, total.detach().double(), self.bad_value)
        self.bad_lr = torch.where(first, lr, self.bad_lr)

    def add(self, loss: Tensor, logits: Tensor, targets: Tensor, n: int) -> None:
        self.loss += loss.detach().double() * n
        self.correct += (logits.detach().argmax(1) == targets).sum()

    def read(self, epoch: int) -> tuple[float, float, int]:
        """(loss sum, regulariser sum, correct) in one host read; refuses a recorded non-finite step."""
        loss, reg, correct, bad, value, lr = torch.stack(
            [self.loss, self.reg, self.correct.double(), self.bad_step, self.bad_value, self.bad_lr]
        ).tolist()
        if bad >= 0:
            raise FloatingPointError(
                f"non-finite loss {value} at epoch {epoch + 1}, step {int(bad) + 1} (lr={lr:.4g}); "
                "lower the learning rate"
            )
        return loss, reg, int(correct)

    def text(self, epoch: int, count: int) -> str:
        loss, _, correct = self.read(epoch)
        return f"loss {loss / count:.4f} acc {correct / count:.4f}"


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch`` (0-based) derived from the run seed."""
    return (int(seed) * 1_000_003 + 7919 * (epoch + 1)) % (2**63 - 1)


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0) -> float:
    """Linear warm-up over ``warmup_steps`` then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for ``device``; a clear error when CUDA is requested but not available."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use device='cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {str(device)!r}")
    return dev


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset[Any] | DataLoader[Any],
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    channels_last: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy (fraction in [0, 1]) of ``model`` in eval mode."""
    dev = torch.device(device)
    loader = data if isinstance(data, DataLoader) else make_loader(data, batch_size, shuffle=False, device=dev)
    was_training = model.training
    model.eval()
    # summed on the device (the loss in float64, as the host sums were) and read once at the end
    total_loss = torch.zeros((), dtype=torch.float64, device=dev)
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    count = 0
    try:
        for inputs, targets in loader:
            inputs, targets = inputs.to(dev, non_blocking=True), targets.to(dev, non_blocking=True)
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            logits = model(inputs)
            total_loss += F.cross_entropy(logits, targets, reduction="sum").double()
            correct += (logits.argmax(1) == targets).sum()
            count += int(targets.numel())  # a shape, not a device read
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate: the data set is empty")
    return float(total_loss) / count, int(correct) / count


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


_RESUME_MUST_MATCH = tuple(f.name for f in fields(TrainConfig) if f.name not in ("epochs", "num_workers"))


def _normalised_key(key: dict[str, Any] | None) -> dict[str, Any] | None:
    """``key`` as it reads back from JSON (tuples become lists), so that saved and new keys compare equal."""
    return None if key is None else json.loads(json.dumps(key, sort_keys=True))


def _check_resume_key(saved: Any, key: dict[str, Any] | None, path: Path) -> None:
    now = _normalised_key(key)
    if saved != now:
        raise CheckpointError(
            f"cannot resume from {path}: the run was started with {saved!r} and is now {now!r} "
            "(use the same training options, or a new output directory / --no-resume)"
        )


def _check_resume_config(saved: dict[str, Any], config: TrainConfig, path: Path) -> None:
    for name in _RESUME_MUST_MATCH:
        if name in saved and saved[name] != getattr(config, name):
            raise CheckpointError(
                f"cannot resume from {path}: {name} was {saved[name]!r} but is now {getattr(config, name)!r} "
                "(use the same hyper-parameters, or a new output directory / --no-resume)"
            )


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (default) or AdamW; AdamW leaves biases, norms and embeddings (tensors of < 2 dims) undecayed."""
    if config.optimizer == "adamw":
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )


def train(
    model: nn.Module,
    train_set: Dataset[Any],
    test_set: Dataset[Any] | None,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume: bool = True,
    device: str | torch.device = "cpu",
    regularizer: Callable[[nn.Module], Tensor] | None = None,
    forward_fn: Callable[[nn.Module, Tensor], Tensor] | None = None,
    callbacks: Sequence[TrainCallback] = (),
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
    console: Any = None,
    resume_key: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place with SGD + momentum and a per-iteration cosine learning rate.

    Args:
        model: the network (built with :func:`xbarlab.models.build_model` for the final checkpoint to record
            its architecture; otherwise pass ``metadata={"model": ..., "model_kwargs": ...}``).
        train_set: training data (yields ``(inputs, int label)``; augmentation belongs to the data set).
        test_set: evaluated after every epoch (``None`` to skip).
        config: hyper-parameters, see :class:`TrainConfig`.
        out_dir: run directory for the per-epoch state and the final ``model`` checkpoint (``None``: no files,
            not resumable).
        resume: continue from ``<out_dir>/state`` when it exists (else start fresh, overwriting it).
        device: ``"cpu"`` or ``"cuda"``.
        regularizer: optional ``f(model) -> scalar`` added to the loss of every step.
        forward_fn: optional ``f(model, inputs) -> logits`` used instead of ``model(inputs)`` for training.
        callbacks: :class:`TrainCallback` instances.
        progress: show a rich progress bar (per-epoch summary lines are printed either way).
        metadata: extra JSON metadata for the final checkpoint (model name, data set, command...).
        console: a ``rich.console.Console`` for output (default: a new one; ``progress=False`` and no
            console → silent).
        resume_key: JSON data describing what ``config`` does not cover but the run depends on (regulariser,
            noise injection, initial weights...). Stored with the state; resuming with a different key fails.

    Returns:
        :class:`TrainResult` with the history and the final test accuracy.
    """
    from rich.console import Console

    dev = resolve_device(device)
    if console is None:
        console = Console(stderr=True, quiet=not progress)
    memory_format = torch.channels_last if config.channels_last else torch.preserve_format
    model.to(dev)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    run_dir = Path(out_dir) if out_dir is not None else None
    state_path = run_dir / STATE_NAME if run_dir is not None else None

    optimizer = _make_optimizer(model, config)
    generator = torch.Generator()
    loader = make_loader(
        train_set,
        config.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=config.num_workers,
        persistent_workers=False,
        device=dev,  # pinned host memory when dev is CUDA, so the non_blocking copies below overlap
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError("train: the training set is empty")
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)

    start_epoch, step, history, wall_before = 0, 0, [], 0.0
    resumed_from = 0
    if state_path is not None and resume and checkpoint_paths(state_path)[1].is_file():
        state = load_state(state_path)
        _check_resume_config(state.get("config", {}), config, checkpoint_paths(state_path)[1])
        _check_resume_key(state.get("resume_key"), resume_key, checkpoint_paths(state_path)[1])
        load_model_state(model, state["model"], f"resume state {state_path}")
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history = [EpochStats(**h) for h in state.get("history", [])]
        wall_before = float(state.get("wall_time_s", 0.0))
        _set_rng_state(state["rng"], dev)
        resumed_from = start_epoch
        if int(state.get("steps_per_epoch", steps_per_epoch)) != steps_per_epoch:
            raise CheckpointError(
                f"cannot resume from {state_path}: {state['steps_per_epoch']} batches per epoch then, "
                f"{steps_per_epoch} now (different training set or batch size)"
            )
        console.print(f"[bold]resuming[/] from {state_path} after epoch {start_epoch}/{config.epochs}")

    t_start = time.perf_counter()
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def run_epoch(epoch: int, advance: Callable[[Callable[[], str]], None]) -> EpochStats:
        nonlocal step
        t0 = time.perf_counter()
        es = epoch_seed(config.seed, epoch)
        torch.manual_seed(es)
        generator.manual_seed(es + 1)
        model.train()
        # running sums stay on the device (float64 like the host sums were) and are read only where a line is
        # printed (the progress bar every PROGRESS_READS-th of an epoch, the epoch summary), never every step
        acc = _DeviceSums(dev)
        count = 0
        lr = config.lr
        for inputs, targets in loader:
            lr = cosine_lr(step, total_steps, config.lr, warmup_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            inputs = inputs.to(dev, memory_format=memory_format, non_blocking=True)
            targets = targets.to(dev, non_blocking=True)
            logits = forward_fn(model, inputs) if forward_fn is not None else model(inputs)
            loss = criterion(logits, targets)
            total = loss
            n = targets.numel()
            if regularizer is not None:
                reg = regularizer(model)
                total = loss + reg
                acc.add_reg(reg, n)
            acc.watch(total, step, lr)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            step += 1
            for cb in callbacks:
                cb.on_step_end(model, step)
            acc.add(loss, logits, targets, n)
            count += n
            advance(functools.partial(acc.text, epoch, count))
        test_loss = test_acc = None
        if test_set is not None:
            test_loss, test_acc = evaluate(
                model, test_set, dev, config.eval_batch_size, channels_last=config.channels_last
            )
        loss_sum, reg_sum, correct = acc.read(epoch)
        return EpochStats(
            epoch=epoch + 1,
            train_loss=loss_sum / count,
            train_acc=correct / count,
            test_loss=test_loss,
            test_acc=test_acc,
            lr=lr,
            seconds=time.perf_counter() - t0,
            regularizer=reg_sum / count if regularizer is not None else None,
        )

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
    )
    stopped = False
    # Without a terminal (e.g. nohup ... > log) the bar is invisible: print a line every ~10 % of an epoch.
    log_every = 0 if (console.is_terminal or not progress) else max(1, steps_per_epoch // 10)
    bar_every = max(1, steps_per_epoch // PROGRESS_READS)
    with Progress(*columns, console=console, disable=not progress, transient=True) as bar:
        for epoch in range(start_epoch, config.epochs):
            task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=steps_per_epoch, stats="")

            done_steps = [0]

            def advance(
                text: Callable[[], str], task: Any = task, epoch: int = epoch, done_steps: list[int] = done_steps
            ) -> None:
                done_steps[0] += 1
                done = done_steps[0]
                shown = None  # the running sums are read only when a text is shown (a host read)
                if progress and (done % bar_every == 0 or done == steps_per_epoch):
                    shown = text()
                if log_every and done % log_every == 0 and done < steps_per_epoch:
                    shown = shown or text()
                    console.print(f"  epoch {epoch + 1}: {done}/{steps_per_epoch} steps, {shown}")
                if shown is None:
                    bar.update(task, advance=1)
                else:
                    bar.update(task, advance=1, stats=shown)

            stats = run_epoch(epoch, advance)
            bar.remove_task(task)
            history.append(stats)
            test_txt = f" | test loss {stats.test_loss:.4f} acc {stats.test_acc:.4f}" if stats.test_acc else ""
            console.print(
                f"epoch {stats.epoch:3d}/{config.epochs} | train loss {stats.train_loss:.4f} "
                f"acc {stats.train_acc:.4f}{test_txt} | lr {stats.lr:.4g} | {stats.seconds:.1f}s"
            )
            if state_path is not None:
                save_state(
                    state_path,
                    {
                        "config": config.as_dict(),
                        "epoch": epoch + 1,
                        "step": step,
                        "steps_per_epoch": steps_per_epoch,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "rng": _rng_state(dev),
                        "history": [asdict(h) for h in history],
                        "wall_time_s": wall_before + time.perf_counter() - t_start,
                        "resume_key": _normalised_key(resume_key),
                    },
                )
            try:
                for cb in callbacks:
                    cb.on_epoch_end(model, stats)
            except StopTraining:
                stopped = True
                break

    wall = wall_before + time.perf_counter() - t_start
    final_acc = history[-1].test_acc if history else None
    meta = {
        **(metadata or {}),
        "epochs": len(history),
        "test_accuracy": final_acc,
        "test_loss": history[-1].test_loss if history else None,
        "seed": config.seed,
        "hyperparameters": config.as_dict(),
        "wall_time_s": round(wall, 2),
        "device": str(dev),
        "torch_threads": torch.get_num_threads(),
        "history": [asdict(h) for h in history],
    }
    ckpt = None
    if run_dir is not None and not stopped and history:
        ckpt = save_checkpoint(model, run_dir / MODEL_NAME, meta)
    model.eval()
    return TrainResult(
        model=model,
        history=history,
        test_acc=final_acc,
        wall_time_s=wall,
        out_dir=run_dir,
        checkpoint=ckpt,
        resumed_from_epoch=resumed_from,
        metadata=meta,
    )
