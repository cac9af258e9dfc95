"""One engine worker: a share of the population's nodes, answered one after another in a loop.

:class:`ClientWorker` is plain Python (the Ray engine runs one per actor; tests drive it
directly). It holds the federation's data once -- handed over by the driver, through Ray's
object store for the Ray engine -- and the stores of the nodes it serves
(:class:`~fedkd.engines.node_store.SpillingStores`). For each ``(node, request)`` of a batch
it calls the library's client, :func:`fedkd.fl.client.handle`, exactly as the in-process
transport and Flower's ClientApp do, and streams the answers back in groups: a node that
raises is a crashed node, never a crashed worker.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedkd.engines.node_store import SpillingStores
from fedkd.fl import keys
from fedkd.fl.client import NodeInfo, handle
from fedkd.fl.config import parse_run_config
from fedkd.fl.data import FederatedData, install
from fedkd.fl.experiment import FIRST_NODE_ID
from fedkd.transport import Envelope, Refusal

GROUP_SECONDS = 0.05  # answers are sent back at least this often while a batch runs


@dataclass(frozen=True)
class Answer:
    """One node's outcome: its reply, its refusal, or why it crashed; and its compute time."""

    node: int
    reply: Envelope | Refusal | str  # str: the crash
    seconds: float


@dataclass(frozen=True)
class WorkerStats:
    """What a worker has done, for benchmarks and the cluster test."""

    pid: int
    ray_node: str  # the Ray node the worker runs on ("" outside Ray)
    nodes_served: int
    nodes_with_state: int
    nodes_spilled: int
    state_bytes: int
    peak_rss_bytes: int


class ClientWorker:
    """Answers batches of requests for the nodes assigned to it.

    Parameters
    ----------
    run_config
        The run's flat config, as every client receives it.
    num_clients
        The federation's size (each node's ``num-partitions``).
    run_id
        The run clients bind secure aggregation to.
    data
        The federation's data, loaded once by the driver (``None``: load it here).
    spill_folder, state_budget
        Where and past how many bytes node state spills (:class:`SpillingStores`).
    ledger_root
        Where the nodes keep what outlives a run (their release ledgers; node config
        ``state-dir``): the driver's, so that a worker on another machine or started under
        another environment never keeps a ledger the driver's user does not see.
    """

    def __init__(
        self,
        run_config: Mapping[str, Any],
        num_clients: int,
        run_id: int,
        data: FederatedData | None,
        spill_folder: str | Path,
        state_budget: int,
        ledger_root: str | Path,
    ) -> None:
        self.run_config = dict(run_config)
        self.ledger_root = str(ledger_root)
        self.num_clients, self.run_id = num_clients, run_id
        if data is not None:
            install(parse_run_config(self.run_config), num_clients, data)
        self.stores = SpillingStores(spill_folder, state_budget)
        self.nodes_served = 0

    def node_info(self, node: int) -> NodeInfo:
        settings = {keys.NODE_STATE_DIR: self.ledger_root}
        return NodeInfo.simulated(
            node, self.run_id, node - FIRST_NODE_ID, self.num_clients, **settings
        )

    def answer(self, node: int, request: Envelope) -> Answer:
        """One node's answer; whatever it raises makes it a crashed node."""
        began = time.perf_counter()
        try:
            reply: Envelope | Refusal | str = handle(
                request.copy(),  # each node gets its own message, as over a wire
                self.node_info(node),
                self.stores.store(node),
                self.run_config,
            )
        except Exception as crash:  # noqa: BLE001 -- a crashing node is a dropout
            reply = f"crashed: {type(crash).__name__}: {crash}"
        finally:
            self.stores.settle()
            self.nodes_served += 1
        return Answer(node, reply, time.perf_counter() - began)

    def serve(self, batch: list[tuple[int, Envelope]], deadline: float) -> Iterator[list[Answer]]:
        """Answer ``batch`` in order, yielding groups of answers as they are ready; past
        ``deadline`` (wall-clock seconds) the server no longer waits and the rest is dropped."""
        group: list[Answer] = []
        sent = time.perf_counter()
        for node, request in batch:
            if time.time() > deadline:
                break
            group.append(self.answer(node, request))
            if time.perf_counter() - sent >= GROUP_SECONDS:
                yield group
                group, sent = [], time.perf_counter()
        if group:
            yield group

    def stats(self) -> WorkerStats:
        """Counters and peak memory of this worker's process."""
        ray_node = ""
        try:
            import ray

            if ray.is_initialized():
                ray_node = ray.get_runtime_context().get_node_id()
        except ImportError:  # pragma: no cover -- ray is a dependency
            pass
        return WorkerStats(
            pid=os.getpid(),
            ray_node=ray_node,
            nodes_served=self.nodes_served,
            nodes_with_state=self.stores.nodes_in_memory() + self.stores.nodes_on_disk(),
            nodes_spilled=self.stores.spills,
            state_bytes=self.stores.memory_bytes,
            peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        )

    def ping(self) -> int:
        """Answers once the worker is up (its data installed)."""
        return os.getpid()
