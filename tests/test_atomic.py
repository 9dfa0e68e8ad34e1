"""xbarlab.atomic: a failing writer leaves the old file intact and no temporary file behind."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import torch

from xbarlab.atomic import FILE_MODE, atomic_write, atomic_write_text
from xbarlab.checkpoint import save_state
from xbarlab.jsonio import write_json


class Boom(RuntimeError):
    pass


def _fail_after_partial(p: Path) -> None:
    p.write_text("half")
    raise Boom("writer failed")


def test_new_content_replaces_old(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    assert atomic_write_text(target, "first") == target
    atomic_write_text(target, "second µ")
    assert target.read_text(encoding="utf-8") == "second µ"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]
    assert stat.S_IMODE(target.stat().st_mode) == FILE_MODE == 0o644


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_failing_writer_keeps_old_file_and_leaves_no_temp(tmp_path: Path, exc: type[BaseException]) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")

    def writer(p: Path) -> None:
        p.write_text("half")
        raise exc("writer failed")

    with pytest.raises(exc):
        atomic_write(target, writer)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_failing_writer_creates_nothing_when_no_old_file(tmp_path: Path) -> None:
    with pytest.raises(Boom):
        atomic_write(tmp_path / "new.bin", _fail_after_partial)
    assert list(tmp_path.iterdir()) == []


def test_temp_file_keeps_target_suffix(tmp_path: Path) -> None:
    seen: list[str] = []
    atomic_write(tmp_path / "plot.png", lambda p: (seen.append(p.name), p.write_bytes(b"x")))
    assert seen[0].startswith(".plot.png.") and seen[0].endswith(".tmp.png")
    assert (tmp_path / "plot.png").read_bytes() == b"x"


def test_write_json_failure_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    write_json(target, {"a": 1.5, "b": float("inf")})
    assert target.read_text() == '{\n  "a": 1.5,\n  "b": "inf"\n}\n'
    with pytest.raises(TypeError):  # a set key cannot be encoded: nothing is written
        write_json(target, {(1, 2): 1})
    assert target.read_text() == '{\n  "a": 1.5,\n  "b": "inf"\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_checkpoint_state_written_through_helper(tmp_path: Path) -> None:
    out = save_state(tmp_path / "s", {"w": torch.arange(3.0), "epoch": 1})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["s.json", "s.safetensors"], (out, names)
    assert all(stat.S_IMODE((tmp_path / n).stat().st_mode) == 0o644 for n in names)
