"""Errors raised by the data loaders."""

from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """Base class of the data set errors."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A data set directory or file is missing.

    The message says where the loader looked, which file was missing and how to get the data.
    """

    def __init__(self, dataset: str, looked_in: Path | str, missing: str, how_to_get: str) -> None:
        self.dataset = dataset
        self.looked_in = Path(looked_in)
        self.missing = missing
        self.how_to_get = how_to_get
        super().__init__(f"{dataset}: {missing} not found (looked in {self.looked_in}). {how_to_get}".rstrip())


class DatasetCorruptError(DatasetError, ValueError):
    """A data set file exists but its content is not in the expected format."""

    def __init__(self, dataset: str, path: Path | str, problem: str, how_to_get: str = "") -> None:
        self.dataset = dataset
        self.path = Path(path)
        self.problem = problem
        msg = f"{dataset}: corrupt file {self.path}: {problem}."
        if how_to_get:
            msg += f" {how_to_get}"
        super().__init__(msg)
