"""A whole federated run, from a flat run config to a results folder.

The ServerApp (``server/app.py``) calls :func:`open_run` and :func:`run_method` over a
``GridTransport``; :func:`simulate` does the same in this process over an
:class:`~fedkd.transport.InProcessTransport` of library clients -- no Flower, no Ray -- for
tests, benchmarks and attack studies. ``wrap`` puts a (malicious) transport around the
honest one, so an attacker deviates from the real round instead of copying it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedkd.data import DataSplit
from fedkd.fl import keys
from fedkd.fl.client import MemoryStore, NodeInfo, handle
from fedkd.fl.config import SECURE_METHODS, FedConfig
from fedkd.fl.data import load_run_split, public_digest
from fedkd.fl.fedavg import run_fedavg
from fedkd.fl.federation import Federation
from fedkd.fl.history import RunRecorder
from fedkd.fl.identities import server_roster
from fedkd.fl.journal import JournalingTransport, RoundJournal
from fedkd.fl.preflight import preflight
from fedkd.fl.rounds import run_central, run_fedkd, run_local
from fedkd.transport import Envelope, InProcessTransport, Refusal, Transport

log = logging.getLogger("fedkd.server")

FIRST_NODE_ID = 1000  # in-process node ids: FIRST_NODE_ID + partition id

# method -> its rounds over a Transport (``central`` has no clients: run_central)
METHODS: dict[str, Callable[[Federation], None]] = {
    "fedkd": run_fedkd,
    "feddf": run_fedkd,  # FedDF as published: the same round, weights summed beside the logits
    "fedavg": run_fedavg,
    "fedprox": run_fedavg,  # FedAvg's round with proximal-mu in the train message
    "local": run_local,
}


@dataclass
class OpenRun:
    """A checked config, its data split and the results folder it writes."""

    config: FedConfig
    split: DataSplit
    recorder: RunRecorder


def open_run(run_config: Mapping[str, Any], num_clients: int) -> OpenRun:
    """Check everything (:func:`~fedkd.fl.preflight.preflight`), load the split, open the folder."""
    config = preflight(run_config, num_clients=num_clients)
    split = load_run_split(config)
    if config.resume:
        recorder = RunRecorder.reopen(config.resume, log=config.log)
        _check_resumable(recorder.config, config.to_dict())
        log.info("resuming %s after round %d", recorder.path, len(recorder.rows))
    else:
        recorder = RunRecorder(config.out_dir, config.run_name, config.to_dict(), log=config.log)
    log.info(
        "%s (%s) on %s: %d private / %d public / %d test, %d clients, model %s, results in %s",
        config.method,
        config.mode,
        config.data.dataset,
        len(split.private),
        len(split.public),
        len(split.test),
        num_clients,
        config.local.model,
        recorder.path,
    )
    return OpenRun(config, split, recorder)


# What may differ between a run and its resumption: where it writes, how long it goes on.
RESUMABLE_CHANGES = frozenset(
    {
        "num-rounds",
        "resume",
        "out-dir",
        "run-name",
        "node-wait",
        "stage-timeout",
        "secagg-timeout",
        "log",
    }
)


def _check_resumable(saved: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        raise ValueError(
            "cannot resume: the run config differs from the stopped run's in "
            + ", ".join(f"'{k}' ({saved.get(k)!r} -> {now[k]!r})" for k in changed)
        )


def run_method(run: OpenRun, transport: Transport, run_id: int) -> None:
    """Run the config's method over ``transport`` (``central`` needs no clients)."""
    config = run.config
    if config.method == "central":
        run_central(config, run.split, run.recorder)
        return
    if config.method not in METHODS:
        raise ValueError(f"method {config.method!r} has no rounds; known: {sorted(METHODS)}")
    roster = None
    if config.method in SECURE_METHODS and config.secagg.enabled:
        roster = server_roster(
            config.secagg.roster, run_id=run_id, num_partitions=len(transport.nodes())
        )
    journal = RoundJournal(run.recorder.path)
    rows = run.recorder.rows
    journal.write("start", flower_run=run_id, resumed_after=rows[-1].round if rows else None)
    federation = Federation(
        JournalingTransport(transport, journal),
        config,
        run.split,
        run.recorder,
        run_id,
        public_digest(run.split),
        roster=roster,
        journal=journal,
        partitions=journal.partitions,  # one map: what earlier runs of the folder learned too
    )
    METHODS[config.method](federation)


def in_process_clients(
    run_config: Mapping[str, Any],
    num_clients: int,
    *,
    run_id: int = 0,
    stores: dict[int, MemoryStore] | None = None,
    state_dir: str | Path | None = None,
) -> InProcessTransport:
    """``num_clients`` library clients, each with its own store, as one transport.

    ``stores``, when given, receives each client's store under its partition id, so that an
    experiment playing every client can read what the clients keep to themselves (their
    DP-SGD accountants). ``state_dir`` is where the nodes keep what outlives a run (their
    release ledgers; node config ``state-dir``); ``None``: ``$FEDKD_HOME/nodes``, as
    simulated nodes under Flower.
    """
    settings = {} if state_dir is None else {keys.NODE_STATE_DIR: str(state_dir)}

    def client(partition_id: int) -> Callable[[Envelope], Envelope | Refusal]:
        node = NodeInfo.simulated(
            FIRST_NODE_ID + partition_id, run_id, partition_id, num_clients, **settings
        )
        store = MemoryStore()
        if stores is not None:
            stores[partition_id] = store
        return lambda request: handle(request, node, store, run_config)

    return InProcessTransport({FIRST_NODE_ID + i: client(i) for i in range(num_clients)})


def simulate(
    run_config: Mapping[str, Any],
    num_clients: int,
    *,
    run_id: int = 0,
    wrap: Callable[[Transport], Transport] | None = None,
    stores: dict[int, MemoryStore] | None = None,
    state_dir: str | Path | None = None,
) -> RunRecorder:
    """Run a whole federated experiment in this process; returns its recorder.

    Parameters
    ----------
    run_config
        Flat run config (defaults for keys left out); every method runs here.
    num_clients
        Clients (partitions) of the federation.
    run_id
        The run id clients and secure aggregation bind to.
    wrap
        Puts a transport around the honest one (an attacker, a fault model).
    stores
        Receives each client's store by partition id (see :func:`in_process_clients`).
    state_dir
        Where the nodes keep their release ledgers (see :func:`in_process_clients`). A study
        that plays every node and means each run's nodes to be new clients passes a fresh
        directory per run; nodes that share one refuse to release a vector for two
        participant sets, or past their privacy budget.
    """
    run = open_run(run_config, num_clients)
    transport: Transport = in_process_clients(
        run_config, num_clients, run_id=run_id, stores=stores, state_dir=state_dir
    )
    if wrap is not None:
        transport = wrap(transport)
    start = time.perf_counter()
    run_method(run, transport, run_id)
    run.recorder.finish(run.config.method, seconds=time.perf_counter() - start)
    return run.recorder
