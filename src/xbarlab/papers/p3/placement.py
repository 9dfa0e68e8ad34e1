"""Where to put compensation branches: RL (REINFORCE), greedy, all layers, none and random placements.

A placement is a set of layer names. Its **overhead** is the sum of the per-layer branch costs (in % of the base
model; costs are additive because every branch is independent) and must stay within ``budget``. Its **reward**
is ``R = accuracy_under_variation − λ·overhead`` (accuracy in %, overhead in %, λ in points per %), with the
accuracy given by a pluggable ``evaluate(placement) -> accuracy`` (in the P3 pipeline: train the branches of that
placement with resampled chips, then measure accuracy over chips on held-out images). Every method calls
``evaluate`` through a cache, so repeated placements cost nothing and each result reports how many distinct
placements it evaluated.

RL agent (:func:`reinforce_placement`), a policy-gradient variant of AMC/HAQ's layer-by-layer agent:

* **episode**: the agent walks the layers in network order and makes one binary decision per layer;
* **state** at layer t: one-hot layer index; the caller's per-layer features (e.g. log parameter count, share
  of MACs, measured sensitivity); the layer's cost and the remaining budget, both as fractions of the budget;
  the previous action; the fraction of layers already compensated; t/L;
* **action**: add a branch after layer t (1) or not (0), sampled from a Bernoulli whose probability is a small
  MLP (one hidden tanh layer) of the state. An action that would exceed the budget is masked to 0, so every
  episode is feasible;
* **reward**: R at the end of the episode (no intermediate reward);
* **update**: REINFORCE with an exponential-moving-average baseline, advantages normalised by a running standard
  deviation, an entropy bonus, Adam;
* **episode budget**: ``episodes`` sampled episodes (each costs one ``evaluate`` call when its placement is new);
  at the end the policy's greedy (most likely) placement is evaluated too. The returned placement is the best by
  reward among all evaluated ones (as AMC keeps its best explored policy).

Greedy (:func:`greedy_placement`): start empty; repeatedly add the feasible layer with the largest accuracy gain
per unit of overhead, ``(acc(P ∪ {l}) − acc(P)) / cost_l``, while that gain is positive (``mode="iterative"``);
``mode="ranked"`` ranks layers once by their single-layer gain per overhead and adds them in that order while
the accuracy keeps improving (fewer evaluations for deep networks).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "CachedEvaluator",
    "PlacementProblem",
    "PlacementResult",
    "all_layers_placement",
    "brute_force_placement",
    "greedy_placement",
    "none_placement",
    "random_placement",
    "reinforce_placement",
]

Placement = frozenset[str]


@dataclass(frozen=True)
class PlacementProblem:
    """A placement search: layers, their branch costs (%), the overhead budget (%), λ and the evaluator.

    Attributes:
        layers: candidate layer names in network order.
        costs: overhead of a branch after each layer, in % of the base model (same order as ``layers``).
        budget: largest total overhead allowed, in %.
        evaluate: ``evaluate(placement) -> accuracy under variation`` in %.
        penalty: λ, accuracy points subtracted per % of overhead in the reward.
        features: optional per-layer state features for the RL agent (same length for every layer).
    """

    layers: tuple[str, ...]
    costs: tuple[float, ...]
    budget: float
    evaluate: Callable[[Placement], float]
    penalty: float = 0.2
    features: tuple[tuple[float, ...], ...] | None = None

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("layers: empty; allowed: at least one layer name")
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers: invalid value {self.layers!r}; allowed: distinct names")
        if len(self.costs) != len(self.layers):
            raise ValueError(f"costs: {len(self.costs)} values; allowed: one per layer ({len(self.layers)})")
        for name, c in zip(self.layers, self.costs, strict=True):
            if not math.isfinite(c) or c < 0:
                raise ValueError(f"costs[{name}]: invalid value {c!r}; allowed: a finite number >= 0")
        if not math.isfinite(self.budget) or self.budget < 0:
            raise ValueError(f"budget: invalid value {self.budget!r}; allowed: a finite number >= 0 (%)")
        if not math.isfinite(self.penalty) or self.penalty < 0:
            raise ValueError(f"penalty: invalid value {self.penalty!r}; allowed: a finite number >= 0")
        if self.features is not None:
            if len(self.features) != len(self.layers):
                raise ValueError(f"features: {len(self.features)} rows; allowed: one per layer ({len(self.layers)})")
            widths = {len(f) for f in self.features}
            if len(widths) != 1:
                raise ValueError(f"features: rows of lengths {sorted(widths)}; allowed: equal lengths")

    def cost_of(self, placement: Iterable[str]) -> float:
        """Total overhead (%) of a placement, summed in network order (a set's iteration order depends on the
        process's string hashing, and float addition on its order: the sum must not)."""
        index = {n: i for i, n in enumerate(self.layers)}
        for name in placement:
            if name not in index:
                raise KeyError(f"placement: unknown layer {name!r}; allowed: {list(self.layers)}")
        total = 0.0
        for i in sorted(index[name] for name in set(placement)):
            total += self.costs[i]
        return total

    def feasible(self, placement: Iterable[str]) -> bool:
        """Whether the placement's overhead is within the budget (with a 1e-9 % tolerance)."""
        return self.cost_of(placement) <= self.budget + 1e-9

    def reward(self, accuracy: float, placement: Iterable[str]) -> float:
        """R = accuracy − λ·overhead."""
        return accuracy - self.penalty * self.cost_of(placement)


class CachedEvaluator:
    """Memoises ``problem.evaluate`` by placement and records every distinct evaluation in order."""

    def __init__(self, problem: PlacementProblem) -> None:
        self.problem = problem
        self.cache: dict[Placement, float] = {}
        self.order: list[Placement] = []

    def __call__(self, placement: Iterable[str]) -> float:
        key = frozenset(placement)
        if key not in self.cache:
            self.cache[key] = float(self.problem.evaluate(key))
            self.order.append(key)
        return self.cache[key]

    @property
    def evaluations(self) -> int:
        return len(self.order)

    def history(self) -> list[dict[str, Any]]:
        """Every distinct evaluation: placement (network order), accuracy, overhead, reward."""
        out = []
        for key in self.order:
            acc = self.cache[key]
            out.append(
                {
                    "placement": _ordered(self.problem, key),
                    "accuracy": acc,
                    "overhead": self.problem.cost_of(key),
                    "reward": self.problem.reward(acc, key),
                }
            )
        return out


@dataclass
class PlacementResult:
    """A placement chosen by one method, with its accuracy, overhead (%), reward and search cost."""

    method: str
    placement: tuple[str, ...]
    accuracy: float
    overhead: float
    reward: float
    evaluations: int
    within_budget: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, with_history: bool = False) -> dict[str, Any]:
        out = {
            "method": self.method,
            "placement": list(self.placement),
            "accuracy": self.accuracy,
            "overhead": self.overhead,
            "reward": self.reward,
            "evaluations": self.evaluations,
            "within_budget": self.within_budget,
            "info": self.info,
        }
        if with_history:
            out["history"] = self.history
        return out


