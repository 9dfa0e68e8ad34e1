"""Lipschitz regularisation for error suppression (CorrectNet / CorrectNet+, docs/papers.md §3.5 and §4.8).

Weight variations perturb every layer's output; a layer whose Lipschitz constant (its largest singular value
for the ℓ2 norm) exceeds 1 amplifies the perturbation it receives, and the amplification compounds with depth
(``Lip(f∘g) ≤ Lip(f)·Lip(g)``). CorrectNet trains with a penalty that keeps every layer close to a Parseval
(orthonormal) map. The papers' exact formulas are not public; the three penalties below are **stand-ins**:

* ``parseval_neft`` (default, the only public re-implementation: NeFT's ``correct_net``,
  YifanQin-ND/NF_Training ``src/loss_fn.py``): ``Σ_m ‖W_mᵀW_m − λI‖²_F`` with every weight viewed as
  ``w.view(-1, w.size(-2), w.size(-1))``. For a Linear [out, in] this is the full matrix (WᵀW is in×in);
  for a conv kernel [C_out, C_in, kh, kw] it acts on each kh×kw spatial slice separately (WᵀW is kw×kw).
* ``parseval_matrix`` (the issue's wording): the penalty on the reshaped 2-D matrix
  ``W ∈ R^{C_out × C_in·k·k}``, using the smaller Gram matrix: ``‖WWᵀ − λI‖²_F`` if C_out ≤ C_in·k·k, else
  ``‖WᵀW − λI‖²_F``, so that a (semi-)orthogonal matrix has zero penalty.
* ``spectral``: ``Σ_l max(0, σ_max(W_l) − 1)²`` with σ_max of the reshaped 2-D matrix estimated by power
  iteration (Miyato et al. 2018 style; σ = uᵀWv with u, v treated as constants, so the gradient is uvᵀ).

The training loss is ``CE + β·penalty``. :func:`lipschitz_regularizer` returns a
``Callable[[nn.Module], Tensor]`` for :func:`xbarlab.training.train`'s ``regularizer`` hook. Penalties
apply to ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Linear`` modules (the layers that go to crossbars); analog
layers (frozen) are skipped.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from xbarlab.seeding import derive_seed

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_LAMBDA",
    "DEFAULT_POWER_ITERATIONS",
    "LIPSCHITZ_KINDS",
    "LipschitzRegularizer",
    "layer_spectral_norms",
    "lipschitz_regularizer",
    "lipschitz_upper_bound",
    "parseval_matrix_penalty",
    "parseval_neft_penalty",
    "spectral_norm_estimate",
    "spectral_penalty",
    "weighted_modules",
]

LIPSCHITZ_KINDS = ("parseval_neft", "parseval_matrix", "spectral")
"""Names accepted by :func:`lipschitz_regularizer`."""
DEFAULT_BETA = 5e-4
"""Penalty weight β (NeFT's value for its CorrectNet baseline, docs/papers.md §3.5)."""
DEFAULT_LAMBDA = 1.0
"""Target Gram scale λ (``WᵀW → λI``); λ = 1 is a Parseval (1-Lipschitz) layer."""
DEFAULT_POWER_ITERATIONS = 10
"""Power-iteration steps of the ``spectral`` penalty, from a fixed seeded start vector every call."""

PENALIZED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Linear)


def _check_weight(weight: Tensor, name: str = "weight") -> None:
    if not isinstance(weight, Tensor) or weight.dim() < 2:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"{name}: invalid value of shape {shape}; allowed: a tensor with >= 2 dimensions")


def _check_lam(lam: float) -> None:
    if not math.isfinite(lam) or lam <= 0:
        raise ValueError(f"lam: invalid value {lam!r}; allowed: a finite number > 0")


