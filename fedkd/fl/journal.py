"""The server's write-ahead round journal: what each round asked of whom, written as it goes.

A run folder's ``journal.jsonl`` holds one JSON object per line, appended and flushed to disk
(``fsync``) *before* the action it announces:

- ``start``: a (Flower) run opened the folder (``flower_run``; ``resumed_after`` on a resume);
- ``ask``: round ``r`` is about to send stage ``stage`` to ``nodes``; ``release`` is true when
  the request asks a client to release its input (the masked input of a secure round, or a
  plaintext train in a round without secure aggregation);
- ``answer``: what came back (``answered``: node -> partition, ``failed``: node -> reason);
- ``aggregated``: round ``r``'s sum was obtained and its teacher saved (before distillation);
- ``round``: round ``r`` is committed (checkpoint and history written), with its faults and who
  answered each stage; ``abandon``: round ``r`` was interrupted after a release, never re-asked.

A resumed run reads it (:func:`read_journal`) to apply the rule of resumption: a round that
was interrupted after any client was asked to release is recorded as abandoned and the run goes
on with the next round (asking again would let a server difference two sums of one round); one
interrupted before that is re-run identically. A torn last line (the process died while
writing it) is ignored. Operators read the same file with ``fedkd status``.

:class:`JournalingTransport` wraps the round's transport, so every exchange is journaled
without the round or the secure-aggregation stages knowing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedkd.fl import keys
from fedkd.fl.config import SECURE_METHODS
from fedkd.transport import Envelope, ExchangeResult, Transport

log = logging.getLogger("fedkd.server")

JOURNAL_FILE = "journal.jsonl"
RELEASE_STAGE = "masked_input"  # the secure round's release; a plaintext train releases too


def releases(request: Envelope) -> bool:
    """Whether answering ``request`` releases the client's input (a masked input, or a FedKD
    or FedDF train without secure aggregation, whose reply carries the contribution in the
    clear)."""
    if request.kind == RELEASE_STAGE:
        return True
    return (
        request.kind == keys.TRAIN
        and request.fields.get(keys.PHASE) in SECURE_METHODS
        and keys.SECAGG_CONFIG not in request.fields
    )


class RoundJournal:
    """Appends events to ``<run folder>/journal.jsonl``, each one on disk before it returns."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / JOURNAL_FILE
        self.round = 0
        # what the journal held when this run opened it: where a resumed run goes on from
        # (:func:`fedkd.fl.resume.resume_point`), read once
        self.replayed = read_journal(folder, events=False)
        # node -> partition id, from train replies; a resumed run starts from what the journal
        # learned before (a node that stays silent after the resume is still named)
        self.partitions: dict[int, int] = dict(self.replayed.partitions)
        self.logged: set[tuple[int, int]] = set()  # (round, node) whose fault has its log line

    def write(self, event: str, **fields: Any) -> None:
        """Append one event and force it to disk (a crash after this call cannot lose it)."""
        line = json.dumps({"event": event, "time": round(time.time(), 3), **fields})
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def partition_of(self, node: int) -> int | None:
        return self.partitions.get(node)


class JournalingTransport:
    """A transport that journals each exchange of the current round before and after it.

    Each node that fails an exchange leaves one log line naming its node id, partition and the
    stage (the operator's view of a fault, written when the exchange ends).
    """

    def __init__(self, inner: Transport, journal: RoundJournal) -> None:
        self.inner, self.journal = inner, journal

    def nodes(self) -> Sequence[int]:
        return self.inner.nodes()

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        journal = self.journal
        kinds = sorted({request.kind for request in requests.values()})
        stage = kinds[0] if len(kinds) == 1 else "+".join(kinds)
        release = any(releases(request) for request in requests.values())
        journal.write(
            "ask", round=journal.round, stage=stage, nodes=sorted(requests), release=release
        )
        result = self.inner.exchange(requests, timeout=timeout, group=group)
        for node, reply in result.replies.items():
            pid = reply.fields.get(keys.PARTITION_ID)
            if reply.kind == keys.TRAIN and isinstance(pid, int) and not isinstance(pid, bool):
                journal.partitions[node] = pid
        journal.write(
            "answer",
            round=journal.round,
            stage=stage,
            answered={str(n): journal.partition_of(n) for n in sorted(result.replies)},
            failed={str(n): why for n, why in sorted(result.failures.items())},
            partitions={str(n): journal.partition_of(n) for n in sorted(result.failures)},
            seconds=round(result.seconds, 3),
        )
        for node, why in sorted(result.failures.items()):
            log_fault(journal.round, stage, node, journal.partition_of(node), why)
            journal.logged.add((journal.round, node))
        return result


