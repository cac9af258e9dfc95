"""Hold a deployed run that met faults against what its survivors actually contributed.

    python -m experiments.fault_check RUN_FOLDER --partitions 3

The deployed run's folder says whom each round sampled and who answered each stage
(``journal.jsonl``; the final attempt of a round that a server restart ran again).
:func:`check_run` replays that run in this process with the library's own clients
(``fedkd.fl.experiment.simulate``, same run config and seeds), one per deployed node id (a
restarted SuperNode is a new node with a fresh state): each round samples the nodes the
deployment sampled, and a node answers a stage only where it did in the deployment. Each
client's plaintext contribution is read from its own store right after it trained. Then, for
each round: the same outcome (completed or not), and for each completed round:

- the deployed teacher equals the replay's, bit for bit (the deployed run is the replayed one);
- and equals the teacher computed here from the *survivors' plaintext* contributions --
  quantised as the clients quantise them, summed, decoded -- so the deployed secure sum was the
  survivors' exact sum;

and across the run: every round recorded once, in order; no partition asked twice to release its
input for one round (across server restarts). Without DP (its noise is fresh randomness).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedkd.fl import keys
from fedkd.fl.client import MemoryStore, NodeInfo, handle
from fedkd.fl.config import parse_run_config
from fedkd.fl.contribution import split_sum, value_bound
from fedkd.fl.data import load_run_split
from fedkd.fl.experiment import simulate
from fedkd.fl.journal import read_journal
from fedkd.fl.server_work import teacher_from_aggregate
from fedkd.secagg.quantize import Quantizer
from fedkd.transport import Envelope, ExchangeResult, InProcessTransport, Refusal

SURVIVOR_STAGE = "masked_input"  # a secure round sums the inputs that arrived here
REPLAY_RUN_ID = 1


@dataclass
class Deployed:
    """What the deployed run's journal says, round by round (final attempt of each round)."""

    asked: dict[int, list[int]] = field(default_factory=dict)  # round -> nodes sampled
    answered: dict[int, dict[str, set[int]]] = field(default_factory=dict)  # round -> stage ->
    partitions: dict[int, int] = field(default_factory=dict)  # node -> partition


def deployed_rounds(folder: Path) -> Deployed:
    """Replay the journal: who was sampled and who answered each stage of each round."""
    deployed = Deployed()
    for event in read_journal(folder).events:
        number = int(event.get("round", 0) or 0)
        kind = event["event"]
        if kind == "ask" and event["stage"] == keys.TRAIN:
            deployed.asked[number] = [int(n) for n in event["nodes"]]
            deployed.answered[number] = {}  # a new attempt supersedes an earlier one
        elif kind == "answer":
            answered = event.get("answered") or {}
            deployed.answered.setdefault(number, {})[str(event["stage"])] = {
                int(n) for n in answered
            }
            for node, partition in answered.items():
                if partition is not None:
                    deployed.partitions[int(node)] = int(partition)
        elif kind == "abandon":
            deployed.answered[number] = {}  # asked once, never again: nobody answers here
    return deployed


class Replay:
    """In-process transport with the deployed node ids: round ``r`` lists the nodes the
    deployment sampled in round ``r``, and a node answers a stage only where it did in the
    deployment. One library client per deployed node id, each with its own store (a restarted
    SuperNode is a new node with a fresh state, as deployed); each client's plaintext
    contribution is kept as it trained (``contributions[round][node]``)."""

    def __init__(self, deployed: Deployed, run_config: Mapping[str, Any], partitions: int) -> None:
        self.deployed = deployed
        self.stores = {node: MemoryStore() for node in deployed.partitions}
        self.inner = InProcessTransport(
            {
                node: _client(node, deployed.partitions[node], partitions, store, run_config)
                for node, store in self.stores.items()
            }
        )
        self.last_train = 0
        self.contributions: dict[int, dict[int, np.ndarray]] = {}

    def nodes(self) -> list[int]:
        return sorted(self.deployed.asked.get(self.last_train + 1, self.deployed.partitions))

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        number = int(group.removeprefix("round-") or 0)
        kind = next(iter(requests.values())).kind
        if kind == keys.TRAIN:
            self.last_train = number
        allowed = self.deployed.answered.get(number, {}).get(kind, set())
        kept = {node: r for node, r in requests.items() if node in allowed}
        result = self.inner.exchange(kept, timeout=timeout, group=group) if kept else None
        result = result or ExchangeResult()
        for node in set(requests) - set(kept):
            result.failures[node] = "did not answer in the deployment"
        if kind == keys.TRAIN:
            for node in result.replies:
                pending = self.stores[node].items.get(keys.STATE_PENDING)
                if pending is not None:
                    vector = pending.arrays["values"].copy()
                    self.contributions.setdefault(number, {})[node] = vector
        return result