def parseval_neft_penalty(weight: Tensor, lam: float = DEFAULT_LAMBDA) -> Tensor:
    """NeFT's CorrectNet term for one weight: ``Σ_slices ‖SᵀS − λI‖²_F``.

    The slices are ``S = w.view(-1, w.size(-2), w.size(-1))``. Zero exactly when every slice has orthonormal
    columns scaled by √λ. Returns a 0-dim tensor (weight units⁴).
    """
    _check_weight(weight)
    _check_lam(lam)
    w = weight.reshape(-1, weight.size(-2), weight.size(-1))
    gram = w.transpose(-1, -2) @ w
    eye = torch.eye(gram.size(-1), dtype=gram.dtype, device=gram.device)
    return (gram - lam * eye).pow(2).sum()


def _as_matrix(weight: Tensor) -> Tensor:
    """(C_out, ...) → (C_out, C_in·prod(kernel)): the 2-D matrix of a conv or linear weight."""
    return weight.reshape(weight.size(0), -1)


def parseval_matrix_penalty(weight: Tensor, lam: float = DEFAULT_LAMBDA) -> Tensor:
    """``‖G − λI‖²_F`` with G the smaller Gram matrix of the reshaped weight W ∈ R^{C_out × C_in·k·k}.

    G = WWᵀ when C_out ≤ C_in·k·k (rows orthonormal), else WᵀW (columns orthonormal): zero for any
    (semi-)orthogonal W scaled by √λ, positive otherwise. Returns a 0-dim tensor.
    """
    _check_weight(weight)
    _check_lam(lam)
    w = _as_matrix(weight)
    gram = w @ w.t() if w.size(0) <= w.size(1) else w.t() @ w
    eye = torch.eye(gram.size(0), dtype=gram.dtype, device=gram.device)
    return (gram - lam * eye).pow(2).sum()


def _start_vector(n: int, key: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    gen = torch.Generator().manual_seed(derive_seed("lipschitz-power-iteration", key, n))
    v = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)
    return v / v.norm().clamp_min(1e-12)


def spectral_norm_estimate(weight: Tensor, iterations: int = DEFAULT_POWER_ITERATIONS, *, key: str = "") -> Tensor:
    """σ_max of the reshaped 2-D weight by power iteration: ``uᵀWv`` with u, v detached (differentiable in W).

    The start vector is seeded from ``key`` and the matrix shape, so the estimate is deterministic and needs
    no state (training resumes bit-identically). It never over-estimates σ_max.
    """
    _check_weight(weight)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations: invalid value {iterations!r}; allowed: an integer >= 1")
    w = _as_matrix(weight)
    with torch.no_grad():
        wd = w.detach()
        v = _start_vector(w.size(1), key, w.dtype, w.device)
        u = wd @ v
        for _ in range(iterations):
            u = wd @ v
            u = u / u.norm().clamp_min(1e-12)
            v = wd.t() @ u
            v = v / v.norm().clamp_min(1e-12)
        u = wd @ v
        u = u / u.norm().clamp_min(1e-12)
    return u @ (w @ v)


def spectral_penalty(weight: Tensor, iterations: int = DEFAULT_POWER_ITERATIONS, *, key: str = "") -> Tensor:
    """``max(0, σ_max(W) − 1)²`` with σ_max from :func:`spectral_norm_estimate`. Returns a 0-dim tensor."""
    sigma = spectral_norm_estimate(weight, iterations, key=key)
    return torch.clamp(sigma - 1.0, min=0.0).pow(2)


