"""Differencing across runs (issue 25, item 2) and the node's own budget (item 4).

The attack: a server runs a round, then the same round in a new run (fresh per-run client
state, the same pushed student) without one client ``u``; every other client trains
deterministically, so the difference of the two secure sums is ``u``'s vector. Nodes without
memory across runs -- each run with a blank node state, as every client was before the ledger
-- give it away to within a quantisation step; nodes that keep their ledger refuse.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest

from clients.app import app as client_app
from fedkd.attacks.differencing import difference, perturbed, target_vector
from fedkd.attacks.federation import (
    AttackedFederation,
    build_federation,
    federation_over,
    observe_round,
)
from fedkd.dp.accounting import epsilon_of, round_event
from fedkd.fl.config import FedConfig
from fedkd.fl.experiment import FIRST_NODE_ID, simulate
from fedkd.fl.ledger import ReleaseLedger
from fedkd.fl.rounds import secagg_round_config
from fedkd.transport import Envelope, ExchangeResult, Transport
from server.grid_transport import GridTransport
from tests.flower_harness import RUN_ID, InProcessGrid
from tests.relay import Relay

CLIENTS, TARGET = 5, 2


def small(tmp_path: Path, mode: str = "feddf", **overrides: object) -> dict[str, Any]:
    config: dict[str, Any] = {
        **FedConfig().to_dict(),
        "mode": mode,
        "num-rounds": 1,
        "local-epochs": 1,
        "warmup-epochs": 1,
        "distill-epochs": 1,
        "eval-clients": False,
        "out-dir": str(tmp_path / "runs"),
        "node-wait": 5.0,
    }
    config.update(overrides)
    return config


def step(af: AttackedFederation) -> float:
    """One quantisation step of the round's fixed-point codec."""
    return 1.0 / secagg_round_config(af.fed, 1, sorted(af.node_of.values())).quantizer.scale


def refusals(failed: Mapping[int, str], rule: str) -> int:
    return sum(f"ledger refuses ({rule})" in reason for reason in failed.values())


@pytest.mark.parametrize("mode", ["feddf", "fedmd"])
def test_a_repeated_round_without_one_client_gives_it_away_unless_nodes_remember(
    tmp_path: Path, mode: str
) -> None:
    config = small(tmp_path, mode)
    truth = target_vector(config, CLIENTS, TARGET)
    # Before the ledger: each run's nodes start blank.
    first = build_federation(config, CLIENTS, run_id=1, state_dir=tmp_path / "a")
    blank = build_federation(config, CLIENTS, run_id=2, state_dir=tmp_path / "b")
    attack = difference(first, blank, TARGET, truth)
    assert attack.first.survivors == CLIENTS and attack.second.survivors == CLIENTS - 1
    recovered = attack.recovered
    assert recovered is not None
    np.testing.assert_allclose(recovered, truth, rtol=0, atol=step(first))  # u's whole vector
    # The nodes keep their ledger across runs: the repeated round is refused at share keys.
    kept = build_federation(config, CLIENTS, run_id=3, state_dir=tmp_path / "a")
    refused = difference(first, kept, TARGET, truth).second
    assert refused.total is None and refused.survivors == 0
    assert refusals(refused.failed, "vector") == CLIENTS - 1


def test_an_identical_rerun_gets_the_same_sum_and_nothing_new(tmp_path: Path) -> None:
    config = small(tmp_path)
    first = build_federation(config, CLIENTS, run_id=1, state_dir=tmp_path / "n")
    again = build_federation(config, CLIENTS, run_id=2, state_dir=tmp_path / "n")
    everyone = sorted(first.node_of)
    one, two = observe_round(first, 1, everyone), observe_round(again, 1, everyone)
    assert one.total is not None and two.total is not None
    np.testing.assert_array_equal(one.total, two.total)


def test_a_perturbed_student_escapes_the_ledger_but_not_exactly(tmp_path: Path) -> None:
    """The approximate leak that remains (the threat model's residual): new vectors, a new
    release; the difference is then u's vector plus what the perturbation changed."""
    config = small(tmp_path)
    truth = target_vector(config, CLIENTS, TARGET)
    first = build_federation(config, CLIENTS, run_id=1, state_dir=tmp_path / "n")
    second = build_federation(config, CLIENTS, run_id=2, state_dir=tmp_path / "n")
    second.student = perturbed(first.student, 1e-3, seed=0)
    attack = difference(first, second, TARGET, truth)
    assert attack.second.survivors == CLIENTS - 1
    assert 0.0 < attack.relative_error < 1.0  # measured by `fedkd attack differencing`


