"""Convert a PyTorch model to an analog model: Conv1d/Conv2d/Linear become analog layers.

BN, pooling, activations and every other module stay digital. The conversion report lists every layer that was
converted and every weight-bearing layer that stayed digital, with the reason; nothing is skipped silently.
Conversion works on a deep copy: the input model is never modified and nothing is half-converted.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass, field

import torch
from torch import nn

from xbarlab.attention import split_attention
from xbarlab.hardware import CLASSIFIER_TOKEN, HardwareConfig
from xbarlab.hooks import forward_hooks
from xbarlab.layer_types import AnalogConv, AnalogLinear
from xbarlab.layers import AnalogLayer

CONVERTIBLE = (nn.Conv1d, nn.Conv2d, nn.Linear)
WEIGHTED_UNSUPPORTED = (nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Bilinear)


class ConversionError(ValueError):
    """The model cannot be converted; the message names the layer."""


@dataclass(frozen=True)
class LayerRecord:
    """One weight-bearing layer: converted to analog or kept digital, and why."""

    name: str
    kind: str
    analog: bool
    reason: str
    weight_shape: tuple[int, ...]
    arrays: int = 0


@dataclass(frozen=True)
class ConversionReport:
    """What :func:`convert` did to each weight-bearing layer."""

    hardware: str
    layers: tuple[LayerRecord, ...] = field(default_factory=tuple)

    @property
    def analog(self) -> list[LayerRecord]:
        return [r for r in self.layers if r.analog]

    @property
    def digital(self) -> list[LayerRecord]:
        return [r for r in self.layers if not r.analog]

    def table(self) -> str:
        """A plain-text table of the report."""
        wn = max([len("layer"), *(len(r.name) for r in self.layers)])
        wk = max([len("type"), *(len(r.kind) for r in self.layers)])
        lines = [f"{'layer':<{wn}} {'type':<{wk}} {'where':<8} {'arrays':>6}  reason"]
        for r in self.layers:
            where = "analog" if r.analog else "digital"
            lines.append(f"{r.name:<{wn}} {r.kind:<{wk}} {where:<8} {r.arrays:>6}  {r.reason}")
        return "\n".join(lines)


def _executed_order(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """(name, module) of the Conv1d/Conv2d/Linear modules of ``model`` in the order their forward ran on input
    ``x`` (eval mode, no grad; modes restored). Hooks are removed afterwards."""
    names = {id(m): n for n, m in model.named_modules()}
    order: list[tuple[str, nn.Module]] = []

    def hook(mod: nn.Module, _i: object, _o: object) -> None:
        order.append((names[id(mod)], mod))

    hooks = [(m, hook) for m in model.modules() if isinstance(m, CONVERTIBLE)]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with forward_hooks(hooks), torch.no_grad():
            model(x)
    finally:
        for m, mode in modes.items():
            m.train(mode)
    return order


_IMAGE_SIZES = (32, 28, 64, 224, 96, 16, 8, 12, 14, 20, 24, 48, 56, 112, 128, 256)
"""Square image sizes (pixels) tried, in order, for a meta-device trace of a Conv2d model."""


def _sequential_output(model: nn.Module, prefix: str = "") -> str | None:
    """In an ``nn.Sequential`` the last child holding a Conv1d/Conv2d/Linear runs last: its output layer, when
    that child is such a layer (or a nested Sequential ending with one); None when it cannot be told statically."""
    if not isinstance(model, nn.Sequential):
        return None
    for name, child in reversed(list(model.named_children())):
        full = f"{prefix}{name}"
        if isinstance(child, CONVERTIBLE):
            return full
        if any(isinstance(m, CONVERTIBLE) for m in child.modules()):
            return _sequential_output(child, full + ".")
    return None


def _guessed_inputs(model: nn.Module) -> list[torch.Tensor]:
    """Meta-device inputs guessed from the first registered Conv1d/Conv2d/Linear (batch of 2)."""
    first = next((m for m in model.modules() if isinstance(m, CONVERTIBLE)), None)
    if isinstance(first, nn.Linear):
        return [torch.empty(*lead, first.in_features, device="meta") for lead in ((2,), (2, 8))]  # or a sequence
    if isinstance(first, nn.Conv1d):
        return [torch.empty(2, first.in_channels, n, device="meta") for n in (32, 64, 128, 256, 28, 16, 8)]
    if isinstance(first, nn.Conv2d):
        return [torch.empty(2, first.in_channels, n, n, device="meta") for n in _IMAGE_SIZES]
    return []


def _has_linear(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) for m in model.modules())


def _wants_classifier(model: nn.Module, hw: HardwareConfig) -> bool:
    """@classifier is used and the model has initialised layers to trace (else the conversion loop reports why)."""
    layers = [m for m in model.modules() if isinstance(m, CONVERTIBLE)]
    return (
        CLASSIFIER_TOKEN in hw.keep_digital
        and bool(layers)
        and not any(isinstance(m.weight, nn.parameter.UninitializedParameter) for m in layers)
    )


def _classifier_name(model: nn.Module, example_input: torch.Tensor | None) -> str:
    """Name of the output layer: the last Linear (or, without any Linear, the last Conv) executed in a forward.

    The forward runs on a copy: on ``example_input`` when given, otherwise on the meta device with inputs guessed
    from the first registered layer (no data, no compute). Raises :class:`ConversionError` when neither works.
    """
    order: list[tuple[str, nn.Module]] | None = None
    if example_input is not None:
        if not isinstance(example_input, torch.Tensor):
            raise ConversionError(f"example_input: a {type(example_input).__name__}; allowed: the model's input tensor")
        try:
            order = _executed_order(copy.deepcopy(model), example_input)
        except Exception as exc:  # reported with its cause
            raise ConversionError(
                f"example_input: the model's forward failed on it ({type(exc).__name__}: {exc})"
            ) from exc
    else:
        last = _sequential_output(model)
        if last is not None and (isinstance(model.get_submodule(last), nn.Linear) or not _has_linear(model)):
            return last
        try:
            meta: nn.Module | None = copy.deepcopy(model).to("meta")
        except Exception:  # cannot trace on meta: reported below
            meta = None
        for x in _guessed_inputs(model) if meta is not None else []:
            try:
                order = _executed_order(meta, x)  # type: ignore[arg-type]
            except Exception:  # a wrong guess; try the next one
                continue
            break
    if order is None:
        raise ConversionError(
            f"keep_digital: {CLASSIFIER_TOKEN} needs the executed output layer, but the model's forward could not be "
            "traced with a guessed input shape; allowed: pass example_input (one input batch) to convert()"
        )
    linears = [name for name, m in order if isinstance(m, nn.Linear)]
    executed = linears or [name for name, _ in order]
    if not executed:
        raise ConversionError(
            f"keep_digital: {CLASSIFIER_TOKEN}: no Conv1d/Conv2d/Linear ran in the model's forward; allowed: a model "
            "whose output layer is a Linear or Conv"
        )
    return executed[-1]


def _keep_digital_reason(names: list[str], hw: HardwareConfig, classifier: str | None) -> str | None:
    """Why a layer (known under ``names``; a shared module has several) stays digital, or None."""
    for pattern in hw.keep_digital:
        if pattern == CLASSIFIER_TOKEN:
            if classifier in names:
                return "classifier kept digital (keep_digital: @classifier)"
        elif any(fnmatch.fnmatchcase(name, pattern) for name in names):
            return f"kept digital (keep_digital: {pattern})"
    return None


_BASE_FORWARDS = {nn.Linear: nn.Linear.forward, nn.Conv1d: nn.Conv1d.forward, nn.Conv2d: nn.Conv2d.forward}
_DIGITAL_BY_DESIGN = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
"""Normalisation layers: digital by design (the BN methods act on them), not listed in the report."""


def _unconvertible_reason(module: nn.Module, parent: nn.Module | None) -> str | None:
    """Why a Conv1d/Conv2d/Linear instance cannot be mapped as such, or None when it can."""
    base = next(b for b in _BASE_FORWARDS if isinstance(module, b))
    if type(module).forward is not _BASE_FORWARDS[base]:
        return (
            f"{type(module).__name__} overrides forward() of {base.__name__}; converting it would drop that "
            "behaviour: digital"
        )
    return None


def _module_names(model: nn.Module) -> tuple[dict[int, list[str]], dict[int, nn.Module], dict[str, nn.Module]]:
    """Every name of every module (a module registered twice has two), the modules by id, and each name's parent."""
    names: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    parents: dict[str, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        names.setdefault(id(module), []).append(name)
        modules[id(module)] = module
        for child_name in module._modules:  # every registration (named_children() drops repeats)
            parents[f"{name}.{child_name}" if name else child_name] = module
    return names, modules, parents


def _check_patterns(hw: HardwareConfig, layer_names: list[str]) -> None:
    """Every keep_digital pattern and per-layer override must match a convertible layer (a typo fails early)."""
    shown = ", ".join(layer_names[:12]) + (", …" if len(layer_names) > 12 else "")
    for field_name, patterns in (
        ("keep_digital", [p for p in hw.keep_digital if p != CLASSIFIER_TOKEN]),
        ("layers", [o.pattern for o in hw.layers]),
    ):
        for i, pattern in enumerate(patterns):
            if not any(fnmatch.fnmatchcase(name, pattern) for name in layer_names):
                where = f"layers[{i}].pattern" if field_name == "layers" else "keep_digital"
                raise ConversionError(
                    f"{where}: pattern {pattern!r} matches no Conv1d/Conv2d/Linear layer of the model; "
                    f"its layers: {shown}"
                )


def _first_shape(module: nn.Module) -> tuple[int, ...]:
    return tuple(next(iter(module.parameters(recurse=False))).shape)


def _weight_like_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Floating tensors of dim >= 2 held by ``module`` itself as buffers or plain attributes (not parameters)."""
    found = [(n, b) for n, b in module.named_buffers(recurse=False) if b is not None]
    found += [(n, v) for n, v in vars(module).items() if isinstance(v, torch.Tensor) and not n.startswith("_")]
    return [(n, t) for n, t in found if t.is_floating_point() and t.dim() >= 2]


_TRANSFORMER_LAYERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def analog_fast_path_guard(module: nn.Module, args: tuple[object, ...]) -> None:
    """No-op forward pre-hook: its presence makes PyTorch skip the fused transformer fast path, which would read
    the ideal weights of the analog FFN layers directly (module-level, so a pickled model keeps it)."""
    return None


def _guard_fast_paths(model: nn.Module) -> None:
    """Disable the fused fast paths of transformer modules that contain analog layers (see :func:`convert`)."""
    for module in model.modules():
        if not any(isinstance(m, AnalogLayer) for m in module.modules()):
            continue
        if isinstance(module, _TRANSFORMER_LAYERS) and analog_fast_path_guard not in module._forward_pre_hooks.values():
            module.register_forward_pre_hook(analog_fast_path_guard)
        if isinstance(module, nn.TransformerEncoder):
            module.use_nested_tensor = False


def convert(model: nn.Module, hw: HardwareConfig, *, example_input: torch.Tensor | None = None) -> nn.Module:
    """Return an analog copy of ``model`` for hardware ``hw``.

    The copy carries ``xbarlab_hw`` (the config) and ``xbarlab_report`` (a :class:`ConversionReport`). A bare
    layer (``convert(nn.Linear(...), hw)``) is returned as an analog layer; a module registered under several
    names (shared) becomes one analog layer used under all of them. Raises :class:`ConversionError` when no layer
    can be converted, a weight is NaN/Inf or uninitialised (lazy modules), or a keep_digital / per-layer override
    pattern matches no layer.

    ``keep_digital: [@classifier]`` keeps the executed output layer digital: the last Linear (or Conv, without any
    Linear) that runs in a forward pass, found on ``example_input`` (one input batch, run on a copy in eval mode)
    when given; for an ``nn.Sequential`` ending with that layer, statically; otherwise traced on the meta
    device with an input shape guessed from the first registered layer
    (Linear: (2, in_features) or a sequence (2, 8, in_features); Conv2d: square images of 8 to 256 pixels,
    :data:`_IMAGE_SIZES`; Conv1d: lengths 8-256).
    When that fails, a :class:`ConversionError` asks for ``example_input``.

    Transformer layers: the FFN linears of ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` are
    converted and the layer's fused fast path (``torch._transformer_encoder_layer_fwd``, which would read the ideal
    ``weight`` kept on the analog layer) is disabled for that instance by a no-op forward pre-hook
    (:func:`analog_fast_path_guard`: PyTorch skips the fast path when a hook is attached; the hook survives deepcopy,
    pickling, ``state_dict`` save/load and ``.to(device)``); ``nn.TransformerEncoder.use_nested_tensor`` is set
    False (its nested-tensor fast path). ``nn.MultiheadAttention`` becomes a
    :class:`xbarlab.attention.SplitMultiheadAttention` whose projections ``<name>.q_proj``, ``.k_proj``,
    ``.v_proj``, ``.out_proj`` are converted (and matched by keep_digital patterns) like any Linear; QKᵀ and
    softmax·V stay digital (no stationary weights). ``nn.Embedding`` stays digital, listed.
    Modules holding floating tensors of dim >= 2 as buffers or plain attributes (not normalisation statistics)
    are listed as digital. :func:`xbarlab.calibrate` verifies that every analog layer really runs.
    """
    if not isinstance(hw, HardwareConfig):
        raise TypeError(f"hw: expected a HardwareConfig, got {type(hw).__name__}")
    if any(isinstance(m, AnalogLayer) for m in model.modules()):
        raise ConversionError("model: already contains analog layers; convert the digital model")
    result = split_attention(copy.deepcopy(model))
    classifier = _classifier_name(result, example_input) if _wants_classifier(result, hw) else None
    names, modules, parents = _module_names(result)
    records: list[LayerRecord] = []
    replacements: list[tuple[list[str], AnalogLayer]] = []
    convertible_names: list[str] = []
    for key, module in modules.items():
        all_names = names[key]
        name = all_names[0]
        label = name or "(model)"
        if isinstance(module, CONVERTIBLE):
            kind = type(module).__name__
            if isinstance(module.weight, nn.parameter.UninitializedParameter):
                raise ConversionError(
                    f"layer '{label}' ({kind}): parameters not initialised (lazy module); run one forward pass "
                    "before converting"
                )
            shape = tuple(module.weight.shape)
            if not torch.isfinite(module.weight).all() or (
                module.bias is not None and not torch.isfinite(module.bias).all()
            ):
                raise ConversionError(f"layer '{label}' ({kind}): weights contain NaN or Inf; allowed: finite values")
            reason = _unconvertible_reason(module, parents.get(name))
            if reason is not None:
                records.append(LayerRecord(label, kind, False, reason, shape))
                continue
            convertible_names.extend(all_names)
            aliases = f"; shared, also used as {', '.join(repr(n) for n in all_names[1:])}" if all_names[1:] else ""
            reason = _keep_digital_reason(all_names, hw, classifier)
            if reason is not None:
                records.append(LayerRecord(label, kind, False, reason + aliases, shape))
                continue
            layer_hw = hw.for_layer(name)
            analog: AnalogLayer
            if isinstance(module, nn.Linear):
                analog = AnalogLinear(module, name, layer_hw)
            else:
                analog = AnalogConv(module, name, layer_hw)
            replacements.append((all_names, analog))
            records.append(
                LayerRecord(
                    label, kind, True, f"on crossbars ({layer_hw.name}){aliases}", shape, analog.layout.num_arrays
                )
            )
        elif isinstance(module, WEIGHTED_UNSUPPORTED):
            shape = tuple(module.weight.shape)
            reason = "layer type not supported on crossbars: digital"
            records.append(LayerRecord(label, type(module).__name__, False, reason, shape))
        elif not isinstance(module, _DIGITAL_BY_DESIGN) and any(True for _ in module.parameters(recurse=False)):
            params = ", ".join(f"{n} {tuple(p.shape)}" for n, p in module.named_parameters(recurse=False))
            records.append(
                LayerRecord(
                    label,
                    type(module).__name__,
                    False,
                    f"no crossbar mapping for this layer type ({params}): digital",
                    tuple(next(iter(module.parameters(recurse=False))).shape),
                )
            )
        if not isinstance(module, (*CONVERTIBLE, *WEIGHTED_UNSUPPORTED, _DIGITAL_BY_DESIGN)):
            tensors = _weight_like_tensors(module)
            if tensors and not any(r.name == label for r in records):
                shown = ", ".join(f"{n} {tuple(t.shape)}" for n, t in tensors)
                reason = f"weight-like tensor(s) not held as parameters ({shown}), used functionally: digital"
                records.append(LayerRecord(label, type(module).__name__, False, reason, tuple(tensors[0][1].shape)))
    _check_patterns(hw, convertible_names)
    if not replacements:
        raise ConversionError(
            "model: no convertible layer (Conv1d, Conv2d, Linear) outside keep_digital; nothing would run on crossbars"
        )
    for all_names, replacement in replacements:
        for name in all_names:
            if not name:  # the model is itself the layer
                result = replacement
                continue
            parent_name, _, child = name.rpartition(".")
            parent = result.get_submodule(parent_name) if parent_name else result
            setattr(parent, child, replacement)
    _guard_fast_paths(result)
    result.xbarlab_hw = hw  # type: ignore[assignment]
    result.xbarlab_report = ConversionReport(hardware=hw.name, layers=tuple(records))  # type: ignore[assignment]
    return result
