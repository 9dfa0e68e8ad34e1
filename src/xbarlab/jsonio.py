"""JSON output that strict parsers accept: non-finite floats become the strings "inf", "-inf" and "nan".

Python's ``json`` writes ``Infinity``/``NaN``, which ``jq``, JavaScript and most other readers reject. Result files
(an infinite SNR, an infinite ON/OFF ratio) go through :func:`write_json` instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from xbarlab.atomic import atomic_write_text

__all__ = ["json_safe", "write_json"]


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (also inside dicts, lists and tuples) replaced by its string."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as strict JSON (indent 2) atomically (:func:`xbarlab.atomic.atomic_write`)."""
    atomic_write_text(path, json.dumps(json_safe(payload), indent=2, default=str, allow_nan=False) + "\n")
