"""Noise-injection (hardware-aware) training, Joshi et al. 2020 (docs/papers.md §4.1).

During training, every selected Conv/Linear layer computes its forward pass with perturbed weights
``W + δW``, ``δW ~ N(0, σ_l²)`` independently per weight, with

    σ_l = η_tr · max|W_l|          (recomputed from the current clean weights at every forward pass),

drawn afresh for every forward pass (i.e. per mini-batch). The perturbation is a constant for autograd: the
gradient is taken at the perturbed point and applied to the clean weights, which are the only ones stored, saved
and updated. In eval mode (``model.eval()``) the layers compute with their clean weights: noise injection changes
the forward only while ``module.training`` is true.

After every optimizer step the weights of layer l are clipped to ``[−α·σ_W^l, α·σ_W^l]`` where σ_W^l is the
standard deviation of the layer's (clean) weights (α = 2.0 for ResNet-32 in Joshi et al.), see
:meth:`NoiseInjection.clip_weights` and :meth:`NoiseInjection.callback`.

Mechanism: a forward pre-hook on each layer swaps the registered ``weight`` parameter for the tensor
``weight + δW`` for the duration of that layer's forward (the parameter entry stays in place, so parameter
order and names never change); a forward hook registered with ``always_call=True``
puts the parameter back (also when the forward raises).

``nn.MultiheadAttention`` reads its projections directly (``in_proj_weight`` or ``q/k/v_proj_weight``, and
``out_proj.weight`` without calling ``out_proj``), and the chip runs them analog (xbarlab.attention), so the hooks
sit on the attention module itself and perturb, for the duration of its forward, the in-projection (listed as
``<name>.in_proj``, one σ = η·max|W| over the packed q/k/v matrix, as it is one weight of the module; or
``<name>.q_proj`` / ``.k_proj`` / ``.v_proj`` for separate weights) and ``<name>.out_proj``. An attention written
with ``nn.Linear`` (BERT/GPT style, or :class:`xbarlab.attention.SplitMultiheadAttention`) calls its Linears and is
noised through them. The state dict, the optimizer's parameter list and the
checkpoints therefore never see the perturbed weights.

Use with :func:`xbarlab.training.train`::

    ni = NoiseInjection(model, eta=0.038, alpha=2.0).attach()
    train(model, train_set, test_set, config, callbacks=[ni.callback()], metadata={"noise_injection": ni.config()})
    ni.detach()

or as a context manager (``with NoiseInjection(model, eta=0.05) as ni: ...``).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from xbarlab.training import TrainCallback

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_ETA",
    "NoiseInjection",
    "NoiseInjectionCallback",
    "clip_weights",
    "noise_sigma",
]

DEFAULT_ETA = 0.038
"""η_tr = σ_δG / G_max = 0.94 µS / 25 µS ≈ 3.8 % (Joshi et al. 2020, docs/papers.md §4.1)."""
DEFAULT_ALPHA = 2.0
"""Clipping factor α: weights of layer l are clipped to ±α·std(W_l) (ResNet-32 value of Joshi et al.)."""
NOISY_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""Layer types that receive weight noise (all weight layers that xbarlab maps to crossbars, and Conv3d)."""


def noise_sigma(weight: Tensor, eta: float) -> float:
    """σ = η·max|W| (weight units) of the additive weight noise for one layer."""
    return float(eta) * float(weight.detach().abs().max()) if weight.numel() else 0.0


def _noise_sigma_t(weight: Tensor, eta: float) -> Tensor:
    """:func:`noise_sigma` as a 0-d float64 tensor on the weight's device (no host read; the same product in
    float64 as the host value, so the noise is bit-identical)."""
    if not weight.numel():
        return torch.zeros((), dtype=torch.float64, device=weight.device)
    return weight.detach().abs().max().double() * float(eta)


@torch.no_grad()
def _clip_tensors_t(weights: Sequence[Tensor], alpha: float) -> Tensor:
    """Clip each weight tensor in place to ±α·std(W) on its device: the count of changed weights as a 0-d int64
    tensor (no host read). A weight whose bound α·std(W) is not > 0 is left unchanged, as on the host."""
    changed: Tensor | None = None
    for w in weights:
        if not isinstance(w, Tensor) or w.numel() < 2:
            continue
        bound = w.std().double() * float(alpha)
        bound = torch.where(bound > 0, bound, torch.full_like(bound, math.inf))  # bound <= 0: no clipping
        over = (w.abs() > bound).sum()
        w.clamp_(-bound, bound)  # bounds cast to the weight dtype, as the host floats were
        changed = over if changed is None else changed + over
    if changed is None:
        return torch.zeros((), dtype=torch.int64)
    return changed