def _ordered(problem: PlacementProblem, placement: Iterable[str]) -> list[str]:
    chosen = set(placement)
    return [n for n in problem.layers if n in chosen]


def _result(
    method: str, problem: PlacementProblem, placement: Iterable[str], ev: CachedEvaluator, **info: Any
) -> PlacementResult:
    key = frozenset(placement)
    acc = ev(key)
    return PlacementResult(
        method=method,
        placement=tuple(_ordered(problem, key)),
        accuracy=acc,
        overhead=problem.cost_of(key),
        reward=problem.reward(acc, key),
        evaluations=ev.evaluations,
        within_budget=problem.feasible(key),
        history=ev.history(),
        info=dict(info),
    )


def none_placement(problem: PlacementProblem, evaluator: CachedEvaluator | None = None) -> PlacementResult:
    """No compensation."""
    ev = evaluator or CachedEvaluator(problem)
    return _result("none", problem, (), ev)


def all_layers_placement(problem: PlacementProblem, evaluator: CachedEvaluator | None = None) -> PlacementResult:
    """A branch after every layer (reported even when it exceeds the budget: see ``within_budget``)."""
    ev = evaluator or CachedEvaluator(problem)
    return _result("all", problem, problem.layers, ev)


def greedy_placement(
    problem: PlacementProblem, *, mode: str = "iterative", evaluator: CachedEvaluator | None = None
) -> PlacementResult:
    """Greedy by accuracy gain per % overhead (see the module docstring for ``iterative`` and ``ranked``)."""
    if mode not in ("iterative", "ranked"):
        raise ValueError(f"mode: invalid value {mode!r}; allowed: 'iterative' or 'ranked'")
    ev = evaluator or CachedEvaluator(problem)
    current: set[str] = set()
    acc = ev(current)
    eps = 1e-6
    if mode == "iterative":
        while True:
            best: tuple[float, str] | None = None
            for i, name in enumerate(problem.layers):
                if name in current or not problem.feasible(current | {name}):
                    continue
                gain = ev(current | {name}) - acc
                ratio = gain / max(problem.costs[i], eps)
                if gain > 0 and (best is None or ratio > best[0]):
                    best = (ratio, name)
            if best is None:
                break
            current.add(best[1])
            acc = ev(current)
    else:
        ranking = []
        for i, name in enumerate(problem.layers):
            if problem.feasible({name}):
                gain = ev({name}) - acc
                ranking.append((gain / max(problem.costs[i], eps), gain, name))
        ranking.sort(key=lambda r: (-r[0], problem.layers.index(r[2])))
        for _ratio, gain, name in ranking:
            if gain <= 0 or not problem.feasible(current | {name}):
                continue
            new_acc = ev(current | {name})
            if new_acc > acc:
                current.add(name)
                acc = new_acc
    return _result("greedy", problem, current, ev, mode=mode)


