"""BatchNorm-based mitigation of crossbar non-idealities (P1 and P2 of ``docs/papers.md``).

Every function here works on an arbitrary :class:`torch.nn.Module`. The simulated chip is just a model whose
analog layers compute with non-ideal weights, so the mitigation needs no knowledge of the noise model:

* :func:`adapt_bn` -- BN adaptation / noise-aware ("calibrated") BN, P2 reading A and P1's baseline
  (P1 §1.7 A): re-estimate the BN running statistics on the noisy chip from a few unlabelled batches; γ/β
  and all weights stay frozen.
* :func:`online_bn` -- P2 reading B: normalise every test batch with its own statistics, leaving the running
  statistics untouched (context manager).
* :func:`finetune_bn` -- P1's BN fine-tuning (P1 §1.7 B): train only γ (weight) and β (bias) of every BN layer
  with cross-entropy on the noisy chip; the running statistics are re-estimated implicitly.
* :func:`snapshot_bn_state` / :func:`restore_bn_state` -- save and restore every BN module's state, so that a
  Monte-Carlo evaluation can start each chip instance from the original pre-trained BN.

All functions restore the modules' ``training`` flags, BN ``momentum`` / ``track_running_stats`` and the
parameters' ``requires_grad`` flags when they return, also when an exception is raised mid-way.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from xbarlab.progress import log

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

_log = logging.getLogger(__name__)

#: Fraction of the old statistics left after n AdaBS calibration batches (Joshi et al. 2020, docs/papers.md §4.2).
ADABS_RESIDUAL = 0.015


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------


def bn_modules(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """All BatchNorm modules of ``model`` (BatchNorm1d/2d/3d, SyncBatchNorm, lazy variants) with their names.

    Returns ``[(qualified_name, module), ...]`` in registration order (the root module has the name ``""``).
    """
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _BatchNorm)]


def adabs_momentum(n: int) -> float:
    """AdaBS momentum for ``n`` calibration batches, in PyTorch's convention (docs/papers.md §4.2).

    Joshi et al. (2020) update ``µ ← p·µ + (1 − p)·µ_B`` with ``p = 0.015^(1/n)``, so that the old statistics
    keep a weight of 1.5 % after the n batches. PyTorch's ``momentum`` is ``1 − p``; e.g. n = 13 → 0.276.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"adabs_momentum: n (number of calibration batches) must be an int >= 1, got {n!r}")
    return 1.0 - ADABS_RESIDUAL ** (1.0 / n)


@dataclass
class BNModuleState:
    """Snapshot of one BN module: running statistics, affine parameters and hyper-parameters."""

    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None
    num_batches_tracked: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    momentum: float | None
    track_running_stats: bool
    eps: float


