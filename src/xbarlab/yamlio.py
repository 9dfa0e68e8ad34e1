"""Shared YAML reading: a safe loader that reads scientific notation (``1e-1``, ``50e3``) as floats.

PyYAML implements YAML 1.1, where a float needs a dot and a signed exponent (``5.0e+3``); ``1e-1`` and ``50e3``
are read as strings. YAML 1.2 (and every other parser people compare with) reads them as numbers, so
:class:`Loader` adds that resolver. Everything else is :class:`yaml.SafeLoader`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["FLOAT_PATTERN", "Loader", "load_yaml", "parse_value"]

FLOAT_PATTERN = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
"""Scientific notation without the YAML 1.1 requirements (dot, signed exponent): ``1e5``, ``1.5e-3``, ``-2E+4``."""


class Loader(yaml.SafeLoader):
    """Safe loader that also reads ``1e10`` / ``1e-5`` as floats (YAML 1.2), not as strings."""


Loader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT_PATTERN, list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """Parse one YAML document with :class:`Loader`; invalid YAML raises :class:`yaml.YAMLError`."""
    return yaml.load(text, Loader=Loader)


def parse_value(text: str) -> Any:
    """A command-line value read as YAML (``0.1`` → float, ``1e-1`` → float, ``[1, 2]`` → list, ``x`` → str).

    Text that is not valid YAML is returned unchanged (as a string).
    """
    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text
