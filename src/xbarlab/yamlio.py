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

__all__ = [
    "FLOAT_PATTERN",
    "KeyPath",
    "Loader",
    "YamlInputError",
    "load_document",
    "load_file",
    "load_with_lines",
    "load_yaml",
    "parse_assignments",
    "parse_value",
]

FLOAT_PATTERN = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
"""Scientific notation without the YAML 1.1 requirements (dot, signed exponent): ``1e5``, ``1.5e-3``, ``-2E+4``."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlInputError(yaml.YAMLError, ValueError):
    """Invalid YAML input: message ``<source>:<line>: <problem>`` (``line`` 1-based, None when unknown)."""

    def __init__(
        self, problem: str, *, source: str | None = None, line: int | None = None, key: str | None = None
    ) -> None:
        self.problem = problem
        self.source = source
        self.line = line
        self.key = key
        """Dotted key path of the offending key (a duplicate key in :func:`load_with_lines`), else None."""
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


KeyPath = tuple[str, ...]
"""A key path in a YAML document: mapping keys, and list indices as strings (``("grid", "chips")``)."""


def load_with_lines(text: str, source: str | None = None) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML text; returns the data (None for an empty text) and a map from key paths to 1-based lines.

    Invalid YAML raises :class:`YamlInputError` (``invalid YAML: ...`` with its line); a key given twice raises it
    with ``key`` set to the duplicate's dotted path and the line of its second occurrence.
    """
    loader = Loader(text)
    lines: dict[KeyPath, int] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return None, lines
        _walk(node, (), lines, source)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlInputError(f"invalid YAML: {exc.problem or exc}", source=source, line=line) from exc
    except YamlInputError:
        raise
    except yaml.YAMLError as exc:
        raise YamlInputError(f"invalid YAML: {exc}", source=source) from exc
    finally:
        loader.dispose()
    return data, lines


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], source: str | None) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise YamlInputError(
                    "duplicate key; allowed: each key once per mapping",
                    source=source,
                    line=line,
                    key=".".join((*path, key)),
                )
            seen.add(key)
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, str(i))] = item.start_mark.line + 1
            _walk(item, (*path, str(i)), lines, source)


def parse_assignments(items: list[str] | tuple[str, ...], *, option: str = "--set", example: str) -> dict[str, Any]:
    """``KEY=VALUE`` command-line items as ``{key: value}``, each value read by :func:`parse_value`.

    An item without ``=`` or with an empty key raises ``ValueError``:
    ``<option> '<item>': expected KEY=VALUE, e.g. <example>``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} {item!r}: expected KEY=VALUE, e.g. {example}")
        out[key.strip()] = parse_value(value)
    return out