@pytest.mark.slow
def test_across_rounds_the_constant_weights_difference_unless_participants_are_fixed(
    tmp_path: Path,
) -> None:
    """Within one run the logits change every round, but the class-weight block (the label
    histogram the default teacher rule weighs by) does not: a server that samples everyone in
    round 1 and all but u in round 2 reads u's block from the difference. Nodes with
    ``fixed-participants`` (So et al.'s participation rule, opt-in) refuse round 2."""
    config = small(tmp_path, **{"num-rounds": 2})
    truth = target_vector(config, CLIENTS, TARGET)
    everyone, others = list(range(CLIENTS)), [p for p in range(CLIENTS) if p != TARGET]
    free = build_federation(config, CLIENTS, run_id=1, state_dir=tmp_path / "free")
    block = slice(free.teacher_length - free.data.split.num_classes, free.teacher_length)
    one, two = observe_round(free, 1, everyone), observe_round(free, 2, others)
    assert one.total is not None and two.total is not None
    np.testing.assert_allclose(
        one.total[block] - two.total[block], truth[block], rtol=0, atol=2 * step(free)
    )
    assert not np.allclose(one.total - two.total, truth, atol=2 * step(free))  # logits moved
    fixed = build_federation(
        config,
        CLIENTS,
        run_id=1,
        state_dir=tmp_path / "fixed",
        node_settings={"fixed-participants": True},
    )
    assert observe_round(fixed, 1, everyone).survivors == CLIENTS
    refused = observe_round(fixed, 2, others)
    assert refused.total is None and refusals(refused.failed, "participants") == CLIENTS - 1


class DropsOne(Relay):
    """A server that keeps one client's train message to itself (it "timed out")."""

    def __init__(self, inner: Transport, target: int) -> None:
        self.inner, self.target = inner, target

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        kept = {n: r for n, r in requests.items() if not (r.kind == "train" and n == self.target)}
        result = self.inner.exchange(kept, timeout=timeout, group=group)
        if len(kept) < len(requests):
            result.failures[self.target] = "timed out"
        return result


@pytest.mark.slow
def test_through_simulate_the_refusals_are_the_rounds_dropouts(tmp_path: Path) -> None:
    config = small(tmp_path)
    nodes = tmp_path / "nodes"
    simulate({**config, "run-name": "one"}, CLIENTS, run_id=1, state_dir=nodes)
    second = simulate(
        {**config, "run-name": "two"},
        CLIENTS,
        run_id=2,
        state_dir=nodes,
        wrap=lambda inner: DropsOne(inner, FIRST_NODE_ID + TARGET),
    )
    [row] = second.rows
    assert row.status == "skipped" and row.survivors == 0
    # the server never learnt the silent node's partition (-1); the others refused
    assert row.dropped == [-1, *(p for p in range(CLIENTS) if p != TARGET)]
    reasons = dict(zip(row.dropped, row.dropped_reasons, strict=True))
    assert reasons.pop(-1).endswith("timed out")
    assert all("share_keys" in why and "ledger refuses (vector)" in why for why in reasons.values())


def _grid(config: dict[str, Any], run_id: int) -> tuple[AttackedFederation, InProcessGrid]:
    grid = InProcessGrid(client_app, config, CLIENTS)
    for context in grid.contexts.values():
        context.run_id = run_id
    node_of = dict(enumerate(grid.node_ids))
    return federation_over(config, GridTransport(grid), node_of, run_id=run_id), grid


