"""The Ray engine: a :class:`~fedkd.transport.Transport` over a pool of Ray actors.

Flower's simulation routes every message through its LinkState, and its router visits every
registered node every 0.1 s (DESIGN.md, section 6): a round's cost grows with the
population. Here a round costs what its cohort costs. Each actor (a
:class:`~fedkd.engines.worker.ClientWorker`) holds the federation's data once, taken from
Ray's object store (one copy per machine, not one per client), and serves a fixed share of
the nodes (node -> actor by partition id modulo the pool size, so a node's state stays with
it). One exchange is one batch per actor: the actor runs the library's client for each of
its nodes in a loop and streams the answers back; nothing per message goes through Ray
beyond that.

Failures are the nodes', never the engine's: a node that raises or refuses is a failed
node; one that answers after the exchange's timeout is a node that did not answer. An
actor that dies, or is still busy :data:`GRACE` seconds after its batch's deadline (a node
that hangs), is killed and replaced by a fresh one on the same spill folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedkd.engines.worker import FIRST_NODE_ID, Answer, ClientWorker, WorkerStats
from fedkd.fl.config import parse_run_config
from fedkd.fl.data import FederatedData, federated_data
from fedkd.fl.ledger import default_root
from fedkd.transport import Envelope, ExchangeResult, Refusal, no_reply

log = logging.getLogger("fedkd.engine")
GRACE = 30.0  # seconds a busy actor may overrun its batch's deadline before it is replaced
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a local Ray binds to 127.0.0.1
WORKER_NICENESS_ENV = "RAY_worker_niceness"  # Ray's own setting (default 15), read at start


@dataclass(frozen=True)
class RayResources:
    """The actor pool, sized as Flower sizes its simulation (``client-resources-*``).

    Parameters
    ----------
    workers
        Actors in the pool; ``0``: as many as the cluster's CPUs allow (one per core).
    cpus, gpus
        Resources of one actor (``client-resources-num-cpus`` / ``-num-gpus``); a GPU
        fraction puts several actors on one GPU.
    state_budget
        Bytes of node state an actor keeps in memory before it spills to disk.
    address
        A running Ray cluster (``"auto"`` or ``host:port``); empty: ``RAY_ADDRESS`` if set,
        else start Ray in this process on 127.0.0.1 and stop it at :meth:`RayTransport.close`.
    """

    workers: int = 0
    cpus: float = 1.0
    gpus: float = 0.0
    state_budget: int = 1 << 30
    address: str = ""

    def __post_init__(self) -> None:
        if self.workers < 0 or self.cpus <= 0 or self.gpus < 0 or self.state_budget < 0:
            raise ValueError(f"invalid Ray engine resources: {self}")


def start_ray(address: str) -> bool:
    """Connect to ``address``, or start Ray here on the loopback; True if this call did
    either (the caller then shuts the connection down when done)."""
    os.environ.setdefault(LOOPBACK_ENV, "0")  # read when ray is imported
    # Ray's tip that GPU masking for num_gpus=0 actors will change: actors without a GPU
    # share see no GPU today, which is what the engine wants (fedkd/cli/launch.py too).
    warnings.filterwarnings("ignore", category=FutureWarning, module="ray._private.worker")
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS", "")  # as Flower's simulation reads it
    if address:
        ray.init(address=address, log_to_driver=True, configure_logging=False)
        return True
    # Ray reads the variable when it is first imported; if it was imported before, set the
    # flag it was read into, so that the local Ray still binds to the loopback.
    ray._private.ray_constants.ENABLE_RAY_CLUSTER = os.environ[LOOPBACK_ENV] != "0"
    # Ray starts its workers at nice +15 (background work); here they are the clients, the
    # run's main work, so they run at the driver's own priority unless the user says otherwise.
    os.environ.setdefault(WORKER_NICENESS_ENV, "0")
    ray.init(
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=True,
        configure_logging=False,
    )
    return True


def pool_size(resources: RayResources, cluster: Mapping[str, float]) -> int:
    """Actors the cluster holds at once: one per ``cpus`` (one per core by default), and per
    ``gpus`` share of its GPUs when actors take one.

    Raises
    ------
    ValueError
        When actors ask for a GPU share and the cluster has no GPU (they would never start).
    """
    count = int(cluster.get("CPU", 1) // resources.cpus)
    if resources.gpus > 0:
        gpus = cluster.get("GPU", 0)
        if gpus <= 0:
            raise ValueError(
                f"client-resources-num-gpus = {resources.gpus:g} but the Ray cluster has no GPU"
            )
        count = min(count, int(gpus // resources.gpus))
    return max(1, count)


class RayTransport:
    """Exchanges envelopes with a population of library clients run by Ray actors.

    Parameters
    ----------
    run_config
        The run's flat config (what every client receives).
    num_clients
        The population: node ids ``FIRST_NODE_ID .. FIRST_NODE_ID + num_clients - 1``.
    run_id
        The run clients bind secure aggregation to.
    resources
        The actor pool (:class:`RayResources`).
    data
        The federation's data if the caller holds it already (else loaded here, once).
    state_dir
        Where the nodes keep their release ledgers (node config ``state-dir``); ``None``:
        ``$FEDKD_HOME/nodes`` as this process sees it, as simulated nodes under Flower.
    """

    def __init__(
        self,
        run_config: Mapping[str, Any],
        num_clients: int,
        *,
        run_id: int = 0,
        resources: RayResources = RayResources(),
        data: FederatedData | None = None,
        state_dir: str | Path | None = None,
    ) -> None:
        import ray

        if num_clients < 1:
            raise ValueError(f"a population needs at least one client, got {num_clients}")
        self.run_config, self.num_clients, self.run_id = dict(run_config), num_clients, run_id
        self.resources, self.replaced = resources, 0
        self.workers: list[Any] = []
        self._busy: dict[int, tuple[Any, float]] = {}  # slot -> (stream, its deadline)
        self._spill_root = Path(tempfile.mkdtemp(prefix="fedkd-node-state-"))
        self._ledger_root = str(state_dir if state_dir is not None else default_root())
        self._owns_ray = start_ray(resources.address)
        try:
            count = pool_size(resources, ray.cluster_resources())  # refuses GPUs that are not
            count = resources.workers or count
            config = parse_run_config(self.run_config)
            data = data if data is not None else federated_data(config, num_clients)
            self._data = ray.put(data)  # one copy per machine, read in place by its actors
            self._actor = ray.remote(ClientWorker).options(  # type: ignore[attr-defined]
                num_cpus=resources.cpus, num_gpus=resources.gpus, max_restarts=0
            )
            self.workers = [self._start(slot) for slot in range(count)]
            ray.get([worker.ping.remote() for worker in self.workers])
        except BaseException:
            self.close()
            raise
        log.info(
            "Ray engine: %d actors (%g CPU, %g GPU each), %d clients",
            count,
            resources.cpus,
            resources.gpus,
            num_clients,
        )

    # ------------------------------------------------------------------ the pool
    def _start(self, slot: int) -> Any:
        return self._actor.remote(
            self.run_config,
            self.num_clients,
            self.run_id,
            self._data,
            str(self._spill_root / f"actor-{slot}"),
            self.resources.state_budget,
            self._ledger_root,
        )

    def _replace(self, slot: int, why: str) -> None:
        import ray

        log.warning("Ray engine: replacing actor %d (%s)", slot, why)
        ray.kill(self.workers[slot], no_restart=True)
        self.workers[slot] = self._start(slot)
        self._busy.pop(slot, None)
        self.replaced += 1

    def _settle_busy(self) -> None:
        """Wait for actors still on an earlier batch, up to GRACE past its deadline."""
        import ray

        for slot, (stream, deadline) in list(self._busy.items()):
            try:
                while True:
                    left = deadline + GRACE - time.time()
                    ready, _ = ray.wait([stream], timeout=max(left, 0.0))
                    if not ready:
                        self._replace(slot, f"still busy {GRACE:g} s past its deadline")
                        break
                    next(stream)  # a late answer: discarded
            except StopIteration:
                self._busy.pop(slot, None)
            except ray.exceptions.RayError as error:
                self._replace(slot, f"died: {type(error).__name__}")

    def slot_of(self, node: int) -> int:
        """The actor that serves ``node`` (fixed for the run)."""
        return (node - FIRST_NODE_ID) % len(self.workers)

    # ------------------------------------------------------------------ Transport
    def nodes(self) -> range:
        return range(FIRST_NODE_ID, FIRST_NODE_ID + self.num_clients)

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        del group
        self._settle_busy()
        start, deadline = time.perf_counter(), time.time() + timeout
        result = ExchangeResult()
        batches: dict[int, list[tuple[int, Envelope]]] = defaultdict(list)
        for node, request in requests.items():
            result.bytes_down += request.nbytes()
            if node in self.nodes():
                batches[self.slot_of(node)].append((node, request))
            else:
                result.failures[node] = "unknown node"
        answers, compute, broken = self._collect(batches, deadline)
        for node in requests:
            if node not in result.failures:
                self._judge(
                    result, node, answers.get(node), broken.get(self.slot_of(node)), timeout
                )
        result.client_seconds = max(compute.values(), default=0.0)
        result.seconds = time.perf_counter() - start
        return result

    def _collect(
        self, batches: dict[int, list[tuple[int, Envelope]]], deadline: float
    ) -> tuple[dict[int, Answer], dict[int, float], dict[int, str]]:
        """Stream every actor's answers until all are in or the deadline passes."""
        import ray

        pending: dict[Any, int] = {
            self.workers[slot].serve.options(num_returns="streaming").remote(batch, deadline): slot
            for slot, batch in batches.items()
        }
        answers: dict[int, Answer] = {}
        compute: dict[int, float] = defaultdict(float)
        broken: dict[int, str] = {}
        while pending and (left := deadline - time.time()) > 0:
            ready: list[Any] = ray.wait(list(pending), num_returns=1, timeout=left)[0]
            for stream in ready:
                slot = pending.pop(stream)
                try:
                    group: list[Answer] = ray.get(next(stream))
                except StopIteration:
                    continue
                except ray.exceptions.RayError as error:  # the actor died under its batch
                    broken[slot] = f"engine worker failed: {type(error).__name__}"
                    self._replace(slot, str(error).splitlines()[0][:200])
                    continue
                for answer in group:
                    answers[answer.node] = answer
                    compute[slot] += answer.seconds
                pending[stream] = slot
        for stream, slot in pending.items():  # still at work past the deadline
            self._busy[slot] = (stream, deadline)
        return answers, compute, broken

    @staticmethod
    def _judge(
        result: ExchangeResult, node: int, answer: Answer | None, broken: str | None, timeout: float
    ) -> None:
        """File one node's answer as a reply or a failure (in request order, as in-process)."""
        if answer is None:
            result.failures[node] = broken or no_reply(timeout)
        elif isinstance(answer.reply, str):
            result.failures[node] = answer.reply
        elif isinstance(answer.reply, Refusal):
            result.failures[node] = f"error reply ({answer.reply.code}): {answer.reply.reason}"
        elif answer.seconds > timeout:
            result.failures[node] = no_reply(timeout)
        else:
            result.bytes_up += answer.reply.nbytes()
            result.replies[node] = answer.reply

    # ------------------------------------------------------------------ bookkeeping
    def stats(self) -> list[WorkerStats]:
        """Each actor's counters and peak memory."""
        import ray

        self._settle_busy()
        return list(ray.get([worker.stats.remote() for worker in self.workers]))

    def close(self) -> None:
        """Stop the actors (and Ray, or the connection to a cluster, if this transport made
        it); remove spilled state."""
        import ray

        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []
        if self._owns_ray:
            ray.shutdown()
        shutil.rmtree(self._spill_root, ignore_errors=True)

    def __enter__(self) -> RayTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
