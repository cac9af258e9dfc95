"""The Python entry point of a federated run on an engine that lives in this process.

    from fedkd.engines import RayResources, run_federation
    recorder = run_federation({"num-rounds": 3}, 10_000, engine="ray")

The same run config, the same round (``fedkd.fl.experiment.run_method``: every method the
library runs), the same results folder as ``fedkd run``; ``wrap`` puts an attacker or a
fault model around the engine's transport, as :func:`fedkd.fl.experiment.simulate` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from fedkd.engines.ray_transport import RayResources, RayTransport
from fedkd.fl.experiment import OpenRun, in_process_clients, open_run, run_method
from fedkd.fl.history import RunRecorder
from fedkd.transport import Transport

ENGINES = ("inprocess", "ray")  # Flower's engine runs through `flwr run` (fedkd run --engine)


def run_federation(
    run_config: Mapping[str, Any],
    num_clients: int,
    *,
    engine: str = "ray",
    run_id: int = 0,
    resources: RayResources | None = None,
    wrap: Callable[[Transport], Transport] | None = None,
    on_transport: Callable[[Transport], None] | None = None,
) -> RunRecorder:
    """Run a whole federated experiment on ``engine``; returns its recorder.

    Parameters
    ----------
    run_config
        Flat run config (defaults for keys left out), as for ``flwr run``.
    num_clients
        The federation's size (with ``partitioner=population``, any number).
    engine
        ``"ray"`` or ``"inprocess"``.
    run_id
        The run id clients and secure aggregation bind to.
    resources
        The Ray engine's :class:`~fedkd.engines.ray_transport.RayResources`.
    wrap
        Puts a transport around the engine's (an attacker, a fault model).
    on_transport
        Called with the engine's transport before it closes (benchmarks read its stats).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}; accepted: {', '.join(ENGINES)} (flower: flwr run)")
    run = open_run(run_config, num_clients)
    run_opened(run, run_config, num_clients, engine, run_id, resources, wrap, on_transport)
    return run.recorder


def run_opened(
    run: OpenRun,
    run_config: Mapping[str, Any],
    num_clients: int,
    engine: str,
    run_id: int,
    resources: RayResources | None = None,
    wrap: Callable[[Transport], Transport] | None = None,
    on_transport: Callable[[Transport], None] | None = None,
) -> None:
    """:func:`run_federation` for a run already opened (its results folder known)."""
    # The server's own threads, as the ServerApp sets them: the student's distillation is
    # then the same float computation on every engine (and no pool oversubscribes the cores).
    torch.set_num_threads(run.config.local.torch_threads)
    transport: Any = None
    try:
        if run.config.method != "central":
            transport = _transport(engine, run_config, num_clients, run_id, resources)
        start = time.perf_counter()
        run_method(run, transport if wrap is None or transport is None else wrap(transport), run_id)
        run.recorder.finish(run.config.method, seconds=time.perf_counter() - start)
        if on_transport is not None and transport is not None:
            on_transport(transport)
    finally:
        if transport is not None and hasattr(transport, "close"):
            transport.close()


def _transport(
    engine: str,
    run_config: Mapping[str, Any],
    num_clients: int,
    run_id: int,
    resources: RayResources | None,
) -> Transport:
    if engine == "inprocess":
        return in_process_clients(run_config, num_clients, run_id=run_id)
    return RayTransport(
        run_config, num_clients, run_id=run_id, resources=resources or RayResources()
    )