def log_fault(server_round: int, stage: str, node: int, partition: int | None, why: str) -> None:
    """The one log line a fault leaves: round, stage, node id and partition, and the reason."""
    shown = "?" if partition is None or partition < 0 else str(partition)
    log.warning(
        "fault: round %d, stage %s: node %s (partition %s): %s",
        server_round,
        stage,
        node,
        shown,
        why,
    )


@dataclass
class JournalState:
    """What a journal says about a run folder (for resuming and for ``fedkd status``)."""

    events: list[dict[str, Any]] = field(default_factory=list)  # all of them (events=True)
    flower_runs: list[int] = field(default_factory=list)
    last_round: int = 0  # the last round committed or abandoned
    open_round: int = 0  # a round asked for but neither committed nor abandoned (0: none)
    open_stage: str = ""  # the last stage asked in the open round
    released: bool = False  # the open round asked some client to release its input
    aggregated: bool = False  # the open round's teacher is on disk (its sum was obtained)
    last_fault: dict[str, Any] | None = None  # {round, stage, node, partition, reason, time}
    release_asks: dict[int, list[int]] = field(default_factory=dict)  # round -> nodes, all runs
    partitions: dict[int, int] = field(default_factory=dict)  # node -> partition, learned so far


def read_journal(folder: str | Path, *, events: bool = True) -> JournalState:
    """Replay ``journal.jsonl`` (absent: an empty state); a torn last line is skipped.
    ``events=False`` keeps the state without the list of every event (a long run's is large)."""
    path = Path(folder) / JOURNAL_FILE
    state = JournalState()
    if not path.is_file():
        return state
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # the process died while writing this line
        if isinstance(event, dict):
            _apply(state, event)
            if events:
                state.events.append(event)
    return state


def _apply(state: JournalState, event: dict[str, Any]) -> None:
    kind, number = event.get("event"), int(event.get("round", 0) or 0)
    if kind == "start" and isinstance(event.get("flower_run"), int):
        state.flower_runs.append(event["flower_run"])
    elif kind == "ask":
        if event.get("release"):
            state.release_asks.setdefault(number, []).extend(event.get("nodes", []))
        if number > state.last_round:
            if number != state.open_round:
                state.open_round, state.released, state.aggregated = number, False, False
            state.open_stage = str(event.get("stage", ""))
            state.released = state.released or bool(event.get("release"))
    elif kind == "answer":
        for node, pid in (event.get("answered") or {}).items():
            if isinstance(pid, int):
                state.partitions[int(node)] = pid
        for node, reason in (event.get("failed") or {}).items():
            state.last_fault = {
                "round": number,
                "stage": event.get("stage", ""),
                "node": int(node),
                "partition": event.get("partitions", {}).get(node),
                "reason": reason,
                "time": event.get("time"),
            }
    elif kind == "aggregated" and number == state.open_round:
        state.aggregated = True
    elif kind in ("round", "abandon"):
        state.last_round = max(state.last_round, number)
        if number >= state.open_round:
            state.open_round, state.open_stage = 0, ""
            state.released = state.aggregated = False
        for fault in event.get("faults", []):
            state.last_fault = {**fault, "round": number, "time": event.get("time")}
