"""Presets are data files (``xbarlab/assets/presets/*.yaml``); their validated values did not move."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from xbarlab import hardware
from xbarlab.hardware import ConfigError, HardwareConfig
from xbarlab.presets import PRESET_DIR, list_presets, load_preset, preset_dict

ROOT = Path(__file__).resolve().parents[1]

BEFORE = {
    "ideal": (
        "31ba373cb8887f651e30a3a0d5a03f90ea877c3bee7f66eaae3ee34173c0d699",
        "a55dc1c6e8bd834bad2e2178c6adbc100b7b2a451df0faac7ce3268b13928dec",
    ),
    "fefet": (
        "d31dc6b36e90e64e68aeb43c3e679ad357248948fbb06b898c28a6d9769181c1",
        "ce91eb7be54bfe03ad782009cd8d566096c48c7ee4ffba6ef0259e7d495c90b5",
    ),
    "pcm-i": (
        "f1493ea5a959d3e5ef78c52772eaf97af3951423f88759098444773007216213",
        "4518eba82c43119c1770b1af9abab280eb552a97e31efb9493730d9cdc4fe26b",
    ),
    "pcm-ii": (
        "166a0a48fe2c5d6c0548e2e175967e91a70a1b5732ed037e8fc0fdd81323d7cd",
        "ab0ebd93c65a2e8a8b1a966898e133b7cc089da069df58486a6ff9f310d26c1c",
    ),
    "rram": (
        "639af0989796dcd9c2df73e9278ea87a8a8e419487d3496801c70ff55c4f36e4",
        "6d32e20b5f960e3183298d908c5cb28c56405fe6086382c97ce0f003551edfb0",
    ),
    "rram-ir": (
        "088f8ffc056dc462effd3bc95dac16808fc43201091aa30970372576ddf49eb6",
        "12228ae231caa222f6f7ae939c32a5c3cf24229994cbe1ce93b32813a581b2a6",
    ),
    "pcm-nandakumar": (
        "2dc7482dd7cf1567c78570513da9e7f2f17c1fce0d3e16949207c76af2cc2f50",
        "7c52a963b7a1613e0dd79a81f72e93762d3a1edbeb5babf7a66b50f21ee9cb2f",
    ),
}
"""SHA-256 of each preset's validated config (``to_dict``, sorted JSON) and of its raw settings (``preset_dict``),
computed from the presets as Python dicts (commit 16f2190) before they became data files."""

DESCRIPTIONS_SHA256 = "b92899fd2db3a9f324c6c266da27f381cfaa09ba0d97e24e8f4e9bb2ebc31e09"
"""SHA-256 of ``json.dumps(list_presets())`` before the move (names, order and descriptions)."""


def _sha(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def test_every_preset_has_the_values_it_had_as_python() -> None:
    assert list(list_presets()) == list(BEFORE)
    got = {name: (_sha(load_preset(name).to_dict()), _sha(preset_dict(name))) for name in list_presets()}
    assert got == BEFORE
    assert hashlib.sha256(json.dumps(list_presets()).encode()).hexdigest() == DESCRIPTIONS_SHA256


def test_presets_are_data_files_shipped_as_package_data() -> None:
    assert PRESET_DIR == ROOT / "src" / "xbarlab" / "assets" / "presets"
    assert sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) == sorted([*BEFORE, "index"])
    for name in BEFORE:  # a file reads back to the same validated config as through the catalogue
        text = (PRESET_DIR / f"{name}.yaml").read_text()
        assert f"name: {name}\n" in text
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["xbarlab"]
    assert "assets/**/*" in data
    for pattern in data:  # every listed pattern ships something (no phantom entry like presets/*.yaml)
        assert list((ROOT / "src" / "xbarlab").glob(pattern)), pattern


def test_hardware_resolves_a_preset_key_from_the_files() -> None:
    hw = HardwareConfig.from_dict({"preset": "pcm-i", "crossbar": {"rows": 128}})
    assert hw.name == "pcm-i" and hw.crossbar.rows == 128 and hw.read_noise.offset_us == 0.13
    assert hw.device.r_on_ohm == 250e3 and hw.device.on_off_ratio == 40.0
    with pytest.raises(ConfigError) as info:
        HardwareConfig.from_dict({"preset": "nope"}, path="hardware")
    assert str(info.value) == (
        "hardware.preset: unknown hardware preset 'nope'; allowed: one of fefet, ideal, pcm-i, pcm-ii, pcm-nandakumar, "
        "rram, rram-ir"
    )


def test_preset_dict_is_a_fresh_copy() -> None:
    d = preset_dict("fefet")
    d["crossbar"]["rows"] = 1
    d["keep_digital"].append("x")
    assert preset_dict("fefet")["crossbar"]["rows"] == 64 and preset_dict("fefet")["keep_digital"] == ["@classifier"]


# ------------------------------------------------------------------------------------------------------------
# a broken preset folder is refused with the file and the field


@pytest.fixture
def preset_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for p in PRESET_DIR.glob("*.yaml"):
        (tmp_path / p.name).write_text(p.read_text())
    monkeypatch.setattr(hardware, "PRESET_DIR", tmp_path)
    hardware._preset_index.cache_clear()
    hardware._read_preset_file.cache_clear()
    yield tmp_path
    hardware._preset_index.cache_clear()
    hardware._read_preset_file.cache_clear()


def test_a_wrong_value_in_a_preset_file_names_file_and_field(preset_dir: Path) -> None:
    f = preset_dir / "rram.yaml"
    f.write_text(f.read_text().replace("bits: 8\n    bits_per_cell: 8", "bits: 99\n    bits_per_cell: 8"))
    with pytest.raises(ConfigError) as info:
        load_preset("rram")
    assert str(info.value) == f"{f}: hardware.weights.bits: invalid value 99; allowed: an integer in [1, 16]"
    assert load_preset("fefet").weights.bits == 8  # the other presets still load


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("description:", "descr:"), "{f}: descr: unknown key; allowed: the keys description, hardware"),
        (
            ("  name: rram\n", "  name: other\n"),
            "{f}: hardware.name: invalid value 'other'; allowed: 'rram' (the file's name)",
        ),
        (
            ("hardware:\n", "hardware:\n  preset: fefet\n"),
            "{f}: hardware.preset: invalid value 'fefet'; allowed: no 'preset' key (a preset names no other)",
        ),
        (
            ("  crossbar:\n", "  crossbar:\n    rows: 32\n"),
            "{f}:8: duplicate key 'rows' (first given on line 7); allowed: each key once per mapping",
        ),
    ],
)
def test_a_malformed_preset_file_is_refused(preset_dir: Path, edit: tuple[str, str], message: str) -> None:
    f = preset_dir / "rram.yaml"
    text = f.read_text()
    assert edit[0] in text
    f.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ValueError) as info:
        load_preset("rram")
    assert str(info.value) == message.format(f=f)


def test_index_and_files_must_agree(preset_dir: Path) -> None:
    (preset_dir / "extra.yaml").write_text((preset_dir / "rram.yaml").read_text())
    with pytest.raises(ConfigError) as info:
        list_presets()
    assert str(info.value).startswith(f"{preset_dir / 'index.yaml'}: presets: invalid value ['ideal', 'fefet',")
    assert str(info.value).endswith(
        "allowed: each preset file of the folder listed once: " + ", ".join(sorted([*BEFORE, "extra"]))
    )
