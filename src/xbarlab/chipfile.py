"""Chip files: save a programmed chip instance and load it back onto its digital model, checked tensor by tensor.

A chip is ``<base>.safetensors`` (every static draw, converter range and per-MVM generator state) plus
``<base>.json`` (format, hardware, layers, hashes). Loading never unpickles; every tensor is checked against
the hardware and the layer it belongs to, and the hashes against the files (:class:`ChipFileError` names the
file, the key and what was expected).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from xbarlab import __version__, devices
from xbarlab.atomic import atomic_write
from xbarlab.checkpoint import sha256_file
from xbarlab.chip import MAX_SEED
from xbarlab.conversion import convert
from xbarlab.hardware import ConfigError, HardwareConfig
from xbarlab.jsonio import json_safe, write_json
from xbarlab.layers import (
    CHIP_BUFFERS,
    CONVERTER_BUFFERS,
    DERIVED_BUFFERS,
    AnalogLayer,
    analog_layers,
    require_analog_layers,
)

__all__ = ["CHIP_FORMAT", "ChipFileError", "chip_paths", "load_chip", "save_chip"]

CHIP_FORMAT = "xbarlab-chip/2"
"""Format of saved chips (2: with tensors_sha256 and content_sha256, every tensor checked on load)."""


def chip_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """(base, base.safetensors, base.json) of a chip saved as ``path``; a trailing .safetensors/.json is dropped.

    The suffixes are appended, never substituted: ``chip_sigma0.1`` and ``chip_sigma0.2`` are two chips.
    """
    base = Path(path)
    if base.suffix in (".safetensors", ".json"):
        base = base.with_suffix("")
    return base, base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def _rng_key(layer: AnalogLayer, device: str) -> str:
    return f"{_RNG_PREFIX}{layer.layer_name}.{device}"


_RNG_PREFIX = "__mvm_rng__."
OLD_CHIP_FORMATS = ("xbarlab-chip/1",)
"""Chip formats of earlier versions: refused (their files carry no integrity hash), never read silently."""

DERIVED_RTOL = 1e-5
"""Stored derived weights must equal the ones recomputed from the chip state within this fraction of their
largest magnitude (the recomputation is deterministic; the margin only absorbs float rounding across machines)."""


class ChipFileError(ValueError):
    """A saved chip is incomplete, corrupt, edited or does not fit the model: one line naming the file and field."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _fail(file: Path, key: str, what: str, expected: str) -> ChipFileError:
    """``<file>: <tensor or key>: <what>; expected <expected>`` as one line."""
    return ChipFileError(_one_line(f"{file}: {key}: {what}; expected {expected}"))


def _content_sha256(meta: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no whitespace) of the metadata without ``content_sha256``.

    The metadata holds ``tensors_sha256``, so this one hash covers the tensors file and the hardware description.
    """
    body = {k: v for k, v in meta.items() if k != "content_sha256"}
    text = json.dumps(json_safe(body), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def save_chip(model: nn.Module, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Save a programmed chip: ``<path>.safetensors`` (all tensors) + ``<path>.json`` (config, seeds, time).

    The per-MVM noise generators' states are saved too, so a loaded chip continues the same noise stream and
    gives identical outputs. The JSON records ``tensors_sha256`` (SHA-256 of the tensors file) and
    ``content_sha256`` (SHA-256 of its own canonical content, which includes ``tensors_sha256``): editing either
    file is detected by :func:`load_chip`. Returns the base path (what :func:`load_chip` takes).
    """
    layers = require_analog_layers(model)
    for layer in layers:
        layer._require_programmed()
    hw: HardwareConfig | None = getattr(model, "xbarlab_hw", None)
    if hw is None:
        raise ValueError("model: has no xbarlab_hw attribute; was it made by xbarlab.convert?")
    raw = model.state_dict()
    on_meta = [k for k, v in raw.items() if v.is_meta]
    if on_meta:
        raise ValueError(
            f"model: tensor {on_meta[0]!r} (and {len(on_meta) - 1} more) is on the meta device, which holds no "
            "values; allowed: a chip whose tensors are on cpu or cuda"
        )
    base, tensors_path, json_path = chip_paths(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in raw.items()}  # a GPU chip is written as CPU tensors
    for layer in layers:  # per-MVM noise streams continue where they were after loading
        for device, gen_state in layer.mvm_rng_state().items():
            state[_rng_key(layer, device)] = gen_state.contiguous().cpu()
    atomic_write(tensors_path, lambda p: save_file(state, str(p), metadata={"format": CHIP_FORMAT}))
    meta: dict[str, Any] = {
        "format": CHIP_FORMAT,
        "xbarlab_version": __version__,
        "hardware": hw.to_dict(),
        "layers": {
            la.layer_name: {"seed": int(la.chip_seed), "time_s": float(la.chip_time)}  # type: ignore[arg-type]
            for la in layers
        },
        "extra": extra or {},
        "tensors_sha256": sha256_file(tensors_path),
    }
    meta = json.loads(json.dumps(json_safe(meta), default=str, allow_nan=False))  # exactly what the file holds
    meta["content_sha256"] = _content_sha256(meta)
    write_json(json_path, meta)
    return base