def _clip_weights_t(layers: Sequence[nn.Module], alpha: float) -> Tensor:
    """:func:`clip_weights` on the layers' device (each layer's ``weight``)."""
    return _clip_tensors_t([layer.weight for layer in layers], alpha)  # type: ignore[misc]


def _module_order(name: str, order: dict[str, int]) -> tuple[int, int]:
    """Sort key of a listed name: the model's module order (an attention's in-projection before its out_proj)."""
    if name in order:
        return (order[name], 1)
    return (order.get(name.rsplit(".", 1)[0], -1), 0)


def clip_weights(layers: Sequence[nn.Module], alpha: float) -> int:
    """Clip each layer's weight in place to ``[−α·std(W), α·std(W)]``; returns the number of changed weights."""
    return int(_clip_weights_t(layers, alpha))


class NoiseInjection:
    """Forward-only Gaussian weight noise during training, plus post-update weight clipping.

    Args:
        model: the digital model to train (modified only while attached, and only during forward passes).
        eta: relative noise level η_tr ≥ 0: σ_l = η·max|W_l| in weight units (default 0.038).
        alpha: clipping factor α > 0 (weights clipped to ±α·std(W_l) by :meth:`clip_weights`), or ``None`` to
            disable clipping.
        include: fnmatch patterns of layer names that receive noise (default: every Conv/Linear layer).
        exclude: fnmatch patterns of layer names kept noise-free (e.g. the first and last layer).
        generator: a ``torch.Generator`` for the noise draws; ``None`` (default) uses the global torch RNG, which
            :func:`xbarlab.training.train` re-seeds every epoch, so a resumed run stays bit-identical.

    Raises:
        ValueError: ``eta`` or ``alpha`` out of range, or no layer selected.
    """

    def __init__(
        self,
        model: nn.Module,
        eta: float = DEFAULT_ETA,
        alpha: float | None = DEFAULT_ALPHA,
        *,
        include: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        generator: torch.Generator | None = None,
    ) -> None:
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
            raise ValueError(f"eta: invalid value {eta!r}; allowed: a finite number >= 0 (e.g. 0.038)")
        if alpha is not None and (
            isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0
        ):
            raise ValueError(f"alpha: invalid value {alpha!r}; allowed: a finite number > 0 or None")
        self.model = model
        self.eta = float(eta)
        self.alpha = None if alpha is None else float(alpha)
        self.generator = generator
        self.layers: dict[str, nn.Module] = {}
        """Selected name → module owning the weight (the attention module for its in-projection)."""
        self._targets: dict[str, tuple[nn.Module, str]] = {}
        self._hooked: dict[int, tuple[nn.Module, list[tuple[nn.Module, str]]]] = {}

        def selected(name: str) -> bool:
            return any(fnmatch.fnmatchcase(name, p) for p in include) and not any(
                fnmatch.fnmatchcase(name, p) for p in exclude
            )

        def add(name: str, owner: nn.Module, pname: str, hook_module: nn.Module) -> None:
            if not selected(name):
                return
            self.layers[name] = owner
            self._targets[name] = (owner, pname)
            self._hooked.setdefault(id(hook_module), (hook_module, []))[1].append((owner, pname))

        attention_outs: set[int] = set()
        for name, module in model.named_modules():
            if not isinstance(module, nn.MultiheadAttention):
                continue
            prefix = f"{name}." if name else ""
            if module._qkv_same_embed_dim:
                if isinstance(module.in_proj_weight, nn.Parameter):
                    add(f"{prefix}in_proj", module, "in_proj_weight", module)
            else:
                for part in ("q", "k", "v"):
                    if isinstance(getattr(module, f"{part}_proj_weight", None), nn.Parameter):
                        add(f"{prefix}{part}_proj", module, f"{part}_proj_weight", module)
            out = module.out_proj
            attention_outs.add(id(out))
            if isinstance(getattr(out, "weight", None), nn.Parameter):
                add(f"{prefix}out_proj", out, "weight", module)
        for name, module in model.named_modules():
            if id(module) in attention_outs:
                continue
            if not isinstance(module, NOISY_TYPES) or not isinstance(getattr(module, "weight", None), nn.Parameter):
                continue
            add(name, module, "weight", module)
        if not self.layers:
            raise ValueError(
                f"include/exclude: no Conv/Linear layer of the model selected (include={list(include)}, "
                f"exclude={list(exclude)})"
            )
        order = {n: i for i, (n, _) in enumerate(model.named_modules())}
        self.layers = {n: self.layers[n] for n in sorted(self.layers, key=lambda n: _module_order(n, order))}
        self._handles: list[RemovableHandle] = []
        self._saved: dict[tuple[int, str], nn.Parameter] = {}
        self.forward_count = 0

    # ---------------------------------------------------------------------------------------------- hooks
    @property
    def attached(self) -> bool:
        """Whether the hooks are installed."""
        return bool(self._handles)

    def attach(self) -> NoiseInjection:
        """Install the hooks (idempotent); returns ``self``."""
        if self._handles:
            return self
        for module, _ in self._hooked.values():
            self._handles.append(module.register_forward_pre_hook(self._pre_hook))
            self._handles.append(module.register_forward_hook(self._post_hook, always_call=True))
        return self

    def detach(self) -> None:
        """Remove the hooks (idempotent); the model is then exactly the plain model again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for module, _ in self._hooked.values():
            self._restore(module)

    def __enter__(self) -> NoiseInjection:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _pre_hook(self, module: nn.Module, args: Any) -> None:
        if not module.training or self.eta == 0.0:
            return
        for owner, pname in self._hooked[id(module)][1]:
            key = (id(owner), pname)
            if key in self._saved:
                continue
            param = owner._parameters[pname]
            assert isinstance(param, nn.Parameter)
            sigma = _noise_sigma_t(param, self.eta)  # on the device: no host read per forward
            noise = torch.randn(param.shape, generator=self.generator, dtype=param.dtype, device=param.device)
            noisy = param + (sigma * noise).detach()
            self._saved[key] = param
            owner._parameters[pname] = None  # keeps the key (and the parameter order) in place
            object.__setattr__(owner, pname, noisy)
            self.forward_count += 1

    def _post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self._restore(module)

    def _restore(self, module: nn.Module) -> None:
        for owner, pname in self._hooked[id(module)][1]:
            param = self._saved.pop((id(owner), pname), None)
            if param is None:
                continue
            if pname in owner.__dict__:
                object.__delattr__(owner, pname)
            owner._parameters[pname] = param

    def weights(self) -> dict[str, Tensor]:
        """The clean (stored) weight of every selected layer, by listed name (the in-projection for attention)."""
        out: dict[str, Tensor] = {}
        for name, (owner, pname) in self._targets.items():
            w = self._saved.get((id(owner), pname), owner._parameters[pname])
            assert isinstance(w, Tensor)
            out[name] = w
        return out

    # ---------------------------------------------------------------------------------------------- clipping
    def clip_weights(self) -> int:
        """Clip every selected layer to ±α·std(W_l) (no-op when ``alpha`` is None); returns weights changed."""
        return int(self.clip_weights_on_device())

    def clip_weights_on_device(self) -> Tensor:
        """:meth:`clip_weights` without a host read: the count of changed weights as a 0-d device tensor."""
        if self.alpha is None:
            return torch.zeros((), dtype=torch.int64)
        return _clip_tensors_t(list(self.weights().values()), self.alpha)

    def callback(self) -> NoiseInjectionCallback:
        """A :class:`xbarlab.training.TrainCallback` that clips the weights after every optimizer step."""
        return NoiseInjectionCallback(self)

    def sigmas(self) -> dict[str, float]:
        """Current σ_l = η·max|W_l| per selected layer (weight units)."""
        return {name: noise_sigma(w, self.eta) for name, w in self.weights().items()}

    def config(self) -> dict[str, Any]:
        """JSON-ready description (for checkpoint metadata)."""
        return {
            "method": "noise_injection",
            "reference": "Joshi et al. 2020 (docs/papers.md §4.1)",
            "eta": self.eta,
            "alpha": self.alpha,
            "layers": list(self.layers),
        }

    def __iter__(self) -> Iterator[tuple[str, nn.Module]]:
        return iter(self.layers.items())


class NoiseInjectionCallback(TrainCallback):
    """Training callback: clip the weights after every optimizer step; counts the clipped weights."""

    def __init__(self, injection: NoiseInjection) -> None:
        self.injection = injection
        self._clipped: Tensor | int = 0

    @property
    def clipped(self) -> int:
        """Weights clipped so far (one host read, when asked)."""
        return int(self._clipped)

    def on_step_end(self, model: nn.Module, step: int) -> None:
        count = self.injection.clip_weights_on_device()  # stays on the device: no host read per step
        self._clipped = count if isinstance(self._clipped, int) else self._clipped + count.to(self._clipped.device)
