"""experiments.bench_engine's bookkeeping: the split of a round's seconds and peak memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

from experiments.bench_engine import MARKER, PeakMemory, Timed, cases, split_round
from fedkd.fl import keys
from fedkd.transport import Envelope, InProcessTransport


def test_a_round_splits_into_client_secagg_distill_and_the_rest() -> None:
    row = {"round": 2, "seconds": 10.0, "seconds_train": 6.0, "seconds_secagg": 2.5,
           "seconds_secagg_server": 0.5, "seconds_distill": 1.0}  # fmt: skip
    split = split_round(row, {"client_train": 5.0, "client_secagg": 1.5})
    assert split["client"] == 5.0 and split["secagg"] == 2.0 and split["distill"] == 1.0
    assert split["other"] == 10.0 - 5.0 - 2.0 - 1.0
    assert "other" not in split_round(row, None)  # no client timing: no split


def test_timed_adds_up_client_compute_per_round_and_kind() -> None:
    echo = InProcessTransport({1: lambda request: request, 2: lambda request: request})
    timed = Timed(echo)
    assert list(timed.nodes()) == [1, 2]
    timed.exchange({1: Envelope(keys.TRAIN), 2: Envelope(keys.TRAIN)}, timeout=5, group="round-1")
    timed.exchange({1: Envelope("unmask")}, timeout=5, group="round-1")
    assert set(timed.rounds["round-1"]) == {"client_train", "client_secagg", "exchanges"}


def test_peak_memory_counts_the_processes_a_run_started() -> None:
    tag = uuid.uuid4().hex
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; x = bytearray(50 * 2**20); time.sleep(30)"],
        env={**os.environ, MARKER: tag},
    )
    try:
        with PeakMemory(tag, every=0.1) as memory:
            deadline = time.monotonic() + 20
            while memory.peak < 50 * 2**20 and time.monotonic() < deadline:
                time.sleep(0.1)
        assert memory.peak >= 50 * 2**20 and memory.cpu_seconds >= 0.0
    finally:
        child.kill()
        child.wait()


def test_the_issue_cases_are_all_there() -> None:
    table = cases("")
    assert table["digits-20"].engines == ("inprocess", "ray", "flower")
    assert (table["pop-1e4-c100"].clients, table["pop-1e4-c100"].cohort) == (10_000, 100)
    assert [table[f"pop-1e{e}"].clients for e in (4, 5, 6)] == [10**4, 10**5, 10**6]
    assert all(table[f"pop-1e{e}"].engines == ("ray",) for e in (4, 5, 6))
    assert table["pop-1e6"].config["dataset"] == "synthetic"  # no data root: synthetic