def load_chip(digital_model: nn.Module, path: str | Path, *, device: str | torch.device | None = None) -> nn.Module:
    """Rebuild a saved chip on a digital model of the same architecture (no pickle: safetensors + JSON).

    Nothing is trusted blindly: every expected tensor must be present with the shape and dtype that the model
    converted with the JSON's hardware implies, finite and physically valid (conductances ≥ 0 µS, fault codes
    matching stuck conductances, calibrated converter ranges > 0); no unknown tensor may be present; the derived
    weights (``w_ni``, ``var_ni``, ``w_tiles``, ``var_tiles``, ``tile_channels``) are RECOMPUTED from the chip state
    with the JSON's hardware and must match the stored ones (so an edited hardware description is caught even if
    its hash was recomputed), and both SHA-256 hashes must match. The loaded chip computes with the recomputed
    buffers. Any problem raises :class:`ChipFileError` (a ``ValueError``) with one line
    ``<file>: <tensor or key>: <what>; expected <…>``.
    """
    _, tensors_path, json_path = chip_paths(path)
    for p in (json_path, tensors_path):
        if not p.is_file():
            raise FileNotFoundError(f"chip file missing: {p}")
    meta = _read_chip_meta(json_path)
    hw = _chip_hardware(json_path, meta["hardware"])
    try:
        model = convert(digital_model, hw)
    except (ValueError, TypeError) as exc:
        raise _fail(json_path, "hardware", f"cannot convert the given model ({exc})", "hardware that fits it") from None
    layers = analog_layers(model)
    if not layers:
        raise _fail(json_path, "hardware", "converts no layer of the given model to analog", "at least one")
    _check_layer_entries(json_path, meta["layers"], layers)
    digital_expected = model.state_dict()  # chip buffers are still None, so only the digital tensors
    state = _read_chip_tensors(tensors_path)
    rng = _take_rng_states(tensors_path, state, layers)
    chip_state = {la.layer_name: _take_layer_tensors(state, la) for la in layers}
    _check_digital_state(tensors_path, state, digital_expected)
    model.load_state_dict(state, strict=False)  # names, shapes and dtypes checked above
    for layer in layers:
        _load_layer_chip(tensors_path, json_path, layer, chip_state[layer.layer_name], meta["layers"])
    _check_hashes(tensors_path, json_path, meta)
    for layer in layers:
        usable = {
            d: st
            for d, st in rng.get(layer.layer_name, {}).items()
            if d == "cpu" or (d.startswith("cuda") and torch.cuda.is_available())
        }
        try:
            layer.set_mvm_rng_state(usable)
        except (RuntimeError, ValueError) as exc:
            key = _rng_key(layer, next(iter(usable), "cpu"))
            raise _fail(tensors_path, key, f"not a generator state ({exc})", "a torch.Generator state") from None
    # checked on the CPU, then moved: the static state is the saved one on any device (meta: shapes only)
    return model if device is None else model.to(torch.device(device))


