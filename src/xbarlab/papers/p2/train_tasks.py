"""Training and evaluation of the canvas detector and segmenter; checkpoints are safetensors + JSON, never pickle.

Data (all deterministic, see :mod:`xbarlab.papers.p2.canvas`):

* training canvases: ``train_count`` canvases with seed ``data_seed`` from the Fashion-MNIST **train** split;
* test canvases: ``test_count`` canvases with seed ``data_seed + 1`` from the **test** split (objects never
  seen in training);
* BN-calibration canvases (P2 evaluation): the first canvases of the training set (canvas i does not depend
  on how many are generated).

Training: Adam, per-iteration cosine learning rate, weight decay, batch shuffles seeded by (seed, epoch). After
every epoch ``<out>/state.{safetensors,json}`` holds model, optimizer state, counters and history
(:func:`xbarlab.checkpoint.save_state`); a rerun with the same arguments continues from it and ends with the
same weights as an uninterrupted run. The final model goes to ``<out>/model.{safetensors,json}``
(:func:`save_task_model`), with the test metric and everything needed to rebuild the architecture.

Optional noise-injection fine-tuning (Joshi et al., :mod:`xbarlab.mitigation.noise_injection`): start from a
trained model (``init_from``) and train with forward-only weight noise σ = η·max|W| and weight clipping.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from xbarlab.checkpoint import TASK_MODEL_FORMAT, checkpoint_paths, load_state, pretrained_dir, save_state, sha256_file
from xbarlab.mitigation.noise_injection import NoiseInjection
from xbarlab.papers.p2.canvas import CanvasConfig, CanvasSet, batches, generate_canvases, source_images
from xbarlab.papers.p2.detection import TinyCenterNet, decode, detection_loss, encode_targets, mean_average_precision
from xbarlab.papers.p2.segmentation import ConfusionAccumulator, TinySegNet, miou
from xbarlab.progress import log
from xbarlab.training import cosine_lr, epoch_seed

__all__ = [
    "TASKS",
    "TASK_MODEL_FORMAT",
    "TaskTrainConfig",
    "build_task_model",
    "evaluate_task",
    "load_shipped",
    "load_task_model",
    "make_canvases",
    "save_task_model",
    "shipped_path",
    "train_task",
]

TASKS = ("detector", "segmenter")
"""Task names: ``detector`` (mAP@0.5) and ``segmenter`` (mIoU)."""
SHIPPED_NAMES = {
    "detector": "detector_fmnist-canvas",
    "segmenter": "segmenter_fmnist-canvas",
    "detector-ni": "detector-ni_fmnist-canvas",
    "segmenter-ni": "segmenter-ni_fmnist-canvas",
}
"""File stems of the shipped weights under ``xbarlab/assets/pretrained/tasks/``: the trained models and the
noise-injection baselines (``-ni``: the shipped model fine-tuned 2 epochs with η_tr = 0.1, α = 2; docs/p2_tasks.md)."""


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task: invalid value {task!r}; allowed: {', '.join(TASKS)}")


def build_task_model(task: str, *, num_classes: int = 10, width: int = 32) -> nn.Module:
    """The architecture of ``task``; ``num_classes`` counts object classes (the segmenter adds background)."""
    _check_task(task)
    if task == "detector":
        return TinyCenterNet(num_classes=num_classes, width=width)
    return TinySegNet(num_classes=num_classes + 1, width=width)


def metric_name(task: str) -> str:
    """``mAP50`` for the detector, ``mIoU`` for the segmenter."""
    _check_task(task)
    return "mAP50" if task == "detector" else "mIoU"


def make_canvases(
    split: str, count: int, seed: int, *, dataset: str = "fashion-mnist", config: CanvasConfig | None = None
) -> CanvasSet:
    """``count`` canvases from ``dataset``'s ``split`` with ``seed``."""
    images, labels, classes = source_images(dataset, split)
    return generate_canvases(
        images, labels, count, seed=seed, config=config, classes=classes, source=f"{dataset}/{split}"
    )


# ------------------------------------------------------------------------------------------------ evaluation


def _set_eval(model: nn.Module, set_eval: bool) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def ctx() -> Iterator[None]:
        flags = [(m, m.training) for m in model.modules()]
        if set_eval:
            model.eval()
        try:
            yield
        finally:
            for m, f in flags:
                m.training = f

    return ctx()


@torch.no_grad()
def evaluate_task(
    task: str,
    model: nn.Module,
    data: CanvasSet,
    *,
    batch_size: int = 64,
    set_eval: bool = True,
    device: str | torch.device = "cpu",
) -> float:
    """mAP@0.5 (detector) or mIoU (segmenter) of ``model`` on ``data``, as a fraction in [0, 1].

    ``set_eval=False`` keeps the modules' modes (e.g. inside :func:`xbarlab.mitigation.online_bn`).
    """
    _check_task(task)
    with _set_eval(model, set_eval):
        if task == "detector":
            num_classes = data.num_classes
            outputs = [model(x.to(device, non_blocking=True)) for x, _ in batches(data, batch_size, target="index")]
            dets = decode(torch.cat(outputs).cpu(), num_classes)  # one copy to the host; NMS and AP run there
            gts = [data.targets(i) for i in range(len(data))]
            return mean_average_precision(dets, gts, num_classes)[0]
        conf = ConfusionAccumulator(data.num_classes + 1, device)  # counts on the device, read once
        for x, y in batches(data, batch_size, target="mask"):
            conf.add(model(x.to(device, non_blocking=True)).argmax(1), y)
        return miou(conf.result())