def _clone(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().clone()


def snapshot_bn_state(model: nn.Module) -> dict[str, BNModuleState]:
    """Copy the state of every BN module of ``model`` (keyed by module name).

    The copy holds the running mean/variance, ``num_batches_tracked``, γ (``weight``), β (``bias``),
    ``momentum``, ``track_running_stats`` and ``eps``. Use :func:`restore_bn_state` to put it back, e.g.
    before each Monte-Carlo chip instance.
    """
    snap: dict[str, BNModuleState] = {}
    for name, bn in bn_modules(model):
        snap[name] = BNModuleState(
            running_mean=_clone(bn.running_mean),
            running_var=_clone(bn.running_var),
            num_batches_tracked=_clone(bn.num_batches_tracked),
            weight=_clone(bn.weight),
            bias=_clone(bn.bias),
            momentum=bn.momentum,
            track_running_stats=bn.track_running_stats,
            eps=bn.eps,
        )
    return snap


def _copy_into(dst: torch.Tensor | None, src: torch.Tensor | None, what: str) -> None:
    if dst is None and src is None:
        return
    if dst is None or src is None:
        raise ValueError(
            f"restore_bn_state: {what} is {'absent' if dst is None else 'present'} in the model "
            f"but {'present' if src is not None else 'absent'} in the snapshot"
        )
    if dst.shape != src.shape:
        raise ValueError(
            f"restore_bn_state: {what} has shape {tuple(dst.shape)} in the model but {tuple(src.shape)} in the snapshot"
        )
    dst.copy_(src)


def restore_bn_state(model: nn.Module, snapshot: dict[str, BNModuleState]) -> None:
    """Restore BN state taken by :func:`snapshot_bn_state`, in place (parameter objects are kept).

    Raises ``ValueError`` when the model's BN modules differ from the snapshot's (names or shapes).
    """
    modules = dict(bn_modules(model))
    if set(modules) != set(snapshot):
        missing = sorted(set(snapshot) - set(modules))
        extra = sorted(set(modules) - set(snapshot))
        raise ValueError(
            f"restore_bn_state: BN modules differ from the snapshot (missing in model: {missing}, "
            f"not in snapshot: {extra})"
        )
    with torch.no_grad():
        for name, st in snapshot.items():
            bn = modules[name]
            _copy_into(bn.running_mean, st.running_mean, f"{name!r}.running_mean")
            _copy_into(bn.running_var, st.running_var, f"{name!r}.running_var")
            _copy_into(bn.num_batches_tracked, st.num_batches_tracked, f"{name!r}.num_batches_tracked")
            _copy_into(bn.weight, st.weight, f"{name!r}.weight")
            _copy_into(bn.bias, st.bias, f"{name!r}.bias")
            bn.momentum = st.momentum
            bn.track_running_stats = st.track_running_stats
            bn.eps = st.eps


@contextlib.contextmanager
def _preserve_modes(model: nn.Module) -> Iterator[None]:
    """Restore all ``training`` flags and every BN's ``momentum``/``track_running_stats`` on exit."""
    training = [(m, m.training) for m in model.modules()]
    bn_hparams = [(bn, bn.momentum, bn.track_running_stats) for _, bn in bn_modules(model)]
    try:
        yield
    finally:
        for m, flag in training:
            m.training = flag
        for bn, mom, trs in bn_hparams:
            bn.momentum = mom
            bn.track_running_stats = trs


@contextlib.contextmanager
def _preserve_requires_grad(model: nn.Module) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _bn_only_train_mode(model: nn.Module) -> None:
    """Everything in eval mode (dropout off, analog layers in inference mode), only BN in train mode."""
    model.eval()
    for _, bn in bn_modules(model):
        bn.train()


def _infer_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _split_batch(batch: Any, *, need_labels: bool, fn: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accept ``x``, ``(x, y)``, ``[x, y, ...]`` or ``{"x": .., "y": ..}``-style dict batches."""
    x: Any
    y: Any = None
    if isinstance(batch, torch.Tensor):
        x = batch
    elif isinstance(batch, (tuple, list)) and len(batch) >= 1:
        x = batch[0]
        y = batch[1] if len(batch) >= 2 else None
    elif isinstance(batch, dict):
        x = next((batch[k] for k in ("x", "input", "inputs", "image", "images") if k in batch), None)
        y = next((batch[k] for k in ("y", "label", "labels", "target", "targets") if k in batch), None)
    else:
        raise TypeError(f"{fn}: the loader must yield tensors x, (x, y) tuples or dicts; got {type(batch).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{fn}: batch input x must be a torch.Tensor, got {type(x).__name__}")
    if need_labels and not isinstance(y, torch.Tensor):
        raise TypeError(
            f"{fn}: the loader must yield labelled batches (x, y) with a tensor y of class indices; "
            f"got labels of type {type(y).__name__}"
        )
    return x, y


def _check_positive_int(value: Any, name: str, fn: str, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: {name} must be an int >= 1{' or None' if allow_none else ''}, got {value!r}")


# ----------------------------------------------------------------------------------------------------
# BN adaptation (P2 reading A, P1 baseline)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BNAdaptResult:
    """Outcome of :func:`adapt_bn`.

    Attributes:
        num_batches: calibration batches actually forwarded (fewer than requested if the loader ran out).
        num_images: calibration samples forwarded (sum of the batch sizes).
        wall_time_s: wall-clock time of the calibration, in seconds.
        num_bn_modules: BN modules whose running statistics were re-estimated.
        num_bn_skipped: BN modules without running statistics (``track_running_stats=False`` at construction);
            they always normalise with batch statistics, so there is nothing to adapt.
        momentum: the momentum used (``None`` = exact cumulative average).
        reset: whether the running statistics were reset before calibration.
    """

    num_batches: int
    num_images: int
    wall_time_s: float
    num_bn_modules: int
    num_bn_skipped: int
    momentum: float | None
    reset: bool


def _cumulative_momentum_hooks(bns: list[nn.modules.batchnorm._BatchNorm], *, counted: bool) -> list[Any]:
    """Pre-forward hooks giving each BN ``momentum = 1 / k`` at its k-th call: torch's cumulative average.

    Torch computes that factor as ``1 / float(num_batches_tracked)``, a host read on every training forward (a
    stalled stream on a GPU; refused on meta). The call count is kept here in Python per module instead (exact for
    modules called several times per forward or skipped); the value is the same float, so the statistics are
    bit-identical. ``counted=True`` (no reset) starts from the tracked counts, read once for all modules.
    """
    tracked = [bn.num_batches_tracked for bn in bns if bn.num_batches_tracked is not None]
    if len(tracked) != len(bns):
        return []  # a module without a count: leave torch's own rule in place
    start = torch.stack([t.reshape(()) for t in tracked]).tolist() if counted and bns else [0] * len(bns)
    counts = [int(c) for c in start]
    hooks: list[Any] = []
    for k, bn in enumerate(bns):

        def hook(_mod: nn.Module, _args: Any, k: int = k, bn: nn.modules.batchnorm._BatchNorm = bn) -> None:
            counts[k] += 1
            bn.momentum = 1.0 / float(counts[k])

        def unset(_mod: nn.Module, _args: Any, _out: Any, bn: nn.modules.batchnorm._BatchNorm = bn) -> None:
            bn.momentum = None  # between calls the module shows the cumulative-average setting, as before

        hooks += [bn.register_forward_pre_hook(hook), bn.register_forward_hook(unset)]
    return hooks


def adapt_bn(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    num_batches: int = 20,
    momentum: float | None = None,
    reset: bool | None = None,
    device: torch.device | str | None = None,
) -> BNAdaptResult:
    """Re-estimate every BN layer's running statistics on the (noisy) model; P2 reading A / P1 §1.7 A.

    Procedure (docs/papers.md §1.10 and §2.5 defaults): reset the running statistics, set ``momentum=None`` (exact
    cumulative average over the calibration batches), put only the BN modules in train mode (dropout and every
    other module, e.g. analog layers, in eval mode) and forward ``num_batches`` batches from ``loader`` under
    ``torch.no_grad()``. Labels are not used. γ/β and all weights are never changed.

    Args:
        model: any module; modified in place (BN running statistics only).
        loader: iterable of ``x``, ``(x, y)`` or dict batches (only ``x`` is used).
        num_batches: maximum number of calibration batches (default 20; P1/P2 use 20 × 128 images).
        momentum: ``None`` for the exact cumulative average (default), or a PyTorch-convention momentum in
            (0, 1], e.g. :func:`adabs_momentum(num_batches) <adabs_momentum>` for AdaBS (Joshi et al. 2020).
        reset: reset the running statistics first. ``None`` (default) resets for the cumulative average and
            keeps the pre-trained statistics as the starting point for an exponential momentum, as AdaBS does.
        device: where to send the inputs; default: the device of the model's first parameter/buffer.

    Returns:
        A :class:`BNAdaptResult` (batches and images used, wall time in s).

    On return -- also on an exception -- every module's ``training`` flag and every BN's ``momentum`` are
    restored. On an exception the BN running statistics are restored too, leaving the model as it was.
    """
    fn = "adapt_bn"
    _check_positive_int(num_batches, "num_batches", fn)
    if momentum is not None and not (isinstance(momentum, (int, float)) and 0.0 < float(momentum) <= 1.0):
        raise ValueError(f"{fn}: momentum must be None (cumulative average) or a float in (0, 1], got {momentum!r}")
    do_reset = (momentum is None) if reset is None else bool(reset)
    dev = _infer_device(model, device)
    bns = bn_modules(model)
    active = [bn for _, bn in bns if bn.track_running_stats and bn.running_mean is not None]
    skipped = len(bns) - len(active)
    snapshot = snapshot_bn_state(model)
    t0 = time.perf_counter()
    n_batches = 0
    n_images = 0
    hooks: list[Any] = []
    try:
        with _preserve_modes(model), torch.no_grad():
            _bn_only_train_mode(model)
            for bn in active:
                if do_reset:
                    bn.reset_running_stats()
                bn.momentum = None if momentum is None else float(momentum)
            if momentum is None:  # the cumulative average without torch's per-batch float(num_batches_tracked)
                hooks = _cumulative_momentum_hooks(active, counted=not do_reset)
            for batch in loader:
                if n_batches >= num_batches:
                    break
                x, _ = _split_batch(batch, need_labels=False, fn=fn)
                model(x.to(dev, non_blocking=True))
                n_batches += 1
                n_images += int(x.shape[0])
    except BaseException:
        restore_bn_state(model, snapshot)
        raise
    finally:
        for hook in hooks:
            hook.remove()
    if n_batches == 0:
        restore_bn_state(model, snapshot)
        raise ValueError(f"{fn}: the loader yielded no batches; the BN statistics were left unchanged")
    wall = time.perf_counter() - t0
    _log.debug("adapt_bn: %d batches, %d images, %.3f s", n_batches, n_images, wall)
    return BNAdaptResult(
        num_batches=n_batches,
        num_images=n_images,
        wall_time_s=wall,
        num_bn_modules=len(active),
        num_bn_skipped=skipped,
        momentum=None if momentum is None else float(momentum),
        reset=do_reset,
    )


# ----------------------------------------------------------------------------------------------------
# Online test-batch statistics (P2 reading B)
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def online_bn(model: nn.Module) -> Iterator[nn.Module]:
    """Context manager: every BN normalises with the current batch's own statistics (P2 reading B).

    Inside the block every module is in eval mode except the BN modules, which are in train mode with
    ``track_running_stats=False`` and their running mean/variance buffers detached (set to ``None``, restored on
    exit). With that combination PyTorch normalises with the batch statistics *whatever the training flag*
    (an evaluation loop that calls ``model.eval()`` inside the block, such as
    :func:`xbarlab.evaluation.accuracy`, still gets online BN) and passes no running buffers to
    ``F.batch_norm``, so the running mean/variance and ``num_batches_tracked`` are guaranteed to stay
    unchanged (a train-mode BN with ``momentum=0.0`` would still increment ``num_batches_tracked`` and turns
    NaN batch statistics into NaN running statistics, because 0·NaN = NaN). The result depends on the test
    batch size.

    On exit -- also on an exception -- all ``training`` flags and BN ``track_running_stats``/``momentum``
    values are restored. Use it around the evaluation, e.g.::

        with torch.no_grad(), online_bn(chip):
            logits = chip(x)
    """
    bns = [bn for _, bn in bn_modules(model)]
    saved = [(bn.running_mean, bn.running_var) for bn in bns]
    with _preserve_modes(model):
        _bn_only_train_mode(model)
        try:
            for bn in bns:
                bn.track_running_stats = False
                bn.running_mean = None
                bn.running_var = None
            yield model
        finally:
            for bn, (mean, var) in zip(bns, saved, strict=True):
                bn.running_mean = mean
                bn.running_var = var


# ----------------------------------------------------------------------------------------------------
# BN fine-tuning (P1 §1.7 B)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BNFinetuneResult:
    """Outcome of :func:`finetune_bn`.

    Attributes:
        epochs: epochs run.
        samples_used: distinct labelled samples used (``max_samples`` when few-shot and the loader had
            enough).
        samples_seen: sample presentations over all epochs (``samples_used × epochs`` in few-shot mode).
        steps: optimiser steps over all epochs.
        wall_time_s: wall-clock time in seconds, including the optional initial BN adaptation.
        epoch_loss: mean training cross-entropy per epoch (sample-weighted).
        epoch_accuracy: training accuracy (fraction in [0, 1]) per epoch, measured in train mode.
        epoch_lr: learning rate used in each epoch.
        num_trainable: number of trainable scalars (sum of γ and β sizes).
        adapt: the result of the initial :func:`adapt_bn`, if ``start_from_adapted``.
    """

    epochs: int
    samples_used: int
    samples_seen: int
    steps: int
    wall_time_s: float
    epoch_loss: list[float] = field(default_factory=list)
    epoch_accuracy: list[float] = field(default_factory=list)
    epoch_lr: list[float] = field(default_factory=list)
    num_trainable: int = 0
    adapt: BNAdaptResult | None = None


def _first_n_batches(loader: Iterable[Any], max_samples: int, fn: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``max_samples`` labelled samples of ``loader`` as batches (the last one truncated)."""
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []
    count = 0
    for batch in loader:
        if count >= max_samples:
            break
        x, y = _split_batch(batch, need_labels=True, fn=fn)
        assert y is not None
        take = min(int(x.shape[0]), max_samples - count)
        kept.append((x[:take].detach().clone(), y[:take].detach().clone()))
        count += take
    return kept


def finetune_bn(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    epochs: int = 5,
    lr: float = 0.01,
    lr_step_epochs: int = 2,
    lr_gamma: float = 0.2,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    max_samples: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    start_from_adapted: bool = True,
    adapt_loader: Iterable[Any] | None = None,
    adapt_batches: int = 20,
    bn_momentum: float | None = 0.1,
) -> BNFinetuneResult:
    """Fine-tune only the BN affine parameters γ/β on the (noisy) model with cross-entropy; P1 §1.7 B.

    Every parameter is frozen except the BN ``weight`` (γ) and ``bias`` (β); only the BN modules are in train
    mode (so the running statistics are re-estimated implicitly, with ``bn_momentum``, PyTorch's default 0.1,
    as docs/papers.md §1.10 recommends), every other module (dropout, analog layers) is in eval mode. The
    optimiser is SGD (``momentum``, ``weight_decay``) with ``StepLR(step_size=lr_step_epochs,
    gamma=lr_gamma)`` stepped per
    epoch: the defaults give P1's schedule 0.01, 0.01, 0.002, 0.002, 0.0004. Gradients flow through all
    modules between BN layers (their parameters are frozen but their inputs need gradients).

    Args:
        model: any module with at least one affine BN; modified in place (γ/β and BN running statistics).
        loader: iterable of labelled batches ``(x, y)`` (y: class indices); re-iterated every epoch.
        epochs: number of epochs (default 5).
        lr, lr_step_epochs, lr_gamma: initial learning rate and its step decay (every ``lr_step_epochs``
            epochs multiply by ``lr_gamma``).
        momentum, weight_decay: SGD settings (defaults 0.9 and 0; no weight decay on γ/β).
        max_samples: few-shot: use only the first ``max_samples`` labelled samples the loader yields (the last
            batch is truncated); the same samples are reused, in the same batches, in every epoch.
        device: where to send the batches; default: the device of the model's first parameter.
        progress: log one line per epoch to stderr.
        start_from_adapted: run :func:`adapt_bn` first (P1 §1.10 default: start from BN-adapted statistics).
        adapt_loader: loader for that adaptation (default: ``loader``); ``adapt_batches`` batches are used.
        bn_momentum: BN running-statistics momentum during fine-tuning (``None`` = cumulative average).

    Returns:
        A :class:`BNFinetuneResult` with wall time (s), samples used, per-epoch loss, accuracy and LR.

    On return -- also on an exception -- the ``training`` flags, BN momenta and every parameter's
    ``requires_grad`` are restored. On an exception the BN state (γ/β and running statistics) is restored too.
    """
    fn = "finetune_bn"
    _check_positive_int(epochs, "epochs", fn)
    _check_positive_int(lr_step_epochs, "lr_step_epochs", fn)
    _check_positive_int(max_samples, "max_samples", fn, allow_none=True)
    _check_positive_int(adapt_batches, "adapt_batches", fn)
    for name, value, lo, hi in (
        ("lr", lr, 0.0, math.inf),
        ("lr_gamma", lr_gamma, 0.0, 1.0),
        ("momentum", momentum, 0.0, 1.0),
        ("weight_decay", weight_decay, 0.0, math.inf),
    ):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"{fn}: {name} must be a finite number in [{lo}, {hi}], got {value!r}")
    if lr <= 0:
        raise ValueError(f"{fn}: lr must be > 0, got {lr!r}")
    if bn_momentum is not None and not 0.0 < bn_momentum <= 1.0:
        raise ValueError(f"{fn}: bn_momentum must be None or in (0, 1], got {bn_momentum!r}")
    bns = bn_modules(model)
    params: list[nn.Parameter] = []
    for _, bn in bns:
        params += [p for p in (bn.weight, bn.bias) if p is not None]
    if not params:
        raise ValueError(f"{fn}: the model has no affine BatchNorm layer (no γ/β to fine-tune)")
    dev = _infer_device(model, device)
    snapshot = snapshot_bn_state(model)
    t0 = time.perf_counter()
    adapt_res: BNAdaptResult | None = None
    losses: list[float] = []
    accs: list[float] = []
    lrs: list[float] = []
    steps = 0
    samples_used = 0
    samples_seen = 0
    try:
        with _preserve_modes(model), _preserve_requires_grad(model):
            if start_from_adapted:
                adapt_res = adapt_bn(
                    model,
                    adapt_loader if adapt_loader is not None else loader,
                    num_batches=adapt_batches,
                    device=dev,
                )
            model.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            _bn_only_train_mode(model)
            for _, bn in bns:
                bn.momentum = bn_momentum
            opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=lr_step_epochs, gamma=lr_gamma)
            cached = _first_n_batches(loader, max_samples, fn) if max_samples is not None else None
            if cached is not None:
                samples_used = sum(int(x.shape[0]) for x, _ in cached)
            for epoch in range(epochs):
                epoch_lr = float(opt.param_groups[0]["lr"])
                # summed on the device (float64, as the host sums were), read once per epoch
                loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
                correct = torch.zeros((), dtype=torch.int64, device=dev)
                n_epoch = 0
                batches: Iterable[Any] = cached if cached is not None else loader
                for batch in batches:
                    x, y = _split_batch(batch, need_labels=True, fn=fn)
                    assert y is not None
                    x = x.to(dev, non_blocking=True)
                    y = y.to(dev, non_blocking=True)
                    opt.zero_grad(set_to_none=True)
                    logits = model(x)
                    loss = nn.functional.cross_entropy(logits, y)
                    loss.backward()
                    opt.step()
                    steps += 1
                    b = int(x.shape[0])
                    n_epoch += b
                    loss_sum += loss.detach().double() * b
                    correct += (logits.detach().argmax(dim=1) == y).sum()
                if n_epoch == 0:
                    raise ValueError(f"{fn}: the loader yielded no batches in epoch {epoch + 1}")
                if cached is None and epoch == 0:
                    samples_used = n_epoch
                samples_seen += n_epoch
                losses.append(float(loss_sum) / n_epoch)
                accs.append(int(correct) / n_epoch)
                lrs.append(epoch_lr)
                sched.step()
                log(
                    progress,
                    f"finetune_bn: epoch {epoch + 1}/{epochs} lr={epoch_lr:.3g} loss={losses[-1]:.4f} "
                    f"train_acc={100 * accs[-1]:.2f}% samples={n_epoch}",
                )
            for p in params:
                p.grad = None
    except BaseException:
        for p in params:
            p.grad = None
        restore_bn_state(model, snapshot)
        raise
    return BNFinetuneResult(
        epochs=epochs,
        samples_used=samples_used,
        samples_seen=samples_seen,
        steps=steps,
        wall_time_s=time.perf_counter() - t0,
        epoch_loss=losses,
        epoch_accuracy=accs,
        epoch_lr=lrs,
        num_trainable=sum(p.numel() for p in params),
        adapt=adapt_res,
    )