# ---------------------------------------------------------------------------------------------- load helpers


def _read_chip_meta(json_path: Path) -> dict[str, Any]:
    """The chip JSON, with its format and required keys checked."""
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(json_path, "json", f"not valid JSON ({exc})", "a chip description written by save_chip") from None
    if not isinstance(meta, dict):
        raise _fail(json_path, "json", f"a {type(meta).__name__}", "an object written by save_chip")
    if "format" not in meta:
        raise _fail(json_path, "format", "missing", repr(CHIP_FORMAT))
    fmt = meta["format"]
    if fmt in OLD_CHIP_FORMATS:
        raise _fail(
            json_path,
            "format",
            f"{fmt!r} is an old chip format without integrity hashes and is not read (re-save the chip: program "
            "it again and call save_chip)",
            repr(CHIP_FORMAT),
        )
    if fmt != CHIP_FORMAT:
        raise _fail(json_path, "format", f"{fmt!r}", repr(CHIP_FORMAT))
    for key, kind, what in (
        ("hardware", dict, "the chip's hardware configuration (an object)"),
        ("layers", dict, "an object of {seed, time_s} per analog layer"),
        ("tensors_sha256", str, "the SHA-256 of the tensors file (a string)"),
        ("content_sha256", str, "the SHA-256 of this file's content (a string)"),
    ):
        if key not in meta:
            raise _fail(json_path, key, "missing", what)
        if not isinstance(meta[key], kind):
            raise _fail(json_path, key, f"a {type(meta[key]).__name__}", what)
    return meta


def _chip_hardware(json_path: Path, data: dict[str, Any]) -> HardwareConfig:
    """The hardware of the JSON; a bad description is reported with the file and the field path."""
    try:
        return HardwareConfig.from_dict(data)
    except ConfigError as exc:
        raise ChipFileError(_one_line(f"{json_path}: {exc.prefixed('hardware')}")) from None
    except (ValueError, TypeError, KeyError) as exc:
        expected = "a hardware configuration written by save_chip"
        raise _fail(json_path, "hardware", f"invalid ({exc})", expected) from None


def _check_layer_entries(json_path: Path, entries: dict[str, Any], layers: list[AnalogLayer]) -> None:
    names = [la.layer_name for la in layers]
    if sorted(entries) != sorted(names):
        raise _fail(
            json_path,
            "layers",
            f"names {sorted(entries)}",
            f"the analog layers of the model converted with its hardware: {sorted(names)}",
        )
    for name in names:
        entry = entries[name]
        ok = isinstance(entry, dict) and set(entry) == {"seed", "time_s"}
        if ok:
            seed, time_s = entry["seed"], entry["time_s"]
            ok = isinstance(seed, int) and not isinstance(seed, bool)
            ok = ok and isinstance(time_s, (int, float)) and not isinstance(time_s, bool)
        if not ok:
            raise _fail(json_path, f"layers.{name}", f"{entry!r}", "{'seed': <int>, 'time_s': <number>}")


