"""The operator's view of faults, in process: one log line per fault, ``fedkd status``, and the
silent node that sits the next round out (the same on real processes: test_deployment.py)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from experiments.fault_check import expected_teacher
from fedkd.cli import main as fedkd
from fedkd.cli.status import render, run_status
from fedkd.fl.config import parse_run_config
from fedkd.fl.data import load_run_split
from fedkd.fl.experiment import FIRST_NODE_ID, simulate
from fedkd.fl.journal import read_journal
from fedkd.transport import Envelope, ExchangeResult, Transport, no_reply
from tests.relay import Relay
from tests.test_resume import CLIENTS, small


class Silent(Relay):
    """Node ``node`` says nothing to ``stage`` of round ``server_round`` (a killed process)."""

    def __init__(self, inner: Transport, node: int, server_round: int, stage: str) -> None:
        self.inner, self.node, self.round, self.stage = inner, node, server_round, stage
        self.asked: dict[int, list[int]] = {}  # round -> nodes sent the train request

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        number = int(group.removeprefix("round-"))
        kind = next(iter(requests.values())).kind
        if kind == "train":
            self.asked[number] = sorted(requests)
        if number == self.round and kind == self.stage and self.node in requests:
            rest = {n: r for n, r in requests.items() if n != self.node}
            result = self.inner.exchange(rest, timeout=timeout, group=group)
            result.failures[self.node] = no_reply(timeout)
            return result
        return self.inner.exchange(requests, timeout=timeout, group=group)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["share_keys", "consistency"])
def test_a_silent_node_leaves_one_line_sits_out_a_round_and_comes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stage: str
) -> None:
    node = FIRST_NODE_ID + 1
    seen: list[Silent] = []

    def wrap(transport: Transport) -> Transport:
        seen.append(Silent(transport, node, 1, stage))
        return seen[0]

    with caplog.at_level(logging.INFO, logger="fedkd"):
        recorder = simulate(small(tmp_path, "silent", **{"num-rounds": 3}), CLIENTS, wrap=wrap)
    faults = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fault:")]
    # One line for the fault; a node lost in consistency is asked to unmask all the same (the
    # secure-aggregation server sends unmask to every masked-input survivor): a second line.
    assert len(faults) == (2 if stage == "consistency" else 1), faults
    assert all(f"node {node} (partition 1)" in line for line in faults)
    assert re.fullmatch(
        rf"fault: round 1, stage {stage}: node {node} \(partition 1\): no reply within [\d.]+ s",
        faults[0],
    )
    assert seen[0].asked[2] == [FIRST_NODE_ID, FIRST_NODE_ID + 2]  # sat round 2 out
    assert seen[0].asked[3] == [FIRST_NODE_ID + i for i in range(CLIENTS)]  # back in round 3
    # Lost after its masked input arrived (consistency), its input is still in the sum.
    assert recorder.rows[0].survivors == (3 if stage == "consistency" else 2)
    assert [r.status for r in recorder.rows] == ["ok", "ok", "ok"]
    status = run_status(recorder.path)
    last = stage  # the round's summary keeps each node's first fault
    assert status["last_fault"]["stage"] == last and status["last_fault"]["partition"] == 1
    text = render(status)
    assert f"last fault: round 1, stage {last}: node {node} (partition 1)" in text
    assert "rounds: 3/3 recorded (3 ok, 0 skipped, 0 abandoned), finished" in text


def test_fedkd_status_reads_a_run_folder_and_refuses_anything_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder = simulate(small(tmp_path, "ok", **{"num-rounds": 1}), CLIENTS)
    assert fedkd(["status", str(recorder.path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["rounds_recorded"] == 1 and shown["last_fault"] is None
    assert shown["flower_runs"] == [0]
    assert fedkd(["status", str(tmp_path / "nowhere")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_the_plaintext_reference_sum_tells_a_missing_survivor(tmp_path: Path) -> None:
    """The check of exact sums can fail: leaving one survivor's vector out changes the
    teacher the survivors' plaintext gives, while all of them reproduce the secure one."""
    config = small(tmp_path, "sum", **{"num-rounds": 1})
    stores: dict = {}
    captured: dict[int, object] = {}

    class Capture(Silent):
        def exchange(self, requests, *, timeout, group=""):  # type: ignore[no-untyped-def]
            result = self.inner.exchange(requests, timeout=timeout, group=group)
            if next(iter(requests.values())).kind == "train":
                for node in result.replies:
                    pid = node - FIRST_NODE_ID
                    captured[pid] = stores[pid].items["pending"].arrays["values"].copy()
            return result

    recorder = simulate(config, CLIENTS, stores=stores, wrap=lambda t: Capture(t, -1, 0, "none"))
    import numpy as np

    secure = np.load(recorder.path / "teachers" / "round-001.npy")
    split = load_run_split(parse_run_config(config))
    vectors = [captured[p] for p in range(CLIENTS)]
    assert np.array_equal(expected_teacher(config, split, vectors), secure)
    assert not np.array_equal(expected_teacher(config, split, vectors[:-1]), secure)
    assert read_journal(recorder.path).release_asks == {1: [FIRST_NODE_ID + i for i in range(3)]}


def test_a_restarted_node_answers_no_stage_of_the_round_it_was_killed_in(tmp_path: Path) -> None:
    """A SuperNode killed mid-round comes back as a new process with a fresh state: every
    secure-aggregation message of that round, replayed to it, is refused (it holds no keys,
    shares or contribution of the round). Whether it may train for that round again is its
    release ledger's call (node config ``state-dir``, kept across restarts)."""
    from fedkd.fl.client import MemoryStore, NodeInfo, handle
    from fedkd.transport import Refusal

    config = small(tmp_path, "replay", **{"num-rounds": 1})
    heard: list[Envelope] = []
    victim = FIRST_NODE_ID + 1

    class Tap(Silent):
        def exchange(self, requests, *, timeout, group=""):  # type: ignore[no-untyped-def]
            if victim in requests:
                heard.append(requests[victim].copy())
            return self.inner.exchange(requests, timeout=timeout, group=group)

    simulate(config, CLIENTS, wrap=lambda t: Tap(t, -1, 0, "none"))
    stages = [r.kind for r in heard]
    assert stages == ["train", "share_keys", "masked_input", "consistency", "unmask"]
    restarted = NodeInfo(victim, 0, 1, CLIENTS)
    fresh = MemoryStore()
    for request in heard[1:]:
        reply = handle(request, restarted, fresh, config)
        assert isinstance(reply, Refusal), request.kind
        assert "no secure-aggregation round in progress" in reply.reason
