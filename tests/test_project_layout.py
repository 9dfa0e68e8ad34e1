"""Project set-up that the suite relies on: the timeout plugin and the ``slow`` marker are really in use."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:  # type: ignore[type-arg]
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return dict(tomllib.loads((ROOT / "pyproject.toml").read_text()))


def test_make_test_installs_pytest_timeout_and_a_global_timeout_is_set() -> None:
    project = _pyproject()
    assert any(dep.startswith("pytest-timeout") for dep in project["project"]["optional-dependencies"]["test"])
    assert "'.[test]'" in (ROOT / "Makefile").read_text()  # make test installs the test extra from pyproject
    assert int(project["tool"]["pytest"]["ini_options"]["timeout"]) == 600


def _marks(decorators: list[ast.expr]) -> dict[str, ast.expr]:
    out = {}
    for d in decorators:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Attribute) and ast.unparse(target).startswith("pytest.mark."):
            out[target.attr] = d
    return out


def test_slow_tests_exist_and_each_has_its_own_timeout() -> None:
    slow = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                marks = _marks(node.decorator_list)
                if "slow" in marks:
                    slow.append(node.name)
                    timeout = marks.get("timeout")
                    assert isinstance(timeout, ast.Call), f"{path.name}::{node.name}: slow without a timeout"
                    seconds = ast.literal_eval(timeout.args[0])
                    assert 0 < seconds <= 600, f"{path.name}::{node.name}: timeout {seconds}"
    assert {
        "test_demo_quick",
        "test_resume_after_sigkill",
        "test_pipeline_writes_every_stage_and_a_consistent_table",
    } <= set(slow)


def test_every_papers_md_citation_has_its_section_in_docs_papers_md() -> None:
    headings = set(re.findall(r"^## §(\S+) ", (ROOT / "docs" / "papers.md").read_text(), re.M))
    cited: dict[str, str] = {}
    for path in sorted((ROOT / "src" / "xbarlab").rglob("*")):
        if path.suffix not in (".py", ".yaml"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "papers.md" in line:
                for label in re.findall(r"§(\d+(?:\.\d+)*)", line):
                    cited.setdefault(label, f"{path.relative_to(ROOT)}:{n}")
    assert len(cited) >= 15
    missing = {label: where for label, where in cited.items() if label not in headings}
    assert not missing, f"cited but not in docs/papers.md: {missing}"


_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)\s]*)?\)")


def _relative_links(path: Path) -> list[str]:
    return [t for t in _LINK.findall(path.read_text()) if "://" not in t and not t.startswith("mailto:")]


def test_readme_is_a_front_page_of_at_most_160_lines_opening_with_the_two_setup_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines; results belong in docs/results/"
    block = "\n".join(lines[:6])
    assert "make demo" in block and "make test" in block


@pytest.mark.parametrize(
    "page", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]
)
def test_every_relative_link_in_the_docs_points_to_an_existing_file(page: str) -> None:
    path = ROOT / page
    broken = [t for t in _relative_links(path) if not (path.parent / t).exists()]
    assert not broken, f"{page}: links to missing files: {broken}"