@pytest.mark.slow
def test_through_the_client_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same attack on Flower's real ClientApp: nodes keep their ledger under
    ``$FEDKD_HOME/nodes`` (the default, as in ``fedkd run``); blank homes give u away."""
    config = small(tmp_path)
    truth = target_vector(config, CLIENTS, TARGET)
    monkeypatch.setenv("FEDKD_HOME", str(tmp_path / "home"))
    first, _ = _grid(config, RUN_ID)
    second, _ = _grid(config, RUN_ID + 1)
    attack = difference(first, second, TARGET, truth)
    assert attack.second.total is None
    assert refusals(attack.second.failed, "vector") == CLIENTS - 1
    monkeypatch.setenv("FEDKD_HOME", str(tmp_path / "blank"))
    blank, _ = _grid(config, RUN_ID + 2)
    others = [p for p in range(CLIENTS) if p != TARGET]
    without = observe_round(blank, 1, others).total
    assert attack.first.total is not None and without is not None
    recovered = attack.first.total - without
    np.testing.assert_allclose(recovered, truth, rtol=0, atol=step(first))


def _epsilon_kept(state: Path, delta: float) -> list[float]:
    """Each node's client-level epsilon over its distinct releases, from its own ledger."""
    spent = []
    for folder in sorted(state.iterdir()):
        releases = ReleaseLedger(folder).releases()
        events = {r.vector: (r.noise_multiplier, r.sampling) for r in releases}
        composed = [round_event(float(z or 0), float(q or 1)) for z, q in events.values()]
        spent.append(epsilon_of(dp_accounting.ComposedDpEvent(composed), delta))
    return spent


@pytest.mark.slow
def test_a_server_cannot_spend_a_nodes_budget_past_its_target(tmp_path: Path) -> None:
    """``dp=distributed dp-epsilon=4 num-rounds=2``: rounds 3 and 40, a second run, a looser
    run are refused; an identical second run is answered with the same noisy sum."""
    config = small(tmp_path, **{"dp": "distributed", "dp-epsilon": 4.0, "num-rounds": 2})
    state, everyone = tmp_path / "nodes", list(range(4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = build_federation(config, 4, run_id=1, state_dir=state)
        views = [observe_round(run, r, everyone) for r in (1, 2, 3, 40)]
        assert [v.survivors for v in views] == [4, 4, 0, 0]
        assert all(refusals(v.failed, "budget") == 4 for v in views[2:])
        again = build_federation(config, 4, run_id=2, state_dir=state)
        repeat = observe_round(again, 1, everyone)
        assert repeat.total is not None and views[0].total is not None
        np.testing.assert_array_equal(repeat.total, views[0].total)  # the noise repeats too
        again.student = perturbed(again.student, 1e-3, seed=0)
        assert refusals(observe_round(again, 2, everyone).failed, "round") == 4
        for looser in ({"dp-epsilon": 8.0}, {"num-rounds": 40}, {"dp": "off"}):
            other = build_federation({**config, **looser}, 4, run_id=3, state_dir=state)
            assert refusals(observe_round(other, 1, everyone).failed, "budget") == 4
    assert max(_epsilon_kept(state, 1e-5)) <= 4.0 * (1 + 1e-6)
    assert min(_epsilon_kept(state, 1e-5)) > 3.9


@pytest.mark.slow
def test_a_dpsgd_node_keeps_its_own_budget(tmp_path: Path) -> None:
    """DP-SGD at a given noise (no calibration: fast): its budget is the epsilon that noise
    gives over ``num-rounds``; round 3 and a second training of round 1 are refused."""
    from fedkd.dp.dpsgd import epsilon_of_history

    config = small(tmp_path, **{"client-dp-sgd": True, "client-dp-noise": 1.5, "num-rounds": 2})
    state, everyone = tmp_path / "nodes", list(range(3))
    run = build_federation(config, 3, run_id=1, state_dir=state)
    views = [observe_round(run, r, everyone) for r in (1, 2, 3)]
    assert [v.survivors for v in views] == [3, 3, 0]
    assert refusals(views[2].failed, "budget") == 3
    again = build_federation(config, 3, run_id=2, state_dir=state)
    again.student = perturbed(again.student, 1e-3, seed=0)
    assert refusals(observe_round(again, 1, everyone).failed, "round") == 3
    spent = []
    for folder in sorted(state.iterdir()):
        ledger = ReleaseLedger(folder)
        history = [
            (t.noise_multiplier, t.sample_rate, t.steps)
            for federation in {r.federation for r in ledger.releases()}
            for t in ledger.trainings(federation)
        ]
        spent.append(epsilon_of_history(history, 1e-5))
    budgets = [
        ReleaseLedger(f).budget(r.federation)
        for f in sorted(state.iterdir())
        for r in ReleaseLedger(f).releases()[:1]
    ]
    assert len(spent) == len(budgets) == 3
    for epsilon, budget in zip(spent, budgets, strict=True):
        assert budget is not None and epsilon <= budget["dpsgd_epsilon"] * (1 + 1e-6)
