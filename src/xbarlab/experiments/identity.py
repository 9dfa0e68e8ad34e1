"""Trial identity: canonical JSON of a resolved trial configuration, its SHA-256, and grid-value labels.

A trial's identity is the SHA-256 of the canonical JSON of its resolved configuration (full hardware config,
model fingerprint, data, mitigation with all options, seed) with file locations left out: :func:`trial_hash`.
:data:`TRIAL_FORMAT` is part of every configuration; bump it when the meaning of a configuration changes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from xbarlab.schema import plain

__all__ = ["TRIAL_FORMAT", "canonical_json", "format_value", "plain", "trial_hash"]

TRIAL_FORMAT = 1
"""Version of the resolved trial configuration; part of every trial's identity."""


def canonical_json(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, tuples as lists (``Infinity`` for infinite floats)."""
    return json.dumps(plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True)


def _identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a trial configuration that defines it: locations (paths) left out, fingerprints kept."""
    ident = json.loads(canonical_json(config))
    model = ident.get("model", {})
    if model.get("sha256") and "checkpoint" in model:
        model["checkpoint"] = None
    if "data" in ident:
        ident["data"].pop("data_dir", None)
    return dict(ident)


def trial_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a resolved trial configuration (file locations excluded)."""
    return hashlib.sha256(canonical_json(_identity(config)).encode()).hexdigest()


def format_value(value: Any) -> str:
    """A short label for a grid value (``{rows: 64, cols: 64}`` → ``64×64``, other mappings as ``k=v`` lists,
    floats in ``g`` format)."""
    if isinstance(value, Mapping):
        if set(value) == {"rows", "cols"}:
            return f"{format_value(value['rows'])}×{format_value(value['cols'])}"
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "null"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