def _random_feasible(problem: PlacementProblem, rng: random.Random) -> set[str]:
    chosen = {n for n in problem.layers if rng.random() < 0.5}
    while not problem.feasible(chosen):
        chosen.discard(rng.choice(sorted(chosen)))
    return chosen


def random_placement(
    problem: PlacementProblem, *, samples: int = 10, seed: int = 0, evaluator: CachedEvaluator | None = None
) -> PlacementResult:
    """``samples`` random feasible placements (each layer with probability ½, then random layers dropped until
    within budget). Returns the best by reward; ``info`` holds the mean reward and accuracy of the samples."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: invalid value {samples!r}; allowed: an integer >= 1")
    ev = evaluator or CachedEvaluator(problem)
    rng = random.Random(seed)
    drawn = [frozenset(_random_feasible(problem, rng)) for _ in range(samples)]
    rewards = [problem.reward(ev(p), p) for p in drawn]
    accs = [ev(p) for p in drawn]
    best = max(range(samples), key=lambda i: (rewards[i], -i))
    return _result(
        "random",
        problem,
        drawn[best],
        ev,
        samples=samples,
        seed=seed,
        mean_reward=sum(rewards) / samples,
        mean_accuracy=sum(accs) / samples,
    )


def brute_force_placement(problem: PlacementProblem, evaluator: CachedEvaluator | None = None) -> PlacementResult:
    """The best feasible placement by exhaustive search (2^L evaluations: small problems and tests only)."""
    if len(problem.layers) > 16:
        raise ValueError(f"layers: {len(problem.layers)} layers; allowed: <= 16 for exhaustive search")
    ev = evaluator or CachedEvaluator(problem)
    best: tuple[float, frozenset[str]] | None = None
    for r in range(len(problem.layers) + 1):
        for combo in itertools.combinations(problem.layers, r):
            key = frozenset(combo)
            if not problem.feasible(key):
                continue
            reward = problem.reward(ev(key), key)
            if best is None or reward > best[0]:
                best = (reward, key)
    assert best is not None
    return _result("brute_force", problem, best[1], ev)


# ------------------------------------------------------------------------------------------------ REINFORCE


class _Policy(nn.Module):
    def __init__(self, state_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(state_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state).squeeze(-1)


def _states(problem: PlacementProblem) -> torch.Tensor:
    """Static part of the state of every layer: one-hot index, caller features, cost / budget, t / L."""
    n = len(problem.layers)
    rows = []
    budget = max(problem.budget, 1e-9)
    for t in range(n):
        onehot = [1.0 if j == t else 0.0 for j in range(n)]
        feats = list(problem.features[t]) if problem.features is not None else []
        rows.append([*onehot, *feats, min(problem.costs[t] / budget, 10.0), t / max(1, n - 1)])
    return torch.tensor(rows, dtype=torch.float64)


def _rollout(
    policy: _Policy, problem: PlacementProblem, static: torch.Tensor, gen: torch.Generator | None, greedy: bool
) -> tuple[set[str], torch.Tensor, torch.Tensor]:
    """One episode: returns (placement, Σ log π(a|s) of unmasked steps, Σ entropy)."""
    chosen: set[str] = set()
    spent = 0.0
    prev = 0.0
    log_prob = torch.zeros((), dtype=torch.float64)
    entropy = torch.zeros((), dtype=torch.float64)
    budget = max(problem.budget, 1e-9)
    n = len(problem.layers)
    for t, name in enumerate(problem.layers):
        remaining = problem.budget - spent
        dynamic = torch.tensor([max(remaining, 0.0) / budget, prev, len(chosen) / n], dtype=torch.float64)
        state = torch.cat([static[t], dynamic])
        if problem.costs[t] > remaining + 1e-9:
            prev = 0.0
            continue
        p = torch.sigmoid(policy(state)).clamp(1e-6, 1 - 1e-6)
        prob = float(p.detach())
        if greedy:
            action = 1.0 if prob >= 0.5 else 0.0
        else:
            action = 1.0 if float(torch.rand((), generator=gen, dtype=torch.float64)) < prob else 0.0
        log_prob = log_prob + (torch.log(p) if action else torch.log1p(-p))
        entropy = entropy - (p * torch.log(p) + (1 - p) * torch.log1p(-p))
        if action:
            chosen.add(name)
            spent += problem.costs[t]
        prev = action
    return chosen, log_prob, entropy


def reinforce_placement(
    problem: PlacementProblem,
    *,
    episodes: int = 60,
    seed: int = 0,
    lr: float = 0.02,
    hidden: int = 16,
    baseline_decay: float = 0.8,
    entropy_weight: float = 0.05,
    evaluator: CachedEvaluator | None = None,
    log: Callable[[str], None] | None = None,
) -> PlacementResult:
    """REINFORCE placement agent (see the module docstring). Same problem and seed → same result.

    Args:
        episodes: sampled episodes (the episode budget); each new placement costs one ``evaluate`` call.
        lr: Adam learning rate of the policy.
        hidden: hidden units of the policy MLP.
        baseline_decay: EMA factor of the reward baseline (advantages are divided by the standard deviation of
            all rewards so far).
        entropy_weight: entropy bonus per episode.
    """
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes: invalid value {episodes!r}; allowed: an integer >= 1")
    if not 0 <= baseline_decay < 1:
        raise ValueError(f"baseline_decay: invalid value {baseline_decay!r}; allowed: in [0, 1)")
    ev = evaluator or CachedEvaluator(problem)
    gen = torch.Generator().manual_seed(int(seed))
    static = _states(problem)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(int(seed))
    policy = _Policy(static.shape[1] + 3, hidden).double()
    torch.random.set_rng_state(torch_state)
    # start from the inclusion probability that would just fill the budget on average
    p0 = min(0.9, max(0.1, problem.budget / max(sum(problem.costs), 1e-9)))
    last = policy.net[-1]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        last.bias.fill_(math.log(p0 / (1 - p0)))
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    baseline: float | None = None
    rewards: list[float] = []
    for episode in range(episodes):
        chosen, log_prob, entropy = _rollout(policy, problem, static, gen, greedy=False)
        reward = problem.reward(ev(chosen), chosen)
        rewards.append(reward)
        if baseline is None:
            baseline = reward
        mean = sum(rewards) / len(rewards)
        spread = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards)) if len(rewards) > 1 else 0.0
        advantage = (reward - baseline) / max(spread, 1e-3)
        loss = -(advantage * log_prob) - entropy_weight * entropy
        optimizer.zero_grad()
        if loss.requires_grad:
            loss.backward()
            optimizer.step()
        baseline = baseline_decay * baseline + (1 - baseline_decay) * reward
        if log is not None:
            log(
                f"RL episode {episode + 1}/{episodes}: placement {_ordered(problem, chosen)} "
                f"reward {reward:.3f} (baseline {baseline:.3f}, evaluations {ev.evaluations})"
            )
    final, _, _ = _rollout(policy, problem, static, None, greedy=True)
    ev(final)
    best_key = max(ev.order, key=lambda k: (problem.reward(ev.cache[k], k), -ev.order.index(k)))
    feasible = [k for k in ev.order if problem.feasible(k)]
    if not problem.feasible(best_key) and feasible:
        best_key = max(feasible, key=lambda k: problem.reward(ev.cache[k], k))
    return _result(
        "rl",
        problem,
        best_key,
        ev,
        episodes=episodes,
        seed=seed,
        lr=lr,
        hidden=hidden,
        final_policy_placement=_ordered(problem, final),
        episode_rewards=rewards,
    )


def layer_features(
    params: Sequence[int], macs: Sequence[int], sensitivity: Sequence[float] | None = None
) -> tuple[tuple[float, ...], ...]:
    """Per-layer RL features: log10 of the layer's parameters, its share of MACs and (optionally) a sensitivity
    such as the accuracy drop when only that layer varies (in %/100)."""
    total = max(1, sum(macs))
    rows = []
    for i, (p, m) in enumerate(zip(params, macs, strict=True)):
        row = [math.log10(max(1, p)) / 6.0, m / total]
        if sensitivity is not None:
            row.append(sensitivity[i] / 100.0)
        rows.append(tuple(row))
    return tuple(rows)
