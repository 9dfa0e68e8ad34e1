"""Compensation placement (P3): RL agent vs random on a synthetic problem with a known best; greedy, all, none."""

from __future__ import annotations

import pytest

from xbarlab.papers.p3.placement import (
    CachedEvaluator,
    PlacementProblem,
    all_layers_placement,
    brute_force_placement,
    greedy_placement,
    layer_features,
    none_placement,
    random_placement,
    reinforce_placement,
)

pytestmark = pytest.mark.usefixtures("single_thread")


LAYERS = tuple(f"l{i}" for i in range(10))
COSTS = (1.0, 2.0, 3.0, 1.5, 4.0, 2.5, 1.0, 3.5, 2.0, 1.0)
# fraction of the remaining error each branch removes (diminishing returns when combined)
GAINS = (0.05, 0.30, 0.45, 0.10, 0.50, 0.25, 0.02, 0.40, 0.20, 0.08)


def _accuracy(placement: frozenset[str]) -> float:
    keep = 1.0
    for name, gain in zip(LAYERS, GAINS, strict=True):
        if name in placement:
            keep *= 1.0 - gain
    return 20.0 + 70.0 * (1.0 - keep)


def _problem(**kw: object) -> PlacementProblem:
    args: dict = {"layers": LAYERS, "costs": COSTS, "budget": 8.0, "evaluate": _accuracy, "penalty": 0.5}
    args.update(kw)
    return PlacementProblem(**args)


def test_rl_beats_random_and_finds_the_known_best() -> None:
    problem = _problem()
    best = brute_force_placement(problem)
    # the known optimum (exhaustive search over 2^10 placements)
    assert best.placement == ("l2", "l4", "l9")
    rl = reinforce_placement(problem, episodes=120, seed=2)
    assert rl.within_budget
    assert rl.placement == best.placement
    assert rl.evaluations < 2 ** len(LAYERS) // 10  # found while evaluating a small share of the space
    rnd = random_placement(problem, samples=rl.evaluations, seed=2)
    assert rl.reward > rnd.info["mean_reward"] + 5.0
    assert rl.reward >= rnd.reward
    # greedy by gain per overhead is trapped by the cheap layers here
    greedy = greedy_placement(problem)
    assert greedy.reward < best.reward


def test_rl_is_reproducible_and_budget_respected() -> None:
    problem = _problem(budget=5.0)
    a = reinforce_placement(problem, episodes=20, seed=7)
    b = reinforce_placement(problem, episodes=20, seed=7)
    assert a.placement == b.placement and a.info["episode_rewards"] == b.info["episode_rewards"]
    assert all(problem.feasible(h["placement"]) for h in a.history)
    assert a.info["final_policy_placement"] is not None


def test_baselines() -> None:
    problem = _problem()
    none = none_placement(problem)
    assert none.placement == () and none.accuracy == 20.0 and none.overhead == 0.0
    everything = all_layers_placement(problem)
    assert everything.placement == LAYERS
    assert everything.overhead == pytest.approx(sum(COSTS)) and not everything.within_budget
    ev = CachedEvaluator(problem)
    greedy = greedy_placement(problem, evaluator=ev)
    assert greedy.within_budget and greedy.accuracy > none.accuracy
    # iterative greedy: the first pick has the largest single-layer gain per overhead
    ratios = {n: (_accuracy(frozenset({n})) - 20.0) / c for n, c in zip(LAYERS, COSTS, strict=True)}
    assert max(ratios, key=ratios.__getitem__) in greedy.placement
    assert greedy.evaluations == ev.evaluations
    ranked = greedy_placement(problem, mode="ranked")
    assert ranked.within_budget
    rnd = random_placement(problem, samples=8, seed=0)
    assert rnd.within_budget and rnd.info["samples"] == 8


def test_problem_validation_and_features() -> None:
    with pytest.raises(ValueError, match="costs"):
        _problem(costs=(1.0,))
    with pytest.raises(ValueError, match="budget"):
        _problem(budget=-1.0)
    with pytest.raises(ValueError, match="distinct"):
        _problem(layers=("a", "a", *LAYERS[2:]))
    with pytest.raises(ValueError, match="mode"):
        greedy_placement(_problem(), mode="beam")
    feats = layer_features([100, 1000], [10, 30], [5.0, 1.0])
    assert feats[0] == pytest.approx((2 / 6, 0.25, 0.05))
    problem = _problem(features=tuple((float(i),) for i in range(10)))
    assert reinforce_placement(problem, episodes=5, seed=0).within_budget


def test_overhead_sum_does_not_depend_on_the_set_order() -> None:
    # 0.1 + 0.2 + 0.3 and 0.3 + 0.2 + 0.1 differ in the last bit: the overhead is summed in network order
    problem = PlacementProblem(layers=("a", "b", "c"), costs=(0.1, 0.2, 0.3), budget=1.0, evaluate=lambda p: 0.0)
    assert (0.1 + 0.2) + 0.3 != (0.3 + 0.2) + 0.1
    assert problem.cost_of(["c", "b", "a"]) == problem.cost_of(["a", "b", "c"]) == (0.1 + 0.2) + 0.3
    with pytest.raises(KeyError, match="unknown layer 'd'"):
        problem.cost_of(["a", "d"])
