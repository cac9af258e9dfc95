"""A server that dies at any instant of a round, then resumes: in process, bit for bit.

The server "dies" by a :class:`ServerDied` (a ``BaseException``, so nothing in the round
catches it, as nothing survives a SIGKILL) raised at a chosen exchange of a chosen round, or
during distillation. The resumed run is compared with a run that was never interrupted
(with the same seeds): the same teachers, bit for bit, every round once in the history, and
no client asked twice to release its input for one round (the rule of ``fedkd.fl.resume``).
The same rule on real processes (a killed SuperLink) is in ``tests/test_deployment_faults.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from fedkd.fl.config import FedConfig
from fedkd.fl.experiment import simulate
from fedkd.fl.journal import read_journal
from fedkd.transport import Envelope, ExchangeResult, Transport
from tests.relay import Relay

ROUNDS, CLIENTS, CUT = 3, 3, 2


class ServerDied(BaseException):
    """The server process is gone (nothing in the round may catch this)."""


def small(tmp_path: Path, name: str, **overrides: object) -> dict[str, object]:
    config = {
        **FedConfig().to_dict(),
        "num-rounds": ROUNDS,
        "local-epochs": 1,
        "warmup-epochs": 0,
        "distill-epochs": 1,
        "eval-clients": False,
        "out-dir": str(tmp_path),
        "run-name": name,
    }
    config.update(overrides)
    return config


class DieAt(Relay):
    """Raises :class:`ServerDied` at stage ``stage`` of round ``server_round``: ``before`` the
    requests go out (the journal already says they will) or ``after`` the replies came."""

    def __init__(self, inner: Transport, server_round: int, stage: str, when: str) -> None:
        self.inner, self.round, self.stage, self.when = inner, server_round, stage, when

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        hit = group == f"round-{self.round}" and any(
            r.kind == self.stage for r in requests.values()
        )
        if hit and self.when == "before":
            raise ServerDied(f"{self.stage} of round {self.round}")
        result = self.inner.exchange(requests, timeout=timeout, group=group)
        if hit:
            raise ServerDied(f"after {self.stage} of round {self.round}")
        return result


class FailAll(Relay):
    """Every node fails ``stage`` of round ``server_round`` (a round skipped for want of
    survivors: the reference for an abandoned round)."""

    def __init__(self, inner: Transport, server_round: int, stage: str) -> None:
        self.inner, self.round, self.stage = inner, server_round, stage

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        if group == f"round-{self.round}" and any(r.kind == self.stage for r in requests.values()):
            return ExchangeResult(failures={node: "down" for node in requests})
        return self.inner.exchange(requests, timeout=timeout, group=group)


def _interrupted(tmp_path: Path, die: Callable[[Transport], Transport]) -> Path:
    with pytest.raises(ServerDied):
        simulate(small(tmp_path, "cut"), CLIENTS, run_id=1, wrap=die)
    folder = tmp_path / "cut"
    simulate(small(tmp_path, "again", resume=str(folder)), CLIENTS, run_id=2)
    return folder


def _teachers(folder: Path) -> dict[int, np.ndarray]:
    return {
        int(path.stem.split("-")[1]): np.load(path)
        for path in sorted((folder / "teachers").glob("round-*.npy"))
    }


def _assert_release_asked_once(folder: Path) -> None:
    for server_round, nodes in read_journal(folder).release_asks.items():
        assert len(nodes) == len(set(nodes)), f"round {server_round} asked {nodes}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[int, np.ndarray]:
    path = tmp_path_factory.mktemp("reference")
    return _teachers(simulate(small(path, "full"), CLIENTS, run_id=1).path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "when"),
    [("train", "before"), ("train", "after"), ("share_keys", "before"), ("share_keys", "after")],
)
def test_a_round_interrupted_before_any_release_is_run_again_identically(
    tmp_path: Path, uninterrupted: dict[int, np.ndarray], stage: str, when: str
) -> None:
    folder = _interrupted(tmp_path, lambda t: DieAt(t, CUT, stage, when))
    history = json.loads((folder / "history.json").read_text())
    assert [(r["round"], r["status"]) for r in history] == [(1, "ok"), (2, "ok"), (3, "ok")]
    teachers = _teachers(folder)
    assert sorted(teachers) == sorted(uninterrupted)
    for server_round, teacher in uninterrupted.items():
        np.testing.assert_array_equal(teachers[server_round], teacher)
    _assert_release_asked_once(folder)
    journal = read_journal(folder)
    assert len(journal.flower_runs) == 2 and journal.open_round == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "when"),
    [
        ("masked_input", "before"),
        ("masked_input", "after"),
        ("consistency", "after"),
        ("unmask", "before"),
    ],
)
def test_a_round_interrupted_after_a_release_is_abandoned_never_asked_again(
    tmp_path: Path, stage: str, when: str
) -> None:
    folder = _interrupted(tmp_path, lambda t: DieAt(t, CUT, stage, when))
    history = json.loads((folder / "history.json").read_text())
    assert [(r["round"], r["status"]) for r in history] == [(1, "ok"), (2, "abandoned"), (3, "ok")]
    assert f"interrupted at stage {stage}" in history[1]["reason"]
    _assert_release_asked_once(folder)
    # The reference: the same run with round 2 skipped (every client lost at masked input).
    reference = simulate(
        small(tmp_path, "skipped"), CLIENTS, run_id=1, wrap=lambda t: FailAll(t, CUT, stage)
    )
    assert [r.status for r in reference.rows] == ["ok", "skipped", "ok"]
    expected, teachers = _teachers(reference.path), _teachers(folder)
    assert sorted(expected) == [1, 3] and sorted(teachers) == [1, 3]
    for server_round in expected:
        np.testing.assert_array_equal(teachers[server_round], expected[server_round])


def test_a_server_killed_while_distilling_finishes_the_round_from_its_teacher(
    tmp_path: Path, uninterrupted: dict[int, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fedkd.fl.resume as resume

    real = resume.distill_round

    def dies_in_round_two(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if kwargs.get("server_round") == CUT and not dies_in_round_two.done:  # type: ignore[attr-defined]
            dies_in_round_two.done = True  # type: ignore[attr-defined]
            raise ServerDied("during distillation")
        return real(*args, **kwargs)

    dies_in_round_two.done = False  # type: ignore[attr-defined]
    monkeypatch.setattr(resume, "distill_round", dies_in_round_two)
    folder = _interrupted(tmp_path, lambda t: t)
    history = json.loads((folder / "history.json").read_text())
    assert [(r["round"], r["status"]) for r in history] == [(1, "ok"), (2, "ok"), (3, "ok")]
    asked = read_journal(folder).events
    trains = [e for e in asked if e["event"] == "ask" and e["stage"] == "train"]
    assert [e["round"] for e in trains] == [1, 2, 3]  # round 2 was not asked again
    teachers = _teachers(folder)
    for server_round, teacher in uninterrupted.items():
        np.testing.assert_array_equal(teachers[server_round], teacher)


def test_the_journal_keeps_each_fault_with_its_stage_and_a_torn_line_is_ignored(
    tmp_path: Path,
) -> None:
    recorder = simulate(
        small(tmp_path, "faults", **{"num-rounds": 1}),
        CLIENTS,
        wrap=lambda t: FailAll(t, 1, "consistency"),
    )
    with open(recorder.path / "journal.jsonl", "a") as handle:
        handle.write('{"event": "ask", "round": 2, "sta')  # the process died mid-line
    state = read_journal(recorder.path)
    assert state.last_round == 1 and state.open_round == 0
    assert state.last_fault is not None and state.last_fault["stage"] == "consistency"
    assert state.last_fault["partition"] in range(CLIENTS)


def test_a_resumed_journal_still_knows_each_nodes_partition(tmp_path: Path) -> None:
    """A node that answered before the server died and stays silent after the resume is still
    named by its partition in the resumed run's fault lines and dropped lists."""
    from fedkd.fl.journal import RoundJournal, read_journal

    first = RoundJournal(tmp_path)
    first.write("answer", round=1, stage="train", answered={"1001": 1, "1002": 2}, failed={})
    first.write("answer", round=2, stage="train", answered={"1003": None}, failed={"1002": "x"})
    assert read_journal(tmp_path).partitions == {1001: 1, 1002: 2}
    assert RoundJournal(tmp_path).partition_of(1002) == 2


def test_a_plaintext_train_of_every_summed_method_is_a_release() -> None:
    """FedDF as published sends its weight changes in the train reply when secure aggregation
    is off: interrupted after that ask, the round must be abandoned, never asked again."""
    from fedkd.fl import keys
    from fedkd.fl.journal import releases
    from fedkd.transport import Envelope

    for phase in ("fedkd", "feddf"):
        assert releases(Envelope(keys.TRAIN, {keys.ROUND: 1, keys.PHASE: phase}))
        secure = {keys.ROUND: 1, keys.PHASE: phase, keys.SECAGG_CONFIG: b""}
        assert not releases(Envelope(keys.TRAIN, secure))
    assert not releases(Envelope(keys.TRAIN, {keys.ROUND: 1, keys.PHASE: "local"}))
