"""Shipped data files found by name: ONE way to resolve "a built-in name, or a path to a file".

Hardware presets (``xbarlab/assets/presets``), built-in sweep files (``xbarlab/experiments/configs`` and
``xbarlab/papers/*/sweeps``) and the shipped P3 configs (``xbarlab/papers/p3/configs``) are YAML files in folders of
the package; their names are the file stems (``rram``, ``p1-r1-read-noise``, ``lenet5-fmnist-sigma0.5``: a name
may hold a dot). :func:`list_data_files` lists the names (sorted), :func:`data_files` maps them to their files
and :func:`resolve_data_file` turns a command-line or YAML value into a file:

* an existing file path wins (``--hw rram`` reads ``./rram`` when that file exists), as ``--config FILE|NAME`` and
  ``xbarlab sweep FILE`` document it; then
* the value, exactly as written, is a shipped name;
* anything else is refused with one :class:`UnknownDataFileError` (a :class:`xbarlab.schema.ConfigError` and a
  ``KeyError``), one line naming the key, the kind, the value and the sorted names::

      --hw: no such file or hardware preset 'rram2'; allowed: a hardware YAML file or a hardware preset (fefet,
      ideal, pcm-i, pcm-ii, pcm-nandakumar, rram, rram-ir)
      preset: unknown hardware preset 'rram2'; allowed: one of fefet, ideal, pcm-i, ...   (names only)

A name shipped twice (in two folders, or as ``NAME.yaml`` and ``NAME.yml``) is a packaging error: ``RuntimeError``.
The folders are plain data on disk; this module imports nothing but :mod:`xbarlab.schema` (no paper code).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from xbarlab.schema import ConfigError

__all__ = ["DEFAULT_SUFFIXES", "UnknownDataFileError", "data_files", "list_data_files", "resolve_data_file"]

DEFAULT_SUFFIXES: tuple[str, ...] = (".yaml", ".yml")
"""File endings that make a file of a folder a data file (its name is the stem)."""


class UnknownDataFileError(ConfigError, KeyError):
    """A value that is neither an existing file nor a shipped name: a :class:`ConfigError` (``path`` is the key,
    ``value`` the value, ``allowed`` lists the names) that is also a ``KeyError`` (a failed lookup by name)."""

    __str__ = ValueError.__str__  # the message as is (KeyError.__str__ would quote it)


def data_files(
    folders: Sequence[Path],
    *,
    kind: str = "data file",
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,
    exclude: Collection[str] = (),
) -> dict[str, Path]:
    """Name (file stem) → file for every file of ``folders`` ending in one of ``suffixes``, sorted by name.

    ``exclude``: stems that are not data files (``index`` of the presets). A missing folder has no files; a name
    found twice raises ``RuntimeError`` naming the ``kind`` and both files.
    """
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix not in suffixes or path.stem in exclude or not path.is_file():
                continue
            if path.stem in found:
                raise RuntimeError(f"{kind} {path.stem!r} is shipped twice: {found[path.stem]} and {path}")
            found[path.stem] = path
    return dict(sorted(found.items()))


def list_data_files(
    folders: Sequence[Path],
    *,
    kind: str = "data file",
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,
    exclude: Collection[str] = (),
) -> list[str]:
    """The sorted names of the data files of ``folders`` (see :func:`data_files`)."""
    return list(data_files(folders, kind=kind, suffixes=suffixes, exclude=exclude))


def resolve_data_file(
    value: str | Path,
    *,
    kind: str,
    folders: Sequence[Path],
    suffixes: Sequence[str] = DEFAULT_SUFFIXES,
    exclude: Collection[str] = (),
    key: str | None = None,
    accept_paths: bool = True,
    file_hint: str = "a YAML file",
) -> Path:
    """The file ``value`` stands for: ``Path(value)`` itself when it is an existing file (and ``accept_paths``),
    else the shipped file named ``value`` (exactly: ``str(value)`` is a stem in ``folders``).

    ``kind`` names the data files in messages (``hardware preset``, ``built-in sweep``); ``key`` is the option or
    field the value came from (default: ``kind``); ``file_hint`` says what file is allowed (``a hardware YAML
    file``). Neither raises :class:`UnknownDataFileError` listing the sorted names.
    """
    if accept_paths and Path(value).is_file():
        return Path(value)
    files = data_files(folders, kind=kind, suffixes=suffixes, exclude=exclude)
    name = str(value)
    if name in files:
        return files[name]
    names = ", ".join(files)
    if accept_paths:
        raise UnknownDataFileError(
            key or kind, name, f"{file_hint} or a {kind} ({names})", f"no such file or {kind} {name!r}"
        )
    raise UnknownDataFileError(key or kind, name, f"one of {names}", f"unknown {kind} {name!r}")