def _client(
    node: int, partition: int, partitions: int, store: MemoryStore, run_config: Mapping[str, Any]
) -> Callable[[Envelope], Envelope | Refusal]:
    info = NodeInfo(node, REPLAY_RUN_ID, partition, partitions)
    return lambda request: handle(request, info, store, run_config)


@dataclass
class CheckReport:
    """The verdict, round by round."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def expected_teacher(
    run_config: Mapping[str, Any], split: Any, vectors: list[np.ndarray]
) -> np.ndarray:
    """The teacher of a round from the survivors' plaintext contributions: quantised as each
    client quantises, summed in integers, decoded (the exact secure sum), then the rule."""
    config = parse_run_config(run_config)
    quantizer = Quantizer(value_bound(config), config.secagg.bits)
    levels = sum(quantizer.encode(v, warn=False).values for v in vectors)
    total = quantizer.decode_sum(np.asarray(levels, dtype=np.uint64), len(vectors))
    return teacher_from_aggregate(split_sum(total, len(vectors))[0], config, split)


def check_run(folder: Path, partitions: int) -> CheckReport:
    """Replay the deployed run in ``folder`` in process and compare (module docstring)."""
    report = CheckReport()
    history = json.loads((folder / "history.json").read_text())
    config = json.loads((folder / "config.json").read_text())
    rounds = [row["round"] for row in history]
    if rounds != list(range(1, len(rounds) + 1)):
        report.problems.append(f"history rounds are not 1..N once each: {rounds}")
    release_asks = read_journal(folder).release_asks
    known = deployed_rounds(folder).partitions
    for number, nodes in release_asks.items():
        asked = [known.get(n, -1) for n in nodes]
        if len(asked) != len(set(asked)):
            report.problems.append(f"round {number}: a partition asked twice to release {asked}")
    deployed = deployed_rounds(folder)
    replica = {
        **config,
        "resume": "",
        "run-name": "replay",
        "out-dir": tempfile.mkdtemp(prefix="fedkd-replay-"),
        "secagg-roster": "simulated",  # identities do not enter the sum
        "fraction": 1.0,  # the replay lists exactly the nodes the deployment sampled
    }
    replay = Replay(deployed, replica, partitions)
    recorder = simulate(replica, partitions, run_id=REPLAY_RUN_ID, wrap=lambda _: replay)
    mirrored = {row.round: row for row in recorder.rows}
    split = load_run_split(parse_run_config(replica))
    for row in history:
        number = row["round"]
        entry: dict[str, Any] = {"round": number, "status": row["status"]}
        twin = mirrored.get(number)
        if twin is None or (twin.status == "ok") != (row["status"] == "ok"):
            report.problems.append(
                f"round {number}: deployed {row['status']}, replay "
                f"{'missing' if twin is None else twin.status}"
            )
        if row["status"] == "ok":
            ours = np.load(folder / "teachers" / f"round-{number:03d}.npy")
            mirror = np.load(recorder.path / "teachers" / f"round-{number:03d}.npy")
            survivors = sorted(deployed.answered[number].get(SURVIVOR_STAGE, set()))
            vectors = [replay.contributions[number][node] for node in survivors]
            plain = expected_teacher(replica, split, vectors)
            entry.update(
                survivors=[deployed.partitions[node] for node in survivors],
                equals_replay=bool(np.array_equal(ours, mirror)),
                equals_plaintext_sum=bool(np.array_equal(ours, plain)),
            )
            if not (entry["equals_replay"] and entry["equals_plaintext_sum"]):
                report.problems.append(f"round {number}: teacher differs ({entry})")
        report.rounds.append(entry)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--partitions", type=int, required=True, help="SuperNodes deployed")
    args = parser.parse_args(argv)
    report = check_run(args.folder, args.partitions)
    print(json.dumps(report.as_dict(), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