def weighted_modules(model: nn.Module, exclude: tuple[str, ...] = ()) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of every Conv1d/Conv2d/Linear not matching an ``exclude`` glob, in module order."""
    for name, module in model.named_modules():
        if isinstance(module, PENALIZED_TYPES) and not any(fnmatch.fnmatchcase(name, p) for p in exclude):
            yield name, module


@dataclass
class LipschitzRegularizer:
    """``model ↦ β·Σ_layers penalty(W_layer)``: the ``regularizer`` hook of :func:`xbarlab.training.train`.

    Attributes:
        kind: one of :data:`LIPSCHITZ_KINDS`.
        beta: penalty weight β (≥ 0; 0 disables the term but keeps the call valid).
        lam: Gram target λ of the Parseval kinds.
        iterations: power-iteration steps of the ``spectral`` kind.
        exclude: module-name globs left unpenalised (e.g. ``("fc3",)`` for the classifier).
    """

    kind: str = "parseval_neft"
    beta: float = DEFAULT_BETA
    lam: float = DEFAULT_LAMBDA
    iterations: int = DEFAULT_POWER_ITERATIONS
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.kind not in LIPSCHITZ_KINDS:
            raise ValueError(f"kind: invalid value {self.kind!r}; allowed: one of {', '.join(LIPSCHITZ_KINDS)}")
        if (
            isinstance(self.beta, bool)
            or not isinstance(self.beta, (int, float))
            or not math.isfinite(self.beta)
            or self.beta < 0
        ):
            raise ValueError(f"beta: invalid value {self.beta!r}; allowed: a finite number >= 0")
        _check_lam(self.lam)
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"iterations: invalid value {self.iterations!r}; allowed: an integer >= 1")
        self.exclude = tuple(self.exclude)

    def penalty(self, model: nn.Module) -> Tensor:
        """The unweighted penalty Σ_layers penalty(W) (0-dim tensor; 0 when the model has no such layer)."""
        terms: list[Tensor] = []
        for name, module in weighted_modules(model, self.exclude):
            weight = module.weight
            if not isinstance(weight, Tensor):
                continue
            if self.kind == "parseval_neft":
                terms.append(parseval_neft_penalty(weight, self.lam))
            elif self.kind == "parseval_matrix":
                terms.append(parseval_matrix_penalty(weight, self.lam))
            else:
                terms.append(spectral_penalty(weight, self.iterations, key=name))
        if not terms:
            device = next((t.device for t in model.parameters()), torch.device("cpu"))
            return torch.zeros((), device=device)  # on the model's device: adds to its loss without a copy
        return torch.stack([t.to(terms[0].dtype) for t in terms]).sum()

    def __call__(self, model: nn.Module) -> Tensor:
        return self.beta * self.penalty(model)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly settings, for run metadata."""
        return {
            "kind": self.kind,
            "beta": self.beta,
            "lam": self.lam,
            "iterations": self.iterations,
            "exclude": list(self.exclude),
        }


def lipschitz_regularizer(
    kind: str = "parseval_neft",
    beta: float = DEFAULT_BETA,
    *,
    lam: float = DEFAULT_LAMBDA,
    iterations: int = DEFAULT_POWER_ITERATIONS,
    exclude: tuple[str, ...] = (),
) -> LipschitzRegularizer:
    """The Lipschitz regulariser ``model ↦ β·Σ penalty`` for ``train(..., regularizer=...)``.

    ``kind``: ``parseval_neft`` (default; β = 5e-4, λ = 1 as NeFT), ``parseval_matrix`` or ``spectral``.
    """
    return LipschitzRegularizer(kind=kind, beta=beta, lam=lam, iterations=iterations, exclude=tuple(exclude))


@torch.no_grad()
def layer_spectral_norms(model: nn.Module, iterations: int = 50) -> dict[str, float]:
    """σ_max of every Conv/Linear layer's reshaped 2-D weight (power iteration), by module name."""
    norms: dict[str, Tensor] = {}
    for name, module in weighted_modules(model):
        weight = module.weight
        assert isinstance(weight, Tensor)
        norms[name] = spectral_norm_estimate(weight.detach().double(), iterations, key=name)
    values = torch.stack(list(norms.values())).cpu().tolist() if norms else []  # one host read for all layers
    return dict(zip(norms, values, strict=True))


def lipschitz_upper_bound(model: nn.Module, iterations: int = 50) -> float:
    """Π_layers σ_max(W_layer): a loose diagnostic bound on how much the weight layers amplify a perturbation.

    BatchNorm, pooling and residual additions are ignored: a comparison figure, not a certified bound.
    """
    return math.prod(layer_spectral_norms(model, iterations).values())
