"""Chip lifecycle: program a chip instance, move it in time, calibrate its converters, save and load it.

``program(model, seed)`` samples every static non-ideality once; each layer draws from its own streams derived
from (seed, layer name, non-ideality), so the same seed gives bit-identical chips and changing one non-ideality's
parameters keeps the others' draws (common random numbers across a sweep).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from xbarlab.hardware import HardwareConfig
from xbarlab.jsonio import write_json
from xbarlab.layers import CHIP_BUFFERS, CONVERTER_BUFFERS, DERIVED_BUFFERS, AnalogLayer, analog_layers

CHIP_FORMAT = "xbarlab-chip/1"


def _layers(model: nn.Module) -> list[AnalogLayer]:
    layers = analog_layers(model)
    if not layers:
        raise ValueError("model: has no analog layers; convert it with xbarlab.convert(model, hw) first")
    return layers


MAX_SEED = 2**63 - 1
"""Chip seeds are stored as int64."""


def check_seed(seed: object) -> int:
    """The seed as an int (Python or NumPy integer) in [0, 2**63 - 1], or a ValueError naming the allowed range."""
    try:
        value = operator.index(seed)  # type: ignore[arg-type]
    except TypeError:
        value = -1
    if isinstance(seed, bool) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"seed: invalid value {seed!r}; allowed: an integer in [0, 2**63 - 1]")
    return value


def program(model: nn.Module, seed: int) -> nn.Module:
    """Sample one chip instance into the analog layers of ``model`` (in place); returns ``model``."""
    value = check_seed(seed)
    for layer in _layers(model):
        layer.program(value)
    return model


def drift(model: nn.Module, t_seconds: float) -> nn.Module:
    """Read the chip at time ``t_seconds`` (s) since programming (power law: t ≥ t0; PCM: inference time ≥ 0)."""
    for layer in _layers(model):
        layer.set_time(t_seconds)
    return model


def needs_calibration(model: nn.Module) -> bool:
    """True when a DAC or ADC is enabled in some analog layer and not calibrated."""
    return any(layer.needs_calibration for layer in analog_layers(model))


def _batches(loader: Iterable[Any], num_batches: int) -> Iterable[torch.Tensor]:
    for i, batch in enumerate(loader):
        if i >= num_batches:
            break
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"loader: batch {i} is a {type(x).__name__}; allowed: a tensor or an (input, target) tuple whose "
                "first element is the model's input tensor"
            )
        yield x


@torch.no_grad()
def calibrate(
    model: nn.Module, loader: Iterable[Any], *, num_batches: int = 4, device: str | torch.device | None = None
) -> nn.Module:
    """Calibrate DAC input ranges, then ADC partial-sum ranges, on the programmed chip from unlabeled batches.

    Two passes over the first ``num_batches`` batches: the DAC pass observes ideal inputs, the ADC pass observes
    the partial sums produced with the calibrated DACs. Module training flags are restored afterwards.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches: invalid value {num_batches}; allowed: >= 1")
    layers = _layers(model)
    for layer in layers:
        layer._require_programmed()
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        for stage, enabled in (("dac", "dac"), ("adc", "adc")):
            active = [la for la in layers if getattr(la.hw, enabled).bits is not None]
            if not active:
                continue
            for layer in active:
                layer.start_calibration(stage)
            seen = 0
            for x in _batches(loader, num_batches):
                model(x.to(device) if device is not None else x)
                seen += 1
            if seen == 0:
                raise ValueError("loader: yielded no batch; calibration needs data")
            for layer in active:
                layer.finish_calibration()
    finally:
        for layer in layers:
            layer._observers = None
            layer._calibration_stage = None
        for module, mode in modes.items():
            module.train(mode)
    return model


# ---------------------------------------------------------------------------------------------------- storage


def chip_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """(base, base.safetensors, base.json) of a chip saved as ``path``; a trailing .safetensors/.json is dropped.

    The suffixes are appended, never substituted: ``chip_sigma0.1`` and ``chip_sigma0.2`` are two chips.
    """
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base, base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def _rng_key(layer: AnalogLayer, device: str) -> str:
    return f"__mvm_rng__.{layer.layer_name}.{device}"


def save_chip(model: nn.Module, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Save a programmed chip: ``<path>.safetensors`` (all tensors) + ``<path>.json`` (config, seeds, time).

    The per-MVM noise generators' states are saved too, so a loaded chip continues the same noise stream and
    gives identical outputs. Returns the base path (what :func:`load_chip` takes).
    """
    from xbarlab import __version__

    layers = _layers(model)
    for layer in layers:
        layer._require_programmed()
    hw: HardwareConfig | None = getattr(model, "xbarlab_hw", None)
    if hw is None:
        raise ValueError("model: has no xbarlab_hw attribute; was it made by xbarlab.convert?")
    base, tensors_path, json_path = chip_paths(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for layer in layers:  # per-MVM noise streams continue where they were after loading
        for device, gen_state in layer.mvm_rng_state().items():
            state[_rng_key(layer, device)] = gen_state.contiguous().cpu()
    meta = {
        "format": CHIP_FORMAT,
        "xbarlab_version": __version__,
        "hardware": hw.to_dict(),
        "layers": {
            la.layer_name: {"seed": int(la.chip_seed), "time_s": float(la.chip_time)}  # type: ignore[arg-type]
            for la in layers
        },
        "extra": extra or {},
    }
    tmp_t = tensors_path.with_name(tensors_path.name + ".tmp")
    save_file(state, str(tmp_t))
    tmp_t.replace(tensors_path)
    write_json(json_path, meta)
    return base


def load_chip(digital_model: nn.Module, path: str | Path) -> nn.Module:
    """Rebuild a saved chip on a digital model of the same architecture (no pickle: safetensors + JSON)."""
    from xbarlab.conversion import convert

    _, tensors_path, json_path = chip_paths(path)
    for p in (json_path, tensors_path):
        if not p.is_file():
            raise FileNotFoundError(f"chip file missing: {p}")
    meta = json.loads(json_path.read_text())
    if meta.get("format") != CHIP_FORMAT:
        raise ValueError(f"{json_path}: format {meta.get('format')!r}; expected {CHIP_FORMAT!r}")
    hw = HardwareConfig.from_dict(meta["hardware"])
    model = convert(digital_model, hw)
    state = load_file(str(tensors_path))
    for layer in analog_layers(model):
        for name in (*CHIP_BUFFERS, *DERIVED_BUFFERS, *CONVERTER_BUFFERS):
            key = f"{layer.layer_name}.{name}" if layer.layer_name else name
            if key in state:
                setattr(layer, name, state[key])
        prefix = _rng_key(layer, "")
        rng = {k[len(prefix) :]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
        usable = {d: st for d, st in rng.items() if d == "cpu" or (d.startswith("cuda") and torch.cuda.is_available())}
        layer.set_mvm_rng_state(usable)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{tensors_path}: does not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    return model
