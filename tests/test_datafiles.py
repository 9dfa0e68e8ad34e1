"""xbarlab.datafiles: the one resolver of "a shipped name, or a path to a YAML file" (presets, sweeps, P3 configs)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import typer

from xbarlab.datafiles import UnknownDataFileError, data_files, list_data_files, resolve_data_file
from xbarlab.hardware import PRESET_DIR, ConfigError, preset_file
from xbarlab.presets import list_presets

SHIPPED = Path(__file__).resolve().parents[1] / "src" / "xbarlab"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A data folder: ``b.yaml``, ``a.yml``, ``index.yaml``, a text file and a subfolder that ends in ``.yaml``."""
    root = tmp_path / "shipped"
    root.mkdir()
    for name in ("b.yaml", "a.yml", "index.yaml", "notes.txt"):
        (root / name).write_text("x: 1\n")
    (root / "dir.yaml").mkdir()
    return root


# -------------------------------------------------------------------------------------------------- listing
def test_listing_returns_the_sorted_stems_of_the_yaml_files(folder: Path) -> None:
    assert list_data_files([folder]) == ["a", "b", "index"]  # not notes.txt, not the folder dir.yaml
    assert list_data_files([folder], exclude=("index",)) == ["a", "b"]
    assert list_data_files([folder], suffixes=(".yaml",), exclude=("index",)) == ["b"]
    assert data_files([folder], exclude=("index",)) == {"a": folder / "a.yml", "b": folder / "b.yaml"}
    assert list_data_files([folder.parent / "missing"]) == []


def test_listing_the_shipped_folders() -> None:
    presets = list_data_files([PRESET_DIR], exclude=("index",))
    assert presets == ["fefet", "ideal", "pcm-i", "pcm-ii", "pcm-nandakumar", "rram", "rram-ir"]
    assert presets == sorted(list_presets())  # the same names as index.yaml, sorted
    configs = list_data_files([SHIPPED / "papers" / "p3" / "configs"])
    assert configs == [
        "lenet5-fmnist-sigma0.5",
        "lenet5-fmnist-sigma1",
        "lenet5-fmnist-weight-sigma1",
        "resnet20-fmnist-sigma0.5",
    ]


