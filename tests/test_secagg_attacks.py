"""A malicious server's attacks (issue 9, items 1-4), driven through ``protocol.secure_sum``.

Each attack is a wrapper around the honest round's in-process transport
(:mod:`fedkd.attacks.secagg`); :func:`fedkd.attacks.secagg.leakage.assess` says which exact sums the
attacker can compute from what it saw. Without a roster (the curious-server mode) split views
and key substitution still release one client's input -- the tests check that the attack code
really recovers it -- and with a roster every attack ends with no sum over fewer than ``t``
clients. The property tests draw arbitrary per-client lists and key substitutions.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedkd.attacks.secagg as attacks
from fedkd.secagg.config import majority_threshold
from fedkd.secagg.quantize import Quantizer

D = 6


def _inputs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=4.0, size=D) for _ in range(n)]


def _qsum(inputs: list[np.ndarray], group: tuple[int, ...] | list[int]) -> np.ndarray:
    quantizer = Quantizer(64.0, 32)
    total = np.zeros(D, dtype=np.uint64)
    for v in group:
        total += quantizer.encode(inputs[v], warn=False).values
    return total


def _refusals(run: attacks.AttackRun) -> str:
    return " | ".join(str(r) for r in run.sim.refusals())


# --- 1. SecAgg+ neighbourhood lie --------------------------------------------------------


@pytest.mark.parametrize(("n", "k", "t"), [(12, 4, 3), (20, 4, 5), (50, 2, 2)])
@pytest.mark.parametrize("roster", [False, True])
def test_neighbourhood_lie_releases_nothing(n: int, k: int, t: int, roster: bool) -> None:
    inputs = _inputs(n)
    run = attacks.run_attack(
        inputs,
        lambda inner: attacks.NeighbourhoodLie(inner, 0),
        neighbours=k,
        threshold=t,
        roster=roster,
        server_roster=False,
    )
    assert not run.leak.exposes_fewer_than(t), run.leak.smallest
    assert 0 not in run.leak.seeds  # the target's self-mask seed never comes back
    refused = _refusals(run)
    assert "listed as dropped" in refused or "share holders survive" in refused


# --- 2. split views ----------------------------------------------------------------------


def test_split_views_without_roster_release_a_small_group_exactly() -> None:
    """The attack is real: in the curious-server mode it recovers the sum of 4 < t = 6."""
    inputs, group = _inputs(10), (0, 1, 2, 3)
    plan = attacks.split_view_plan(10, 6, group)
    assert plan is not None and all(len(view) == 6 for view in plan.values())
    run = attacks.run_attack(inputs, lambda inner: attacks.SplitViews(inner, plan), threshold=6)
    assert run.leak.smallest == group
    np.testing.assert_array_equal(run.recovered(), _qsum(inputs, group))


@pytest.mark.parametrize(("n", "t", "group"), [(10, 6, (0, 1, 2, 3)), (9, 5, (4, 5))])
def test_split_views_with_roster_are_refused(n: int, t: int, group: tuple[int, ...]) -> None:
    plan = attacks.split_view_plan(n, t, group)
    assert plan is not None
    run = attacks.run_attack(
        _inputs(n),
        lambda inner: attacks.SplitViews(inner, plan),
        threshold=t,
        roster=True,
        server_roster=False,
    )
    assert not run.leak.exposes_fewer_than(t)
    assert run.leak.smallest is None  # no sum at all: nobody unmasked
    assert "endorsed the survivor set" in _refusals(run)


# --- 3. key substitution -----------------------------------------------------------------


@pytest.mark.parametrize("neighbours", [None, 4])
def test_key_substitution_without_roster_recovers_the_target(neighbours: int | None) -> None:
    inputs = _inputs(10)
    run = attacks.run_attack(
        inputs, lambda inner: attacks.KeySubstitution(inner, 3), neighbours=neighbours
    )
    assert run.leak.smallest == (3,)
    np.testing.assert_array_equal(run.recovered(), _qsum(inputs, [3]))


@pytest.mark.parametrize("neighbours", [None, 4])
def test_key_substitution_with_roster_is_refused(neighbours: int | None) -> None:
    run = attacks.run_attack(
        _inputs(10),
        lambda inner: attacks.KeySubstitution(inner, 3),
        neighbours=neighbours,
        roster=True,
        server_roster=False,
    )
    # The target and whoever was shown its fake keys refuse; on a sparse graph the clients
    # the attack did not touch may still complete a round of their own (of >= t clients).
    assert not run.leak.exposes_fewer_than(3) and 3 not in run.leak.seeds and not run.leak.keys
    assert "not signed by the roster key" in _refusals(run)
    assert not run.attack.observed.stolen


# --- 4. replay under a fresh round id ----------------------------------------------------


def test_replay_without_freshness_gives_the_target_by_difference() -> None:
    """Clients not told the current round answer the replay: the attack is real."""
    inputs = _inputs(8)
    run = attacks.run_attack(
        inputs, lambda inner: attacks.ReplayUnderFreshRound(inner, 5), fresh=False
    )
    first, again = run.sim.outcome.result, run.attack
    assert first is not None and again.replayed is not None and again.replayed.result is not None
    difference = first.quantized_sum - again.replayed.result.quantized_sum
    np.testing.assert_array_equal(difference, _qsum(inputs, [5]))


@pytest.mark.parametrize("roster", [False, True])
def test_replay_under_a_fresh_round_id_is_refused(roster: bool) -> None:
    run = attacks.run_attack(
        _inputs(8),
        lambda inner: attacks.ReplayUnderFreshRound(inner, 5),
        roster=roster,
        server_roster=False,
    )
    assert run.sim.outcome.result is not None  # the honest round itself completes
    assert run.attack.replayed is not None and run.attack.replayed.result is None
    assert "round 1001" in run.attack.replayed.failed[0]
    assert "re-numbered or foreign round is refused" in run.attack.replayed.failed[0]


# --- property tests: any lists, any key substitutions ------------------------------------

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def servers(draw: st.DrawFn) -> dict:
    n = draw(st.integers(4, 9))
    k = n - 1 if draw(st.booleans()) else draw(st.sampled_from([2, 4]) if n > 5 else st.just(2))
    if k < n - 1 and k % 2 == 1 and n % 2 == 1:
        k -= 1
    t = draw(st.integers(majority_threshold(k), k + 1))
    nodes = st.sets(st.integers(0, n - 1))
    survivors = draw(st.dictionaries(st.integers(0, n - 1), nodes))
    dropped = draw(st.dictionaries(st.integers(0, n - 1), nodes))
    every_pair = list(itertools.permutations(range(n), 2))
    pairs = draw(st.sets(st.sampled_from(every_pair), max_size=n))
    target = draw(st.integers(0, n - 1))
    if draw(st.booleans()):  # isolate the target's keys (on top of the random swaps)
        pairs |= {(target, v) for v in range(n) if v != target}
        pairs |= {(v, target) for v in range(n) if v != target}
    if k == n - 1 and t > 2 and draw(st.booleans()):  # split views for a group below t
        size = draw(st.integers(1, t - 1))
        plan = attacks.split_view_plan(n, t, range(size))
        survivors = {**(plan or {}), **survivors} if draw(st.booleans()) else (plan or survivors)
    return dict(n=n, k=k, t=t, survivors=survivors, dropped=dropped, pairs=pairs)


@SETTINGS
@given(servers())
def test_any_lists_and_key_substitutions_leave_no_small_sum(case: dict) -> None:
    run = attacks.run_attack(
        _inputs(case["n"]),
        lambda inner: attacks.ArbitraryServer(
            inner, case["survivors"], case["dropped"], case["pairs"]
        ),
        neighbours=case["k"],
        threshold=case["t"],
        roster=True,
        server_roster=False,
    )
    assert not run.leak.exposes_fewer_than(case["t"]), (run.leak.smallest, case)
    if run.leak.smallest is not None:  # whatever the server can sum, it sums correctly
        np.testing.assert_array_equal(run.recovered(), _qsum(_inputs(case["n"]), run.leak.smallest))


def test_honest_round_releases_exactly_the_survivors() -> None:
    """The leakage assessment is not vacuous: an honest round releases the survivor set."""
    inputs = _inputs(7)
    for roster in (False, True):
        run = attacks.run_attack(inputs, attacks.Attack, roster=roster)
        assert run.sim.outcome.result is not None
        assert run.leak.groups == (tuple(range(7)),)
        np.testing.assert_array_equal(run.recovered(), run.sim.outcome.result.quantized_sum)