def _read_chip_tensors(tensors_path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(tensors_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        what = f"not a readable safetensors file ({exc})"
        raise _fail(tensors_path, "file", what, "a file written by save_chip") from None


def _take_rng_states(
    tensors_path: Path, state: dict[str, torch.Tensor], layers: list[AnalogLayer]
) -> dict[str, dict[str, torch.Tensor]]:
    """Remove the per-MVM generator states from ``state``: {layer name: {device: uint8 state}}."""
    names = {la.layer_name for la in layers}
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key in [k for k in state if k.startswith(_RNG_PREFIX)]:
        tensor = state.pop(key)
        layer_name, _, device = key[len(_RNG_PREFIX) :].rpartition(".")
        if layer_name not in names:
            raise _fail(tensors_path, key, "generator state of an unknown layer", f"one of the layers {sorted(names)}")
        try:
            torch.device(device)
        except RuntimeError:
            raise _fail(tensors_path, key, f"unknown device {device!r}", "'cpu' or 'cuda:<n>'") from None
        if tensor.dtype != torch.uint8 or tensor.dim() != 1:
            raise _fail(tensors_path, key, f"{tensor.dtype} of shape {tuple(tensor.shape)}", "a 1-D torch.uint8 state")
        out.setdefault(layer_name, {})[device] = tensor
    return out


def _key(layer: AnalogLayer, name: str) -> str:
    return f"{layer.layer_name}.{name}" if layer.layer_name else name


def _take_layer_tensors(state: dict[str, torch.Tensor], layer: AnalogLayer) -> dict[str, torch.Tensor]:
    """Remove the chip, derived and converter tensors of ``layer`` from ``state``."""
    out = {}
    for name in (*CHIP_BUFFERS, *DERIVED_BUFFERS, *CONVERTER_BUFFERS):
        key = _key(layer, name)
        if key in state:
            out[name] = state.pop(key)
    return out


def _check_tensor(
    file: Path, key: str, t: torch.Tensor, shape: tuple[int, ...], dtypes: tuple[torch.dtype, ...], why: str
) -> None:
    """Shape, dtype and (floating point) finiteness of one tensor."""
    if tuple(t.shape) != shape:
        raise _fail(file, key, f"shape {tuple(t.shape)}", f"{shape} ({why})")
    if t.dtype not in dtypes:
        raise _fail(file, key, f"dtype {t.dtype}", f"{' or '.join(str(d) for d in dtypes)} ({why})")
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise _fail(file, key, f"{bad} non-finite value(s) (NaN or ±inf)", "finite values")


def _check_digital_state(tensors_path: Path, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """The model's own tensors (weights, biases, BN statistics): all present, none unknown, same shape/dtype."""
    for key, ref in expected.items():
        if key not in state:
            raise _fail(tensors_path, key, "missing", "every tensor of the given model's state_dict")
        _check_tensor(tensors_path, key, state[key], tuple(ref.shape), (ref.dtype,), "as in the given model")
    unknown = sorted(set(state) - set(expected))
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise _fail(
            tensors_path,
            unknown[0],
            f"unknown tensor{more}",
            "only the tensors of the model converted with the hardware in the JSON",
        )


def _chip_specs(layer: AnalogLayer) -> dict[str, tuple[tuple[int, ...], tuple[torch.dtype, ...]] | None]:
    """Shape and dtype of every chip-state buffer of ``layer``; None: the hardware has no such buffer."""
    hw, lay = layer.hw, layer.layout
    arrays = (lay.groups, lay.num_slices, lay.polarities, lay.tiles_r, lay.tiles_c, lay.rows, lay.cols)
    f64 = (torch.float64,)
    frozen = hw.read_noise.kind != "none" and hw.read_noise.mode == "frozen"
    return {
        "g_prog": (arrays, f64),
        "nu": (arrays, f64) if hw.drift.kind != "none" else None,
        "read_xi": (arrays, f64) if frozen else None,
        "fault_code": (arrays, (torch.uint8,)),
        "w_max": ((), f64),
        "chip_seed": ((), (torch.int64,)),
        "chip_time": ((), f64),
    }


def _converter_specs(layer: AnalogLayer) -> dict[str, tuple[tuple[int, ...], tuple[torch.dtype, ...]] | None]:
    """Shape and dtype of the converter calibration buffers; None: that converter is off."""
    hw = layer.hw
    dac = hw.dac.bits is not None
    return {
        "dac_range": ((), (torch.float32,)) if dac else None,
        "dac_signed": ((), (torch.bool,)) if dac else None,
        "adc_range": ((layer.layout.num_slices,), (torch.float32,)) if hw.adc.bits is not None else None,
    }


_ABSENT_WHY = {
    "nu": "no drift: drift.kind is 'none'",
    "read_xi": "no frozen read noise: read_noise.kind 'none' or mode 'per_mvm'",
    "dac_range": "the DAC is off: dac.bits is None",
    "dac_signed": "the DAC is off: dac.bits is None",
    "adc_range": "the ADC is off: adc.bits is None",
}


def _load_layer_chip(
    tensors_path: Path, json_path: Path, layer: AnalogLayer, tensors: dict[str, torch.Tensor], entries: dict[str, Any]
) -> None:
    """Check and set the chip state and converter ranges of ``layer``, then recompute and compare derived buffers."""
    hw_note = f"layer '{layer.layer_name}' with the hardware in {json_path.name}"
    device = layer.weight.device
    specs = {**_chip_specs(layer), **_converter_specs(layer)}
    for name, spec in specs.items():
        key = _key(layer, name)
        if spec is None:
            if name in tensors:
                raise _fail(tensors_path, key, "present", f"absent ({_ABSENT_WHY[name]} in {json_path.name})")
            continue
        if name not in tensors:
            if name in CONVERTER_BUFFERS:
                continue  # not calibrated yet: the loaded chip says so (needs_calibration) and refuses to run
            raise _fail(tensors_path, key, "missing", f"a tensor of shape {spec[0]} ({hw_note})")
        _check_tensor(tensors_path, key, tensors[name], spec[0], spec[1], hw_note)
    if ("dac_range" in tensors) != ("dac_signed" in tensors):  # calibrated together by calibrate()
        have, lack = ("dac_range", "dac_signed") if "dac_range" in tensors else ("dac_signed", "dac_range")
        raise _fail(tensors_path, _key(layer, lack), "missing", f"it with {_key(layer, have)} (a calibrated DAC)")
    _check_chip_values(tensors_path, json_path, layer, tensors, entries[layer.layer_name])
    for name in (*CHIP_BUFFERS, *CONVERTER_BUFFERS):
        setattr(layer, name, tensors[name].to(device) if name in tensors else None)
    for name in DERIVED_BUFFERS:
        setattr(layer, name, None)
    _sync_mirrors(layer)
    try:
        layer.refresh()
    except ValueError as exc:
        raise _fail(tensors_path, _key(layer, "g_prog"), f"gives no valid weights ({exc})", "a valid chip") from None
    _compare_derived(tensors_path, json_path, layer, tensors)
    _sync_mirrors(layer)


def _sync_mirrors(layer: AnalogLayer) -> None:
    """Refresh the layer's host-side copies of its scalar buffers, where the layer keeps such copies."""
    sync = getattr(layer, "_sync_host_mirrors", None)
    if callable(sync):
        sync()


def _check_chip_values(
    tensors_path: Path, json_path: Path, layer: AnalogLayer, tensors: dict[str, torch.Tensor], entry: dict[str, Any]
) -> None:
    """Physical validity of the chip state and agreement with the JSON's seeds and times."""
    hw = layer.hw
    g = tensors["g_prog"]
    if g.numel() and float(g.min()) < 0:
        raise _fail(tensors_path, _key(layer, "g_prog"), f"negative conductance {float(g.min()):g} µS", "≥ 0 µS")
    code = tensors["fault_code"]
    rates = {1: ("SA0", hw.faults.sa0_rate, hw.device.g_off_us), 2: ("SA1", hw.faults.sa1_rate, hw.device.g_on_us)}
    if code.numel() and int(code.max()) > 2:
        raise _fail(tensors_path, _key(layer, "fault_code"), f"code {int(code.max())}", "0 (healthy), 1 (SA0), 2 (SA1)")
    for value, (label, rate, g_stuck) in rates.items():
        stuck = code == value
        if not bool(stuck.any()):
            continue
        if rate == 0.0:
            raise _fail(
                tensors_path,
                _key(layer, "fault_code"),
                f"{int(stuck.sum())} {label} device(s)",
                f"none ({label} rate 0 in {json_path.name})",
            )
        if not bool((g[stuck] == g_stuck).all()):
            raise _fail(
                tensors_path,
                _key(layer, "g_prog"),
                f"{label} devices not at {g_stuck:g} µS",
                f"stuck devices at the {label} conductance of the hardware in {json_path.name}",
            )
    if float(tensors["w_max"]) < 0:
        raise _fail(tensors_path, _key(layer, "w_max"), f"{float(tensors['w_max']):g}", "≥ 0")
    seed = int(tensors["chip_seed"])
    if seed != entry["seed"] or not 0 <= seed <= MAX_SEED:
        raise _fail(tensors_path, _key(layer, "chip_seed"), f"{seed}", f"{entry['seed']} as in {json_path.name}")
    t = float(tensors["chip_time"])
    if t != float(entry["time_s"]):
        raise _fail(tensors_path, _key(layer, "chip_time"), f"{t:g} s", f"{entry['time_s']:g} s as in {json_path.name}")
    try:
        devices.check_time(hw.drift, t)
    except ValueError as exc:
        raise _fail(tensors_path, _key(layer, "chip_time"), f"{t:g} s ({exc})", "a valid chip time") from None
    for name in ("dac_range", "adc_range"):
        r = tensors.get(name)
        if r is not None and r.numel() and not bool((r > 0).all()):
            raise _fail(tensors_path, _key(layer, name), f"range {r.min().item():g}", "calibrated ranges > 0")


def _compare_derived(tensors_path: Path, json_path: Path, layer: AnalogLayer, tensors: dict[str, torch.Tensor]) -> None:
    """The stored derived buffers must be those recomputed from the chip state under the JSON's hardware."""
    for name in DERIVED_BUFFERS:
        key = _key(layer, name)
        want: torch.Tensor | None = getattr(layer, name)
        got = tensors.get(name)
        if want is None:
            if got is not None:
                raise _fail(
                    tensors_path, key, "present", f"absent (the hardware in {json_path.name} has no {name} buffer)"
                )
            continue
        if got is None:
            raise _fail(tensors_path, key, "missing", f"a tensor of shape {tuple(want.shape)}")
        why = f"recomputed with the hardware in {json_path.name}"
        _check_tensor(tensors_path, key, got, tuple(want.shape), (want.dtype,), why)
        ref = want.detach().cpu()
        if not ref.is_floating_point():
            if not torch.equal(got, ref):
                raise _fail(tensors_path, key, "differs from the recomputed one", f"{ref.tolist()}")
            continue
        diff = float((got.double() - ref.double()).abs().max()) if ref.numel() else 0.0
        scale = float(ref.double().abs().max()) if ref.numel() else 0.0
        if diff > DERIVED_RTOL * scale:
            raise _fail(
                tensors_path,
                key,
                f"differs from the value recomputed from the chip state by up to {diff:.3g} (the hardware in "
                f"{json_path.name} was edited, or the tensors are corrupt)",
                f"equal within {DERIVED_RTOL:g}·{scale:.3g}",
            )


def _check_hashes(tensors_path: Path, json_path: Path, meta: dict[str, Any]) -> None:
    actual = sha256_file(tensors_path)
    if actual != meta["tensors_sha256"]:
        raise _fail(
            tensors_path,
            "tensors_sha256",
            f"the file's SHA-256 is {actual} (file corrupt or replaced)",
            f"{meta['tensors_sha256']} as recorded in {json_path.name}",
        )
    content = _content_sha256(meta)
    if content != meta["content_sha256"]:
        raise _fail(
            json_path,
            "content_sha256",
            f"the content's SHA-256 is {content} (file edited or corrupt)",
            f"{meta['content_sha256']} as recorded",
        )