def test_a_name_shipped_twice_is_refused(folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.yaml").write_text("x: 2\n")
    with pytest.raises(RuntimeError, match=r"^thing 'b' is shipped twice: .*shipped/b\.yaml and .*other/b\.yaml$"):
        list_data_files([folder, other], kind="thing")
    (folder / "a.yaml").write_text("x: 3\n")  # a.yml and a.yaml in one folder
    with pytest.raises(RuntimeError, match=r"^data file 'a' is shipped twice"):
        data_files([folder], exclude=("index",))


# -------------------------------------------------------------------------------------------------- resolving
def test_a_name_resolves_to_the_shipped_file(folder: Path) -> None:
    assert resolve_data_file("a", kind="thing", folders=[folder]) == folder / "a.yml"
    assert preset_file("rram") == PRESET_DIR / "rram.yaml"
    assert preset_file("pcm-nandakumar", key="--hw", accept_paths=True) == PRESET_DIR / "pcm-nandakumar.yaml"

    from xbarlab.experiments.spec import builtin_sweep
    from xbarlab.papers.p3 import config_path

    assert builtin_sweep("p1-r1-read-noise") == SHIPPED / "papers" / "p1" / "sweeps" / "p1-r1-read-noise.yaml"
    p3_configs = SHIPPED / "papers" / "p3" / "configs"
    assert config_path("lenet5-fmnist-sigma0.5") == p3_configs / "lenet5-fmnist-sigma0.5.yaml"


def test_a_path_resolves_to_itself_and_an_existing_file_wins_over_a_name(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "mine.yaml"
    own.write_text("x: 1\n")
    assert resolve_data_file(own, kind="thing", folders=[folder]) == own
    assert resolve_data_file(str(own), kind="thing", folders=[folder]) == own
    monkeypatch.chdir(tmp_path)
    Path("b").write_text("x: 1\n")  # a file named like a shipped name: the file wins
    assert resolve_data_file("b", kind="thing", folders=[folder]) == Path("b")
    # names only: the file is not looked at
    assert resolve_data_file("b", kind="thing", folders=[folder], accept_paths=False) == folder / "b.yaml"
    with pytest.raises(UnknownDataFileError, match=r"^thing: unknown thing 'mine.yaml'; allowed: one of a, b, index$"):
        resolve_data_file("mine.yaml", kind="thing", folders=[folder], accept_paths=False)


def test_a_name_matches_exactly(folder: Path) -> None:
    for value in ("b.yaml", "./b", "sub/b", "B"):
        with pytest.raises(UnknownDataFileError):
            resolve_data_file(value, kind="thing", folders=[folder], exclude=("index",))


def test_an_unknown_name_lists_the_sorted_names(folder: Path) -> None:
    with pytest.raises(UnknownDataFileError) as info:
        resolve_data_file("c", kind="thing", folders=[folder], exclude=("index",), key="--thing")
    assert str(info.value) == "--thing: no such file or thing 'c'; allowed: a YAML file or a thing (a, b)"
    exc = info.value
    assert isinstance(exc, ConfigError) and isinstance(exc, KeyError)
    assert (exc.path, exc.value, exc.allowed) == ("--thing", "c", "a YAML file or a thing (a, b)")
    again = pickle.loads(pickle.dumps(exc))  # worker processes re-raise it in the parent
    assert type(again) is UnknownDataFileError and str(again) == str(exc)

    with pytest.raises(UnknownDataFileError) as info:
        preset_file("rram2")
    assert str(info.value) == (
        "preset: unknown hardware preset 'rram2'; allowed: one of fefet, ideal, pcm-i, pcm-ii, pcm-nandakumar, "
        "rram, rram-ir"
    )
    with pytest.raises(UnknownDataFileError) as info:
        preset_file("rram2", key="--hw", accept_paths=True)
    assert str(info.value) == (
        "--hw: no such file or hardware preset 'rram2'; allowed: a hardware YAML file or a hardware preset "
        "(fefet, ideal, pcm-i, pcm-ii, pcm-nandakumar, rram, rram-ir)"
    )


def test_the_callers_report_the_names_in_one_style() -> None:
    from xbarlab.cli.core import _load_hardware
    from xbarlab.experiments.spec import SweepSpecError, builtin_sweep, list_builtin_sweeps, load_spec
    from xbarlab.papers.p3 import config_path, list_configs

    sweeps = ", ".join(list_builtin_sweeps())
    assert sweeps.startswith("example-presets, p1-r1-read-noise, ") and list_builtin_sweeps() == sorted(
        list_builtin_sweeps()
    )
    with pytest.raises(KeyError) as key_info:
        builtin_sweep("nope")
    assert str(key_info.value) == f"sweep: unknown built-in sweep 'nope'; allowed: one of {sweeps}"
    with pytest.raises(SweepSpecError) as spec_info:
        load_spec("nope")
    assert str(spec_info.value) == (
        "nope: <file>: no such file or built-in sweep 'nope'; allowed: a YAML sweep file or a built-in sweep "
        f"({sweeps})"
    )
    with pytest.raises(ConfigError) as config_info:
        config_path("nope")
    assert str(config_info.value) == (
        "config: no such file or shipped config 'nope'; allowed: a YAML file of P3Config fields or a shipped config "
        f"({', '.join(list_configs())})"
    )
    with pytest.raises(typer.BadParameter) as hw_info:
        _load_hardware("nosuch")
    assert hw_info.value.message == (
        "--hw: no such file or hardware preset 'nosuch'; allowed: a hardware YAML file or a hardware preset "
        "(fefet, ideal, pcm-i, pcm-ii, pcm-nandakumar, rram, rram-ir)"
    )


def test_cli_hw_reads_a_preset_by_name_and_a_file_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xbarlab.cli.core import _load_hardware

    hw = _load_hardware("pcm-i")
    assert hw.name == "pcm-i" and hw.device.r_on_ohm == 250e3
    monkeypatch.chdir(tmp_path)
    Path("pcm-i").write_text("name: mine\ncrossbar: {rows: 32}\n")  # an existing file wins over the preset name
    hw = _load_hardware("pcm-i")
    assert hw.name == "mine" and hw.crossbar.rows == 32
