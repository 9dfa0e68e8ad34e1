"""Shared YAML reading: ONE way to parse YAML everywhere in xbarlab (hardware files, sweep files, ``--set`` values).

* Scientific notation (``1e-1``, ``50e3``) is read as floats. PyYAML implements YAML 1.1, where a float needs a
  dot and a signed exponent (``5.0e+3``); ``1e-1`` and ``50e3`` would be strings. YAML 1.2 (and every other
  parser people compare with) reads them as numbers, so :class:`Loader` adds that resolver.
* A key given twice in one mapping is an error (PyYAML silently keeps the last one): :class:`YamlInputError`
  with the file and the line of the second occurrence.
* A file that holds no document (empty, only comments) is an error in :func:`load_document` /
  :func:`load_file`: an empty hardware file must not silently become the default hardware.

Everything else is :class:`yaml.SafeLoader`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["FLOAT_PATTERN", "Loader", "YamlInputError", "load_document", "load_file", "load_yaml", "parse_value"]

FLOAT_PATTERN = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
"""Scientific notation without the YAML 1.1 requirements (dot, signed exponent): ``1e5``, ``1.5e-3``, ``-2E+4``."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlInputError(yaml.YAMLError, ValueError):
    """Invalid YAML input: message ``<source>:<line>: <problem>`` (``line`` 1-based, None when unknown)."""

    def __init__(self, problem: str, *, source: str | None = None, line: int | None = None) -> None:
        self.problem = problem
        self.source = source
        self.line = line
        where = source or "<yaml>"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {problem}")


class Loader(yaml.SafeLoader):
    """Safe loader that reads ``1e10`` / ``1e-5`` as floats (YAML 1.2) and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first given on line {seen[key]}); allowed: each key once per mapping",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


Loader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_PATTERN, list("-+0123456789"))


def _as_input_error(exc: yaml.YAMLError, source: str | None) -> YamlInputError:
    """``source:line: invalid YAML: problem`` for any PyYAML error (line from its mark when it has one)."""
    if isinstance(exc, YamlInputError):
        return exc
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or str(exc)
        prefix = "" if problem.startswith("duplicate key") else "invalid YAML: "
        return YamlInputError(prefix + " ".join(problem.split()), source=source, line=line)
    return YamlInputError(f"invalid YAML: {' '.join(str(exc).split())}", source=source)


def load_yaml(text: str, source: str | None = None) -> Any:
    """Parse one YAML document with :class:`Loader` (empty text → ``None``).

    Invalid YAML and duplicate keys raise :class:`YamlInputError` (a ``yaml.YAMLError`` and a ``ValueError``)
    naming ``source`` and the line.
    """
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as exc:
        raise _as_input_error(exc, source) from exc


def load_document(text: str, source: str | None = None, *, what: str = "a YAML document") -> Any:
    """Like :func:`load_yaml`, but a text without a document (empty or only comments) is refused."""
    data = load_yaml(text, source)
    if data is None:
        raise YamlInputError(f"empty document; allowed: {what}", source=source, line=1)
    return data


def load_file(path: str | Path, *, what: str = "a YAML document") -> Any:
    """Read and parse a YAML file (see :func:`load_document`); an unreadable file is a one-line ``OSError``."""
    p = Path(path)
    try:
        text = p.read_text()
    except UnicodeDecodeError as exc:
        raise YamlInputError("not a text file (not UTF-8); allowed: a YAML file", source=str(p)) from exc
    except OSError as exc:
        raise OSError(exc.errno, f"{p}: cannot read ({exc.strerror})") from exc
    return load_document(text, str(p), what=what)


def parse_value(text: str) -> Any:
    """A command-line value read as YAML (``0.1`` → float, ``1e-1`` → float, ``[1, 2]`` → list, ``x`` → str).

    Text that is not valid YAML is returned unchanged (as a string).
    """
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text
