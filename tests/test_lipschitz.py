"""Lipschitz penalties (P3 error suppression): zero for orthogonal weights, positive otherwise, exact gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from xbarlab.mitigation.lipschitz import (
    LIPSCHITZ_KINDS,
    LipschitzRegularizer,
    layer_spectral_norms,
    lipschitz_regularizer,
    lipschitz_upper_bound,
    parseval_matrix_penalty,
    parseval_neft_penalty,
    spectral_norm_estimate,
    spectral_penalty,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _orthogonal(n: int, m: int, seed: int = 0) -> torch.Tensor:
    """An n×m matrix with orthonormal columns (n >= m) or rows (n < m)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(max(n, m), min(n, m), generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(a)
    return q if n >= m else q.t()


def _random(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- zero / positive


def test_parseval_neft_zero_for_orthogonal_linear_and_conv_slices() -> None:
    assert float(parseval_neft_penalty(_orthogonal(6, 6))) == pytest.approx(0.0, abs=1e-20)
    # tall linear weight [out, in] with orthonormal columns: WᵀW = I exactly
    assert float(parseval_neft_penalty(_orthogonal(10, 4))) == pytest.approx(0.0, abs=1e-20)
    # conv kernel whose every kh×kw slice is orthogonal
    slices = torch.stack([_orthogonal(3, 3, seed=s) for s in range(4 * 2)]).reshape(4, 2, 3, 3)
    assert float(parseval_neft_penalty(slices)) == pytest.approx(0.0, abs=1e-20)
    # λ scales the target: √λ·Q has zero penalty against λI
    assert float(parseval_neft_penalty(2.0 * _orthogonal(5, 5), lam=4.0)) == pytest.approx(0.0, abs=1e-20)


def test_parseval_penalties_positive_otherwise() -> None:
    w = _random(8, 3, 3, 3)
    assert float(parseval_neft_penalty(w)) > 0
    assert float(parseval_matrix_penalty(w)) > 0
    assert float(parseval_neft_penalty(1.01 * _orthogonal(6, 6))) > 0
    assert float(parseval_matrix_penalty(0.99 * _orthogonal(6, 27))) > 0


@pytest.mark.parametrize(("n", "m"), [(6, 27), (27, 6), (5, 5)])
def test_parseval_matrix_zero_for_semi_orthogonal(n: int, m: int) -> None:
    q = _orthogonal(n, m)
    assert float(parseval_matrix_penalty(q)) == pytest.approx(0.0, abs=1e-20)
    # the same matrix as a conv kernel [C_out, C_in, k, k] (C_in·k·k = m)
    if m == 27:
        assert float(parseval_matrix_penalty(q.reshape(n, 3, 3, 3))) == pytest.approx(0.0, abs=1e-20)


def test_parseval_matrix_uses_the_smaller_gram() -> None:
    w = _random(4, 12)
    gram = w @ w.t()
    expected = ((gram - torch.eye(4, dtype=w.dtype)) ** 2).sum()
    assert float(parseval_matrix_penalty(w)) == pytest.approx(float(expected), rel=1e-12)


def test_spectral_penalty_matches_svd() -> None:
    w = _random(7, 5)
    sigma = float(torch.linalg.svdvals(w)[0])
    est = float(spectral_norm_estimate(w, iterations=200))
    assert est == pytest.approx(sigma, rel=1e-8)
    assert float(spectral_penalty(w, iterations=200)) == pytest.approx((sigma - 1.0) ** 2, rel=1e-6)
    # zero when σ_max ≤ 1 (orthogonal, or any matrix scaled below 1)
    assert float(spectral_penalty(_orthogonal(6, 6), iterations=50)) == pytest.approx(0.0, abs=1e-12)
    assert float(spectral_penalty(0.5 * w / sigma, iterations=50)) == 0.0


# ---------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("fn", [parseval_neft_penalty, parseval_matrix_penalty])
def test_parseval_gradient_matches_finite_differences(fn: object) -> None:
    w = _random(4, 3, 3, 3, seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (w,), eps=1e-6, atol=1e-6)  # type: ignore[arg-type]


def test_parseval_matrix_gradient_closed_form() -> None:
    w = _random(5, 9, seed=4).requires_grad_(True)
    parseval_matrix_penalty(w).backward()
    assert w.grad is not None
    with torch.no_grad():
        expected = 4.0 * (w @ w.t() - torch.eye(5, dtype=w.dtype)) @ w
    torch.testing.assert_close(w.grad, expected)


def test_spectral_gradient_matches_finite_differences() -> None:
    # well-separated singular values so that the power iteration converges to machine precision
    u = _orthogonal(6, 6, seed=5)
    v = _orthogonal(4, 4, seed=6)
    s = torch.zeros(6, 4, dtype=torch.float64)
    s[0, 0], s[1, 1], s[2, 2], s[3, 3] = 3.0, 1.5, 0.7, 0.2
    w = (u @ s @ v.t()).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: spectral_penalty(x, iterations=300), (w,), eps=1e-6, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- regulariser


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


@pytest.mark.parametrize("kind", LIPSCHITZ_KINDS)
def test_regularizer_sums_layers_times_beta(kind: str) -> None:
    model = _tiny()
    reg = lipschitz_regularizer(kind, beta=0.01)
    conv, fc = model[0], model[3]
    if kind == "parseval_neft":
        expected = parseval_neft_penalty(conv.weight) + parseval_neft_penalty(fc.weight)
    elif kind == "parseval_matrix":
        expected = parseval_matrix_penalty(conv.weight) + parseval_matrix_penalty(fc.weight)
    else:
        expected = spectral_penalty(conv.weight, key="0") + spectral_penalty(fc.weight, key="3")
    value = reg(model)
    assert float(value.detach()) == pytest.approx(0.01 * float(expected.detach()), rel=1e-5)
    value.backward()
    assert conv.weight.grad is not None
    # deterministic (no hidden state): same value twice
    assert float(reg(model).detach()) == float(value.detach())
    assert reg.describe()["kind"] == kind


def test_regularizer_exclude_and_errors() -> None:
    model = _tiny()
    only_conv = lipschitz_regularizer("parseval_matrix", 1.0, exclude=("3",))
    with torch.no_grad():
        assert float(only_conv(model)) == pytest.approx(float(parseval_matrix_penalty(model[0].weight)), rel=1e-6)
    with pytest.raises(ValueError, match="kind"):
        lipschitz_regularizer("frobenius")
    with pytest.raises(ValueError, match="beta"):
        lipschitz_regularizer("spectral", beta=-1.0)
    with pytest.raises(ValueError, match="lam"):
        LipschitzRegularizer(lam=0.0)
    with pytest.raises(ValueError, match="weight"):
        parseval_neft_penalty(torch.ones(3))


def test_training_with_penalty_reduces_it() -> None:
    """A few SGD steps on the penalty alone drive a layer towards a Parseval map."""
    model = _tiny()
    reg = lipschitz_regularizer("parseval_matrix", beta=1.0)
    before = float(reg.penalty(model).detach())
    bound_before = lipschitz_upper_bound(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(200):
        opt.zero_grad()
        reg(model).backward()
        opt.step()
    assert float(reg.penalty(model).detach()) < 0.05 * before
    norms = layer_spectral_norms(model)
    assert set(norms) == {"0", "3"}
    assert all(abs(v - 1.0) < 0.1 for v in norms.values())
    assert lipschitz_upper_bound(model) != bound_before
