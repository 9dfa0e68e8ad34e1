"""Saved chips are never trusted blindly: every corrupted or edited chip file is refused with one line."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import xbarlab
from xbarlab.checkpoint import sha256_file
from xbarlab.chip import needs_calibration
from xbarlab.chipfile import CHIP_FORMAT, ChipFileError, _content_sha256, chip_paths
from xbarlab.layers import NotProgrammedError, analog_layers

X = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def _hw(**overrides: Any) -> xbarlab.HardwareConfig:
    """RRAM preset (frozen read noise σ 0.1, drift, 8-bit DAC) with both layers analog."""
    return xbarlab.load_preset("rram").override({"keep_digital": [], **overrides})


def _saved(tmp_path: Path, **overrides: Any) -> tuple[nn.Module, Path]:
    chip = xbarlab.program(xbarlab.convert(_model(), _hw(**overrides)), 7)
    xbarlab.drift(chip, 100.0)
    xbarlab.calibrate(chip, [X])
    return chip, xbarlab.save_chip(chip, tmp_path / "chip")


def _rehash_json(meta: dict[str, Any], tensors_path: Path) -> dict[str, Any]:
    """What someone re-hashing an edited chip would write (so only the content checks can catch the edit)."""
    meta["tensors_sha256"] = sha256_file(tensors_path)
    meta["content_sha256"] = _content_sha256(meta)
    return meta


def _edit_json(base: Path, edit: Callable[[dict[str, Any]], None], *, rehash: bool = True) -> None:
    _, tensors_path, json_path = chip_paths(base)
    meta = json.loads(json_path.read_text())
    edit(meta)
    if rehash:
        meta = _rehash_json(meta, tensors_path)
    json_path.write_text(json.dumps(meta))


def _edit_tensors(base: Path, edit: Callable[[dict[str, torch.Tensor]], None], *, rehash: bool = True) -> None:
    _, tensors_path, json_path = chip_paths(base)
    state = load_file(str(tensors_path))
    edit(state)
    save_file(state, str(tensors_path))
    if rehash:
        json_path.write_text(json.dumps(_rehash_json(json.loads(json_path.read_text()), tensors_path)))


def _refused(base: Path, *parts: str) -> str:
    """Load must raise a one-line ValueError that contains every part (file name, tensor/key, what)."""
    with pytest.raises(ValueError) as info:
        xbarlab.load_chip(_model(), base)
    message = str(info.value)
    assert isinstance(info.value, ChipFileError)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)
    return message


# ------------------------------------------------------------------------------------------------ round trips


def test_round_trip_frozen_noise_chip_gives_identical_outputs(tmp_path: Path) -> None:
    chip, base = _saved(tmp_path)
    meta = json.loads((tmp_path / "chip.json").read_text())
    assert meta["format"] == CHIP_FORMAT == "xbarlab-chip/2"
    assert meta["tensors_sha256"] == sha256_file(tmp_path / "chip.safetensors")
    assert meta["content_sha256"] == _content_sha256(meta) and len(meta["content_sha256"]) == 64
    loaded = xbarlab.load_chip(_model(), base)
    with torch.no_grad():
        assert torch.equal(loaded(X), chip(X))
    for a, b in zip(analog_layers(loaded), analog_layers(chip), strict=True):
        assert a.read_xi is not None and torch.equal(a.w_ni, b.w_ni)  # type: ignore[arg-type]
        assert float(a.chip_time) == 100.0 and int(a.chip_seed) == 7  # type: ignore[arg-type]


def test_round_trip_per_mvm_adc_chip_continues_its_noise_stream(tmp_path: Path) -> None:
    chip, base = _saved(tmp_path, **{"read_noise.mode": "per_mvm", "adc.bits": 6, "crossbar.rows": 8})
    conv = analog_layers(chip)[0]
    assert conv.layout.tiles_r == 2 and conv.tile_channels is not None and conv.var_tiles is not None
    loaded = xbarlab.load_chip(_model(), base)
    with torch.no_grad():
        first = chip(X)
        assert torch.equal(loaded(X), first)
        assert torch.equal(loaded(X), chip(X)) and not torch.equal(chip(X), first)


def test_uncalibrated_chip_loads_and_still_asks_for_calibration(tmp_path: Path) -> None:
    chip = xbarlab.program(xbarlab.convert(_model(), _hw()), 3)
    base = xbarlab.save_chip(chip, tmp_path / "raw")
    loaded = xbarlab.load_chip(_model(), base)
    assert needs_calibration(loaded)
    with pytest.raises(NotProgrammedError, match="DAC range not calibrated"):
        loaded(X)


# ------------------------------------------------------------------------------------------------ tensors


def test_missing_g_prog_is_refused(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)
    _edit_tensors(base, lambda s: s.pop("0.g_prog"))
    _refused(base, "chip.safetensors: 0.g_prog: missing; expected a tensor of shape (1, 1, 2, 1, 1, 64, 64)")


def test_nan_w_ni_is_refused(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)

    def poison(state: dict[str, torch.Tensor]) -> None:
        state["0.w_ni"][0, 0, 1, 1] = float("nan")

    _edit_tensors(base, poison)
    _refused(base, "chip.safetensors: 0.w_ni: 1 non-finite value(s)", "expected finite values")


def test_wrong_shape_w_ni_is_refused(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)

    def reshape(state: dict[str, torch.Tensor]) -> None:
        state["2.w_ni"] = state["2.w_ni"][:, :100].contiguous()

    _edit_tensors(base, reshape)
    _refused(base, "chip.safetensors: 2.w_ni: shape (5, 100); expected (5, 144)")


def _zero_tensor_bytes(path: Path, key: str) -> None:
    """Overwrite the data bytes of one tensor of a safetensors file with zeros (header untouched)."""
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    start, end = header[key]["data_offsets"]
    data[8 + n + start : 8 + n + end] = bytes(end - start)
    path.write_bytes(bytes(data))


def test_zeroed_tensor_bytes_are_refused(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)
    _zero_tensor_bytes(tmp_path / "chip.safetensors", "0.w_ni")
    _refused(base, "chip.safetensors: 0.w_ni: differs from the value recomputed from the chip state")
    _, base = _saved(tmp_path)
    _zero_tensor_bytes(tmp_path / "chip.safetensors", "0.g_prog")  # the weights no longer follow from the state
    _refused(base, "chip.safetensors: 0.w_ni: differs")


def test_flipped_byte_in_a_digital_tensor_is_caught_by_the_hash(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)
    path = tmp_path / "chip.safetensors"
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    start, _ = json.loads(data[8 : 8 + n])["2.bias"]["data_offsets"]
    data[8 + n + start] ^= 0x01  # lowest mantissa bit of a bias: finite, plausible, wrong
    path.write_bytes(bytes(data))
    _refused(base, "chip.safetensors: tensors_sha256: the file's SHA-256 is", "as recorded in chip.json")


def test_unknown_tensors_and_buffers_the_hardware_has_not_are_refused(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)
    _edit_tensors(base, lambda s: s.update({"0.extra": torch.zeros(3)}))
    _refused(base, "chip.safetensors: 0.extra: unknown tensor")
    _, base = _saved(tmp_path)
    _edit_tensors(base, lambda s: s.update({"2.tile_channels": torch.zeros(1, dtype=torch.int64)}))
    _refused(base, "chip.safetensors: 2.tile_channels: present; expected absent")


def test_chip_state_values_are_checked(tmp_path: Path) -> None:
    cases: list[tuple[Callable[[dict[str, torch.Tensor]], None], str]] = [
        (lambda s: s["0.g_prog"].__setitem__((0, 0, 0, 0, 0, 0, 0), -1.0), "0.g_prog: negative conductance -1 µS"),
        (lambda s: s["0.fault_code"].__setitem__((0, 0, 0, 0, 0, 0, 0), 3), "0.fault_code: code 3"),
        (lambda s: s.__setitem__("0.chip_seed", torch.tensor(8)), "0.chip_seed: 8; expected 7 as in chip.json"),
        (lambda s: s.__setitem__("0.dac_range", torch.tensor(0.0)), "0.dac_range: range 0; expected calibrated"),
        (lambda s: s.__setitem__("0.w_max", s["0.w_max"].float()), "0.w_max: dtype torch.float32; expected"),
        (lambda s: s.pop("0.dac_signed"), "0.dac_signed: missing; expected it with 0.dac_range"),
    ]
    for edit, part in cases:
        _, base = _saved(tmp_path)
        _edit_tensors(base, edit)
        _refused(base, f"chip.safetensors: {part}")


def test_stuck_devices_must_match_the_fault_codes(tmp_path: Path) -> None:
    _, base = _saved(tmp_path, **{"faults.sa1_rate": 0.05})

    def unstick(state: dict[str, torch.Tensor]) -> None:
        g = state["0.g_prog"]
        g[state["0.fault_code"] == 2] *= 0.5

    _edit_tensors(base, unstick)
    _refused(base, "chip.safetensors: 0.g_prog: SA1 devices not at")
    _, base = _saved(tmp_path)  # no faults configured: a fault code is an inconsistency
    _edit_tensors(base, lambda s: s["0.fault_code"].__setitem__((0, 0, 0, 0, 0, 0, 0), 1))
    _refused(base, "chip.safetensors: 0.fault_code: 1 SA0 device(s); expected none (SA0 rate 0 in chip.json)")


# ------------------------------------------------------------------------------------------------ JSON


def test_json_edited_to_a_larger_crossbar_is_refused(tmp_path: Path) -> None:
    chip, base = _saved(tmp_path)
    assert chip.xbarlab_hw.crossbar.rows == 64
    _edit_json(base, lambda m: m["hardware"]["crossbar"].update({"rows": 128, "cols": 128}))
    _refused(base, "chip.safetensors: 0.g_prog: shape (1, 1, 2, 1, 1, 64, 64); expected (1, 1, 2, 1, 1, 128, 128)")


def test_json_edited_to_other_read_noise_is_refused_even_when_rehashed(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)
    _edit_json(base, lambda m: m["hardware"]["read_noise"].update({"sigma": 0.9}))
    _refused(base, "chip.safetensors: 0.w_ni: differs from the value recomputed", "hardware in chip.json was edited")
    _, base = _saved(tmp_path, **{"read_noise.mode": "per_mvm"})  # per-MVM noise: its variance gives it away
    _edit_json(base, lambda m: m["hardware"]["read_noise"].update({"sigma": 0.9}))
    _refused(base, "chip.safetensors: 0.var_ni: differs from the value recomputed")


def test_json_edited_without_rehash_is_caught_by_the_content_hash(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)
    _edit_json(base, lambda m: m["hardware"]["dac"].update({"bits": 6}), rehash=False)  # no tensor shows it
    _refused(base, "chip.json: content_sha256: the content's SHA-256 is", "(file edited or corrupt)")


def test_json_edited_to_no_drift_is_refused(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)
    _edit_json(base, lambda m: m["hardware"]["drift"].update({"kind": "none"}))
    _refused(base, "chip.safetensors: 0.nu: present; expected absent (no drift")


@pytest.mark.parametrize("key", ["hardware", "layers", "format", "content_sha256", "tensors_sha256"])
def test_missing_json_keys_are_one_line(tmp_path: Path, key: str) -> None:
    _, base = _saved(tmp_path)
    _edit_json(base, lambda m: m.pop(key), rehash=False)
    _refused(base, f"chip.json: {key}: missing; expected")


def test_bad_hardware_value_names_the_file_and_field(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)
    _edit_json(base, lambda m: m["hardware"]["crossbar"].update({"rows": 0}))
    _refused(base, "chip.json: hardware.crossbar.rows: invalid value 0")


def test_old_format_is_refused_with_a_re_save_hint(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)
    _edit_json(base, lambda m: m.update({"format": "xbarlab-chip/1"}), rehash=False)
    _refused(base, "chip.json: format: 'xbarlab-chip/1' is an old chip format", "re-save", "'xbarlab-chip/2'")


def test_layer_entries_must_match_the_tensors(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)
    _edit_json(base, lambda m: m["layers"]["0"].update({"time_s": 5.0}))
    _refused(base, "chip.safetensors: 0.chip_time: 100 s; expected 5 s as in chip.json")
    _, base = _saved(tmp_path)
    _edit_json(base, lambda m: m["layers"].pop("2"))
    _refused(base, "chip.json: layers: names ['0']; expected the analog layers")


def test_not_json_and_not_safetensors_are_one_line(tmp_path: Path) -> None:
    _, base = _saved(tmp_path)
    (tmp_path / "chip.json").write_text("{ nope")
    _refused(base, "chip.json: json: not valid JSON")
    _, base = _saved(tmp_path)
    (tmp_path / "chip.safetensors").write_bytes(b"\x00" * 16)
    _refused(base, "chip.safetensors: file: not a readable safetensors file")


def test_channels_last_chip_loads_with_channels_last_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3)).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 6, 6).to(memory_format=torch.channels_last)
    chip = xbarlab.program(xbarlab.convert(net, _hw()), 5)
    xbarlab.calibrate(chip, [x])
    base = xbarlab.save_chip(chip, tmp_path / "nhwc")
    loaded = xbarlab.load_chip(net, base)
    w_ni = analog_layers(loaded)[0].w_ni
    assert w_ni is not None and w_ni.is_contiguous(memory_format=torch.channels_last) and not w_ni.is_contiguous()
    with torch.no_grad():
        assert torch.equal(loaded(x), chip(x))