def _loss_fn(task: str, model: nn.Module, data: CanvasSet) -> Callable[[Tensor, Tensor], Tensor]:
    if task == "segmenter":
        return lambda x, target: nn.functional.cross_entropy(model(x), target)

    def det(x: Tensor, idx: Tensor) -> Tensor:
        out = model(x)
        targets = encode_targets(data.boxes[idx], data.labels[idx], data.num_classes, (out.shape[-2], out.shape[-1]))
        return detection_loss(out, targets)

    return det


# ------------------------------------------------------------------------------------------------ checkpoints


def save_task_model(model: nn.Module, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``<path>.safetensors`` (float32 state dict) and ``<path>.json`` (``meta`` + format, task, kwargs)."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.float() if v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    st = base.with_suffix(".safetensors")
    tmp = st.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp))
    tmp.replace(st)
    kwargs = getattr(model, "kwargs", None)
    full = {"format": TASK_MODEL_FORMAT, "model_kwargs": kwargs, **meta, "sha256": sha256_file(st)}
    js = base.with_suffix(".json")
    tmpj = js.with_suffix(".json.tmp")
    tmpj.write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    tmpj.replace(js)
    return st


def load_task_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_task_model` (checks format and SHA-256); returns (model, meta)."""
    base = Path(path)
    if base.suffix in (".json", ".safetensors"):
        base = base.with_suffix("")
    js, st = base.with_suffix(".json"), base.with_suffix(".safetensors")
    for p in (js, st):
        if not p.is_file():
            raise FileNotFoundError(f"task model file missing: {p}")
    meta = json.loads(js.read_text())
    if meta.get("format") != TASK_MODEL_FORMAT:
        raise ValueError(
            f"{js}: format {meta.get('format')!r}; expected {TASK_MODEL_FORMAT!r} (a detector or segmenter written by "
            "`xbarlab p2 train-detector` / `train-segmenter`)"
        )
    if not meta.get("sha256"):
        raise ValueError(
            f"{js}: no sha256; the weights cannot be verified. If you trust the file, re-hash it with "
            f"`xbarlab rehash {js}`"
        )
    if meta["sha256"] != sha256_file(st):
        raise ValueError(f"{st}: SHA-256 does not match {js} (corrupt or replaced file)")
    task = str(meta.get("task"))
    _check_task(task)
    kw = dict(meta["model_kwargs"])
    model: nn.Module = TinyCenterNet(**kw) if task == "detector" else TinySegNet(**kw)
    model.load_state_dict(load_file(str(st)), strict=True)
    return model.eval(), meta


def shipped_path(name: str) -> Path:
    """Stem of the shipped weights ``name`` (a key of :data:`SHIPPED_NAMES`, e.g. a task) under
    ``xbarlab/assets/pretrained/tasks/``."""
    if name not in SHIPPED_NAMES:
        raise ValueError(f"shipped task model: invalid value {name!r}; allowed: {', '.join(SHIPPED_NAMES)}")
    return pretrained_dir() / "tasks" / SHIPPED_NAMES[name]


def load_shipped(name: str) -> tuple[nn.Module, dict[str, Any]]:
    """The shipped trained detector or segmenter (``detector``, ``segmenter``, or a ``-ni`` baseline)."""
    return load_task_model(shipped_path(name))


# ------------------------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class TaskTrainConfig:
    """Hyper-parameters of :func:`train_task` (stored in the checkpoints)."""

    task: str
    epochs: int = 12
    train_count: int = 3000
    test_count: int = 500
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 32
    seed: int = 0
    data_seed: int = 0
    dataset: str = "fashion-mnist"
    noise_inject: float | None = None
    clip_alpha: float | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
        _check_task(self.task)
        checks = [
            ("epochs", self.epochs >= 1, ">= 1"),
            ("train_count", self.train_count >= 1, ">= 1"),
            ("test_count", self.test_count >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("width", self.width >= 4, ">= 4"),
            ("noise_inject", self.noise_inject is None or self.noise_inject >= 0, ">= 0 or None"),
            ("clip_alpha", self.clip_alpha is None or self.clip_alpha > 0, "> 0 or None"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"TaskTrainConfig.{name}: invalid value {getattr(self, name)!r}; allowed: {allowed}")


def _epoch_loss(losses: list[Tensor], sizes: list[int], epoch: int, first_step: int) -> tuple[float, int]:
    """(Σ loss·batch size, images) of an epoch from its step losses, read to the host once.

    A non-finite loss is refused naming its first step (``first_step`` is the step count before the epoch).
    """
    values = torch.stack(losses).tolist() if losses else []
    loss_sum, count = 0.0, 0
    for k, (value, size) in enumerate(zip(values, sizes, strict=True)):
        if not math.isfinite(value):
            raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {first_step + k + 1}; lower the lr")
        loss_sum += value * size  # the same float arithmetic, in the same order, as the per-step read
        count += size
    return loss_sum, count


def train_task(
    config: TaskTrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = True,
    progress: bool = True,
    train_data: CanvasSet | None = None,
    test_data: CanvasSet | None = None,
    stop_after: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any] | None:
    """Train the detector or segmenter; returns the final metadata (also written to ``<out>/model.json``).

    ``train_data``/``test_data`` override the generated canvases (tests use small sets). ``stop_after``: run at
    most that many epochs now and return ``None`` if training is not finished (rerun to continue). ``device``:
    where the model trains and is evaluated (not part of the config: a run resumes on any device); the step
    losses stay there and are read once per epoch (a non-finite loss is still refused naming its first step).
    """
    dev = torch.device(device)
    cfg = config
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    if train_data is None:
        log(progress, f"generating {cfg.train_count} training canvases (seed {cfg.data_seed})")
        train_data = make_canvases("train", cfg.train_count, cfg.data_seed, dataset=cfg.dataset)
    if test_data is None:
        log(progress, f"generating {cfg.test_count} test canvases (seed {cfg.data_seed + 1})")
        test_data = make_canvases("test", cfg.test_count, cfg.data_seed + 1, dataset=cfg.dataset)
    torch.manual_seed(cfg.seed)
    model = build_task_model(cfg.task, num_classes=train_data.num_classes, width=cfg.width)
    init_meta: dict[str, Any] | None = None
    if cfg.init_from:
        src = shipped_path(cfg.task) if cfg.init_from == "shipped" else Path(cfg.init_from)
        init_model, init_meta = load_task_model(src)
        model.load_state_dict(init_model.state_dict())
    model.to(dev)
    injection = None
    if cfg.noise_inject:
        injection = NoiseInjection(model, eta=cfg.noise_inject, alpha=cfg.clip_alpha).attach()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_data) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    state_path = out / "state"
    start_epoch, step, history, wall_before = 0, 0, [], 0.0
    if resume and checkpoint_paths(state_path)[1].is_file():
        state = load_state(state_path)
        if state.get("config") != asdict(cfg):
            raise ValueError(
                f"cannot resume from {state_path}: it was trained with {state.get('config')}, now {asdict(cfg)} "
                "(use the same arguments, another --out, or --no-resume)"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history = list(state["history"])
        wall_before = float(state["wall_time_s"])
        log(progress, f"resuming from {state_path} after epoch {start_epoch}/{cfg.epochs}")
    loss_fn = _loss_fn(cfg.task, model, train_data)
    target = "mask" if cfg.task == "segmenter" else "index"
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        es = epoch_seed(cfg.seed, epoch)
        torch.manual_seed(es)
        model.train()
        losses: list[Tensor] = []
        sizes: list[int] = []
        for x, y in batches(train_data, cfg.batch_size, target=target, shuffle=True, seed=es + 1):
            lr = cosine_lr(step, total, cfg.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            loss = loss_fn(x.to(dev, non_blocking=True), y if cfg.task == "detector" else y.to(dev, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if injection is not None:
                injection.clip_weights()
            step += 1
            losses.append(loss.detach())
            sizes.append(x.shape[0])
        loss_sum, count = _epoch_loss(losses, sizes, epoch, step - len(losses))
        metric = evaluate_task(cfg.task, model, test_data, device=dev)
        entry = {"epoch": epoch + 1, "loss": loss_sum / count, metric_name(cfg.task): metric, "seconds": 0.0}
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        history.append(entry)
        log(
            progress,
            f"{cfg.task} epoch {epoch + 1}/{cfg.epochs}: loss {entry['loss']:.4f}, "
            f"test {metric_name(cfg.task)} {metric:.4f} ({entry['seconds']:.0f} s)",
        )
        save_state(
            state_path,
            {
                "config": asdict(cfg),
                "epoch": epoch + 1,
                "step": step,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "history": history,
                "wall_time_s": wall_before + time.perf_counter() - t_start,
            },
        )
    if injection is not None:
        injection.detach()
    if end_epoch < cfg.epochs:
        log(progress, f"stopped after epoch {end_epoch}/{cfg.epochs}; rerun to continue from {state_path}")
        return None
    model.eval()
    final = evaluate_task(cfg.task, model, test_data, device=dev)
    meta = {
        "task": cfg.task,
        "metric": metric_name(cfg.task),
        "test_metric": final,
        "num_params": sum(p.numel() for p in model.parameters()),
        "classes": list(train_data.classes),
        "train_data": train_data.describe(),
        "test_data": test_data.describe(),
        "training": asdict(cfg),
        "noise_injection": injection.config() if injection is not None else None,
        "initialised_from": init_meta.get("sha256") if init_meta else None,
        "history": history,
        "wall_time_s": round(wall_before + time.perf_counter() - t_start, 1),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    save_task_model(model, out / "model", meta)
    log(progress, f"{cfg.task}: test {metric_name(cfg.task)} {final:.4f}; saved {out / 'model.safetensors'}")
    return meta
