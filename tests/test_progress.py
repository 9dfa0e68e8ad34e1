"""xbarlab.progress: status lines and the bar go to stderr, nothing at all when disabled."""

from __future__ import annotations

import pytest

from xbarlab.progress import log, progress_bar


def test_log_writes_one_line_to_stderr_only_when_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    log(True, "generating canvases")
    log(False, "hidden")
    out = capsys.readouterr()
    assert out.err == "generating canvases\n"
    assert out.out == ""


def test_disabled_bar_shows_nothing_and_ignores_calls(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(False, 3, "chips (x)") as bar:
        assert not bar.active
        bar.advance("last acc 1.00%")
        bar.update(completed=2, total=5, text="t")
    assert bar.total == 5
    assert capsys.readouterr() == ("", "")


def test_enabled_bar_runs_without_a_terminal_and_leaves_stdout_alone(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(True, None, "sweep s", transient=False, elapsed=True) as bar:
        assert bar.active
        bar.update(completed=1, total=4, text="ETA 00:10")
        bar.advance()
    assert not bar.active and bar.total == 4
    out = capsys.readouterr()
    assert out.out == ""
    assert "sweep s" in out.err and "2/4" in out.err  # not transient: the final bar is printed
    with progress_bar(True, 2, "chips (x)") as bar:  # transient: without a terminal only rich's newline is left
        bar.advance("last acc 90.00%")
    out = capsys.readouterr()
    assert out.out == "" and out.err.strip() == ""
