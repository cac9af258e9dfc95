"""The node's release ledger: its rules, its file, and its budget arithmetic."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkd.dp.accounting import calibrate_noise_multiplier
from fedkd.fl import node_budget
from fedkd.fl.config import parse_run_config
from fedkd.fl.ledger import (
    LEDGER_FILE,
    SECRET_FILE,
    LedgerRefusal,
    Release,
    ReleaseLedger,
    Training,
    default_root,
    refusal_rule,
    set_digest,
)


def release(
    vector: str = "v", participants: tuple[str, ...] | None = ("0", "1", "2"), **fields: Any
) -> Release:
    """A release of ``vector`` masked for ``participants`` (``None``: in the clear)."""
    names = None if participants is None else set_digest(participants)
    defaults: dict[str, Any] = {"federation": "f", "round": 1, "run": 1, "encoded": "e"}
    members = 0 if participants is None else len(participants)
    return Release(**{**defaults, **fields}, vector=vector, participants=names, members=members)


def test_a_vector_is_released_for_one_participant_set_and_one_encoding(tmp_path: Path) -> None:
    ledger = ReleaseLedger.open(tmp_path, "partition-0-of-3")
    ledger.record_release(release(), budgeted=False)
    ledger.record_release(release(run=2), budgeted=False)  # an identical re-run: allowed
    with pytest.raises(LedgerRefusal, match=r"\(vector\).*participant set") as refused:
        ledger.record_release(release(participants=("0", "2"), run=3), budgeted=False)
    assert refused.value.rule == "vector"
    reason = f"share_keys: error reply (403): {refused.value}"  # as the server records it
    assert refusal_rule(reason) == "vector" and refusal_rule("train: timed out") is None
    # Re-encoded for the same set (another secagg-bits): only the same set's sum, again.
    ledger.record_release(release(encoded="e2", run=3), budgeted=False)
    # In the clear: the vector itself (the operator's require-secagg decides); pins nothing.
    ledger.record_release(release(participants=None, run=4, round=2), budgeted=False)
    noisy = release("n", noise_multiplier=1.0, sampling=1.0)
    ledger.record_release(noisy, budgeted=False)
    with pytest.raises(LedgerRefusal, match="encoding"):  # a second noisy view: refused
        ledger.record_release(release("n", encoded="e2", noise_multiplier=1.0), budgeted=False)
    # The file is the memory: a fresh process (a new open) refuses the same.
    again = ReleaseLedger.open(tmp_path, "partition-0-of-3")
    assert len(again.releases()) == 4  # the identical re-run is the same release
    with pytest.raises(LedgerRefusal):
        again.record_release(release(participants=("0", "1")), budgeted=False)


def test_one_survivor_set_is_certified_per_vector(tmp_path: Path) -> None:
    ledger = ReleaseLedger.open(tmp_path, "n")
    ledger.certify("v", ("0", "1", "2"))
    ledger.certify("v", ("0", "1", "2"))  # the same set again: nothing new
    with pytest.raises(LedgerRefusal, match=r"\(survivors\)"):
        ledger.certify("v", ("0", "1"))
    ledger.certify("w", ("0", "1"))  # another vector is another question


def test_a_budgeted_federation_releases_each_round_once(tmp_path: Path) -> None:
    ledger = ReleaseLedger.open(tmp_path, "n")
    ledger.record_release(release("a"), budgeted=True)
    ledger.record_release(release("b", round=1, federation="other"), budgeted=True)
    ledger.record_release(release("c", round=1), budgeted=False)  # no budget: no round rule
    with pytest.raises(LedgerRefusal, match=r"\(round\)"):
        ledger.record_release(release("d", round=1), budgeted=True)
    ledger.record_release(release("d", round=2), budgeted=True)
    assert ledger.released_rounds("f") == {1: "c", 2: "d"}


def test_a_round_is_trained_once_and_a_repeat_is_not_counted_again(tmp_path: Path) -> None:
    ledger = ReleaseLedger.open(tmp_path, "n")
    first = Training("f", 1, 1, "inputs", 1.1, 0.1, 30)
    assert ledger.record_training(first) is False
    assert ledger.record_training(Training("f", 1, 2, "inputs", 1.1, 0.1, 30)) is True
    with pytest.raises(LedgerRefusal, match=r"\(round\)"):
        ledger.record_training(Training("f", 1, 3, "other inputs", 1.1, 0.1, 30))
    assert ledger.trainings("f") == [first]


def test_budget_components_are_pinned_by_the_first_run_that_sets_them(tmp_path: Path) -> None:
    ledger = ReleaseLedger.open(tmp_path, "n")
    assert ledger.pin_budget("f", {"rounds": None, "epsilon": None}) == {}  # nothing to pin
    pinned = ledger.pin_budget("f", {"epsilon": 4.0, "delta": 1e-5, "rounds": 2, "source": "a"})
    assert pinned["epsilon"] == 4.0 and pinned["rounds"] == 2
    pinned = ledger.pin_budget("f", {"epsilon": 8.0, "dpsgd_epsilon": 3.0, "rounds": 9})
    assert (pinned["epsilon"], pinned["dpsgd_epsilon"], pinned["rounds"]) == (4.0, 3.0, 2)
    assert ledger.budget("g") is None


def test_the_file_survives_a_torn_line_and_the_secret_is_private(tmp_path: Path) -> None:
    ledger = ReleaseLedger.open(tmp_path, "n")
    ledger.record_release(release(), budgeted=False)
    with (tmp_path / "n" / LEDGER_FILE).open("a") as handle:
        handle.write('{"v": 1, "kind": "release", "vec')  # a crash mid-append
    again = ReleaseLedger.open(tmp_path, "n")
    assert len(again.releases()) == 1
    again.record_release(release("w"), budgeted=False)  # appends on a line of its own
    lines = (tmp_path / "n" / LEDGER_FILE).read_text().splitlines()
    assert json.loads(lines[-1])["vector"] == "w"
    mode = stat.S_IMODE(os.stat(tmp_path / "n" / SECRET_FILE).st_mode)
    assert mode == 0o600
    # The noise seed is the node's: the same for the same node, another for another node.
    assert again.seed("x", "v") == ledger.seed("x", "v") != ledger.seed("x", "w")
    assert ReleaseLedger.open(tmp_path, "m").seed("x", "v") != ledger.seed("x", "v")
    with pytest.raises(ValueError, match="node name"):
        ReleaseLedger.open(tmp_path, "../up")


def test_the_default_root_follows_fedkd_home(fedkd_home: Path) -> None:
    assert default_root() == fedkd_home / "nodes"


names = st.tuples(*[st.booleans()] * 4).map(lambda keep: tuple(str(i) for i in range(4) if keep[i]))


@settings(max_examples=60, deadline=None)
@given(
    requests=st.lists(
        st.tuples(st.sampled_from("abc"), names, st.sampled_from("xy"), st.integers(1, 3)),
        min_size=1,
        max_size=12,
    )
)
def test_no_sequence_of_requests_releases_a_vector_two_ways(
    tmp_path_factory: pytest.TempPathFactory,
    requests: list[tuple[str, tuple[str, ...], str, int]],
) -> None:
    """Whatever a server asks, in whatever order and across reopenings (new processes), every
    vector the ledger let out was masked for one participant set, and a budgeted federation let
    out one vector per round."""
    root = tmp_path_factory.mktemp("ledger")
    granted: list[Release] = []
    ledger = ReleaseLedger.open(root, "n")
    for i, (vector, participants, encoded, round_) in enumerate(requests):
        if i % 3 == 2:  # now and then a new process: the memory is the file
            ledger = ReleaseLedger.open(root, "n")
        asked = release(vector, participants, encoded=encoded, round=round_, run=i)
        try:
            ledger.record_release(asked, budgeted=True)
        except LedgerRefusal:
            continue
        granted.append(asked)
    for vector in "abc":
        sets = {r.participants for r in granted if r.vector == vector}
        assert len(sets) <= 1
    for round_ in (1, 2, 3):
        assert len({r.vector for r in granted if r.round == round_}) <= 1


def test_a_run_asking_more_than_the_budget_is_named_looser() -> None:
    budget = {"epsilon": 4.0, "delta": 1e-5, "rounds": 2, "dpsgd_epsilon": None}
    fine = {"epsilon": 4.0, "delta": 1e-6, "rounds": 2, "dpsgd_epsilon": None}
    assert node_budget.looser(fine, budget) == []
    assert node_budget.looser({**fine, "epsilon": 8.0}, budget) == [
        "client-level epsilon (dp-epsilon) 8 > this node's 4"
    ]
    problems = node_budget.looser({**fine, "epsilon": None, "rounds": 40}, budget)
    assert "no client-level epsilon" in problems[0] and "num-rounds" in problems[1]
    with pytest.raises(LedgerRefusal, match="round 3 is past"):
        node_budget.check_round(budget, 3)
    assert node_budget.operator_budget({"dp-epsilon": "2", "num-rounds": 5}) == {
        "epsilon": 2.0,
        "rounds": 5,
    }
    with pytest.raises(ValueError, match="'dp-delta'"):
        node_budget.operator_budget({"dp-delta": 2})


def test_the_node_counts_distinct_releases_against_its_epsilon() -> None:
    z = calibrate_noise_multiplier(4.0, 1e-5, rounds=2)
    budget = {"epsilon": 4.0, "delta": 1e-5}
    first = release("a", noise_multiplier=z, sampling=1.0)
    second = release("b", round=2, noise_multiplier=z, sampling=1.0)
    assert node_budget.release_epsilon(budget, [], first) < 4.0
    assert node_budget.release_epsilon(budget, [first], first) < 4.0  # a repeat is free
    assert node_budget.release_epsilon(budget, [first], second) == pytest.approx(4.0, abs=0.01)
    third = release("c", round=3, noise_multiplier=z, sampling=1.0)
    with pytest.raises(LedgerRefusal, match="epsilon to 5.05"):
        node_budget.release_epsilon(budget, [first, second], third)
    with pytest.raises(LedgerRefusal, match="without client-level noise"):
        node_budget.release_epsilon(budget, [], release("d"))


def test_a_simulated_federation_is_its_population() -> None:
    base = parse_run_config({})
    same = parse_run_config({"num-rounds": 40, "dp": "central", "dp-epsilon": 9.0, "lr": 0.1})
    other = parse_run_config({"seed": 1})
    key = node_budget.simulated_federation(base, 5)
    assert node_budget.simulated_federation(same, 5) == key
    assert node_budget.simulated_federation(other, 5) != key
    assert node_budget.simulated_federation(base, 6) != key


def test_a_simulated_nodes_refusal_names_where_its_memory_lives(tmp_path: Path) -> None:
    """A second simulation of the same population meets the first one's ledger by design;
    the refusal says where it is and how to simulate new nodes, a deployed node's does not."""
    from fedkd.fl.client import NodeInfo
    from fedkd.fl.ledger import LedgerRefusal
    from fedkd.fl.release import refusal_text

    refusal = LedgerRefusal("round", "round 2 of this federation was released already")
    simulated = NodeInfo.simulated(1000, 0, 0, 4, **{"state-dir": str(tmp_path)})
    assert str(tmp_path) in refusal_text(simulated, refusal)
    assert "fresh FEDKD_HOME" in refusal_text(simulated, refusal)
    deployed = NodeInfo.from_node_config(
        1000, 0, {"partition-id": 0, "num-partitions": 4}, deployed=True
    )
    assert refusal_text(deployed, refusal) == str(refusal)


