"""One check that a data set fits a model, run BEFORE any work (evaluate, mitigate, distortion, sweeps, demo, train).

A model fed images of another shape either fails deep inside the forward pass (3-channel data on a 1-channel
model: a traceback in the middle of the run) or, worse, runs and scores nonsense (8×8 ``digits`` on a model
trained on 28×28 images: adaptive pooling makes the shapes fit, the accuracy is 8 %). :func:`check_model_input`
refuses both with one line ``<field>: …; allowed: …``:

1. the shape of one input (C×H×W) must equal the input shape of the data set the model was trained on (the
   checkpoint's ``dataset`` metadata, or an explicit ``input_shape`` entry);
2. one digital forward pass of one sample must run and give at least as many outputs as the data set has classes
   (this also covers models without metadata).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from xbarlab.data.errors import DatasetError
from xbarlab.data.registry import dataset_info

__all__ = ["DataShapeError", "check_model_input", "expected_input_shape"]


class DataShapeError(DatasetError, ValueError):
    """The data set does not fit the model (input shape or number of classes)."""


def _shape_text(shape: tuple[int, ...]) -> str:
    return "×".join(str(int(s)) for s in shape)


def expected_input_shape(meta: Mapping[str, Any] | None) -> tuple[int, ...] | None:
    """The C×H×W input shape a model was trained on, from its metadata (None when it does not say)."""
    if not meta:
        return None
    shape = meta.get("input_shape")
    if isinstance(shape, (list, tuple)) and shape:
        return tuple(int(s) for s in shape)
    name = meta.get("dataset")
    if isinstance(name, str):
        try:
            return tuple(dataset_info(name).input_shape)
        except KeyError:
            return None
    return None


def _num_classes(dataset: Any) -> int | None:
    base = getattr(dataset, "dataset", dataset)  # torch Subset
    n = getattr(base, "num_classes", None)
    return int(n) if isinstance(n, int) else None


def check_model_input(
    model: nn.Module, dataset: Any, meta: Mapping[str, Any] | None = None, *, field: str = "--dataset"
) -> None:
    """Raise :class:`DataShapeError` when ``dataset`` (items ``(image C×H×W, label)``) does not fit ``model``.

    ``meta``: the model's checkpoint metadata (``dataset`` / ``input_shape``). ``field`` names the option or
    file key in the message. The probe runs one sample through the digital model in eval mode, without
    gradients, on the model's device; the model's train/eval mode is restored.
    """
    if len(dataset) == 0:
        raise DataShapeError(f"{field}: the data set is empty; allowed: at least one sample")
    x, _ = dataset[0]
    shape = tuple(x.shape)
    model_name = (meta or {}).get("model", type(model).__name__)
    data_name = getattr(getattr(dataset, "dataset", dataset), "name", "the data set")
    expected = expected_input_shape(meta)
    if expected is not None and shape != expected:
        trained = (meta or {}).get("dataset", "its data")
        raise DataShapeError(
            f"{field}: {data_name} gives inputs of shape {_shape_text(shape)}, but the model {model_name} was "
            f"trained on {trained} inputs of shape {_shape_text(expected)}; allowed: a data set with "
            f"{_shape_text(expected)} inputs"
        )
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x.unsqueeze(0).to(device))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataShapeError(
            f"{field}: {data_name} inputs of shape {_shape_text(shape)} do not fit the model {model_name} "
            f"({first}); allowed: a data set with the model's input shape"
        ) from exc
    finally:
        model.train(was_training)
    classes = _num_classes(dataset)
    if classes is not None and out.ndim == 2 and out.shape[1] < classes:
        raise DataShapeError(
            f"{field}: {data_name} has {classes} classes, the model {model_name} has {out.shape[1]} outputs; "
            f"allowed: a data set with at most {out.shape[1]} classes"
        )
