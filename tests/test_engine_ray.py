"""The Ray engine: the in-process run bit for bit, and failures that stay the nodes'.

One local Ray (on 127.0.0.1) serves the module; each test starts its own actor pool.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fedkd.engines import RayResources, RayTransport, run_federation
from fedkd.engines.ray_transport import start_ray
from fedkd.fl import keys
from fedkd.fl.experiment import FIRST_NODE_ID
from fedkd.transport import Envelope, broadcast
from tests.relay import Relay

pytestmark = pytest.mark.slow
FAST = {
    "min-clients": 4, "model": "mlp", "local-epochs": 1, "warmup-epochs": 1,
    "distill-epochs": 2, "num-rounds": 2,
}  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    import ray

    started = start_ray("")
    yield
    if started:
        ray.shutdown()


def _teachers(folder: Path) -> list[np.ndarray]:
    return [np.load(path) for path in sorted((folder / "teachers").glob("*.npy"))]


CRASHES = {"fault-stage": "masked_input", "fault-prob": 0.2, "secagg-threshold": 0.55}  # 3, then 1


@pytest.mark.parametrize("extra", [{}, CRASHES])
def test_the_ray_engine_equals_the_in_process_run_bit_for_bit(
    tmp_path: Path, extra: dict[str, object]
) -> None:
    """Same seed, same round: teachers, history and student weights identical (with and
    without clients that crash mid secure aggregation)."""
    runs = {}
    for engine in ("inprocess", "ray"):
        config = {**FAST, **extra, "out-dir": str(tmp_path), "run-name": engine}
        runs[engine] = run_federation(
            config, 7, engine=engine, resources=RayResources(workers=2), run_id=3
        )
    ours, theirs = runs["ray"], runs["inprocess"]
    assert [(r.survivors, r.dropped, r.student_accuracy) for r in ours.rows] == [
        (r.survivors, r.dropped, r.student_accuracy) for r in theirs.rows
    ]
    assert all(r.status == "ok" for r in ours.rows)
    assert [len(r.dropped) for r in ours.rows] == ([3, 1] if extra else [0, 0])
    for a, b in zip(_teachers(ours.path), _teachers(theirs.path), strict=True):
        assert np.array_equal(a, b)
    mine = torch.load(ours.path / "student.pt", weights_only=True)
    other = torch.load(theirs.path / "student.pt", weights_only=True)
    assert all(torch.equal(mine[k], other[k]) for k in mine)


def _train_request() -> Envelope:
    return Envelope(keys.TRAIN, {keys.ROUND: 1, keys.PHASE: "local"})


def test_a_dead_actor_is_a_failure_of_its_nodes_and_is_replaced() -> None:
    import ray

    nodes = list(range(FIRST_NODE_ID, FIRST_NODE_ID + 6))
    with RayTransport(FAST, 6, resources=RayResources(workers=2)) as transport:
        ray.kill(transport.workers[1], no_restart=True)  # slot 1 serves the odd partitions
        first = transport.exchange(broadcast(nodes, _train_request()), timeout=120)
        assert sorted(first.replies) == nodes[0::2]
        assert all("engine worker failed" in first.failures[n] for n in nodes[1::2])
        assert transport.replaced == 1
        second = transport.exchange(broadcast(nodes, _train_request()), timeout=120)
        assert sorted(second.replies) == nodes and not second.failures
        assert transport.nodes() == range(FIRST_NODE_ID, FIRST_NODE_ID + 6)
        assert transport.exchange({10**9: _train_request()}, timeout=5).failures == {
            10**9: "unknown node"
        }


def test_a_slow_node_misses_the_deadline_and_the_engine_goes_on() -> None:
    """A node that stalls past the exchange's timeout fails (so do the nodes queued behind it
    on its actor); the actor finishes, and the next exchange is answered by everyone."""
    stalling = {**FAST, "fault-stage": "train", "fault-prob": 0.5, "fault-kind": "timeout",
                "stage-timeout": 3.0}  # fmt: skip
    nodes = list(range(FIRST_NODE_ID, FIRST_NODE_ID + 6))
    with RayTransport(stalling, 6, resources=RayResources(workers=2)) as transport:
        request = _train_request()
        request.fields[keys.DEADLINE] = time.time() + 3.0
        began = time.perf_counter()
        slow = transport.exchange(broadcast(nodes, request), timeout=3.0)
        assert time.perf_counter() - began < 10.0  # the exchange ends at its deadline
        assert slow.failures and all("within 3 s" in r for r in slow.failures.values())
        later = Envelope(keys.TRAIN, {keys.ROUND: 2, keys.PHASE: "local"})
        again = transport.exchange(broadcast(nodes, later), timeout=120)  # stalls are 5 s
        assert transport.replaced == 0 and sorted(again.replies) == nodes


def test_gpu_shares_on_a_cluster_without_gpus_are_refused_at_once() -> None:
    import ray

    with pytest.raises(ValueError, match="has no GPU"):
        RayTransport(FAST, 4, resources=RayResources(gpus=0.25))
    assert ray.is_initialized()  # the module's Ray (not this transport's) is left running


class Replaying(Relay):
    """A server that re-sends one client's masked-input request after it was answered."""

    def __init__(self, inner: RayTransport) -> None:
        self.inner = inner
        self.replayed: dict[int, str] = {}

    def exchange(self, requests, *, timeout, group=""):  # type: ignore[no-untyped-def]
        result = self.inner.exchange(requests, timeout=timeout, group=group)
        if {r.kind for r in requests.values()} == {"masked_input"} and result.replies:
            first = min(result.replies)
            again = self.inner.exchange({first: requests[first]}, timeout=timeout, group=group)
            self.replayed.update(again.failures)
        return result


def test_distributed_dp_and_an_attacking_server_on_the_ray_engine(tmp_path: Path) -> None:
    """The round's DP and a wrapper around the engine's transport work as in-process: the
    noise is added, and a replayed request is refused by the node (its state is kept by the
    actor that serves it)."""
    wrapped: list[Replaying] = []

    def wrap(inner):  # type: ignore[no-untyped-def]
        wrapped.append(Replaying(inner))
        return wrapped[-1]

    config = {**FAST, "num-rounds": 1, "dp": "distributed", "dp-epsilon": 8.0,
              "out-dir": str(tmp_path)}  # fmt: skip
    recorder = run_federation(config, 6, engine="ray", wrap=wrap)
    row = recorder.rows[0]
    assert row.status == "ok" and math.isfinite(row.dp_epsilon) and row.dp_noise_std > 0
    (reason,) = wrapped[0].replayed.values()
    assert "refused" in reason and "already" in reason


def test_fedkd_run_on_the_ray_engine_and_its_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fedkd run`` (the Ray engine by default) writes the run folder and launch.json under
    ``runs/`` of the current folder; ``--resume`` repeats the engine and goes on from the last
    round."""
    from fedkd.cli import main

    monkeypatch.chdir(tmp_path)
    settings = ["model=mlp", "local-epochs=1", "warmup-epochs=0", "distill-epochs=1",
                "num-rounds=1"]  # fmt: skip
    assert main(["run", "--clients", "4", "--quiet", "--set", *settings]) == 0
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    launch = json.loads((folder / "launch.json").read_text())
    assert launch == {"clients": 4, "federation": [], "engine": "ray"}
    assert main(["run", "--resume", str(folder), "--quiet", "--set", "num-rounds=2"]) == 0
    rows = json.loads((folder / "history.json").read_text())
    assert [r["round"] for r in rows] == [1, 2] and all(r["status"] == "ok" for r in rows)
    assert "run results:" in capsys.readouterr().out