@settings(max_examples=30, deadline=None)
@given(writers=st.lists(st.sampled_from(["cached", "other"]), min_size=1, max_size=8))
def test_the_incremental_index_always_equals_a_fresh_read_of_the_file(
    writers: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Two processes of one node: this one's cached ledger, and another's (its own instance).
    # Whatever order they append in, the cached index is what reading the whole file gives.
    root = tmp_path_factory.mktemp("ledger")
    cached, other = ReleaseLedger.open(root, "n"), ReleaseLedger(root / "n")
    for number, writer in enumerate(writers):
        (cached if writer == "cached" else other).record_release(
            release(f"v{number}", round=number + 1), budgeted=False
        )
        assert ReleaseLedger.open(root, "n") is cached
        assert cached.releases() == ReleaseLedger(root / "n").releases()


def test_a_whole_record_left_without_its_newline_counts_once_it_is_ended(tmp_path: Path) -> None:
    ledger = ReleaseLedger.open(tmp_path, "n")
    ledger.record_release(release("a"), budgeted=False)
    whole = (tmp_path / "n" / LEDGER_FILE).read_text().splitlines()[-1].replace('"a"', '"b"')
    with (tmp_path / "n" / LEDGER_FILE).open("a") as handle:
        handle.write(whole)  # a crash after the record but before its newline
    assert [r.vector for r in ReleaseLedger.open(tmp_path, "n").releases()] == ["a"]
    ledger.record_release(release("c"), budgeted=False)  # ends the line: "b" is now in the file
    fresh = ReleaseLedger(tmp_path / "n").releases()
    assert [r.vector for r in ledger.releases()] == [r.vector for r in fresh] == ["a", "b", "c"]
