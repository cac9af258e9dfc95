"""fedkd ServerApp: check the run config, then run the chosen method over the Grid.

Every method -- ``fedkd`` (the default; secure aggregation on), ``feddf``, ``fedavg``,
``fedprox``, ``local`` and ``central`` -- is library code (``fedkd.fl.experiment``) over a
:class:`GridTransport`: the same rounds as on every other engine. (FedAvg's aggregate equals
Flower's own ``FedAvg`` strategy's on the same replies: tests/test_fedavg.py.)
"""

from __future__ import annotations

import logging
import sys
import time

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedkd.fl.config import parse_run_config
from fedkd.fl.experiment import open_run, run_method
from server.grid_transport import GridTransport, wait_for_nodes

app = ServerApp()
log = logging.getLogger("fedkd")


def _configure_logging() -> None:
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s fedkd %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one experiment described by ``context.run_config``."""
    _configure_logging()
    config = parse_run_config(context.run_config)
    torch.set_num_threads(config.local.torch_threads)
    nodes: list[int] = []
    if config.method != "central":
        nodes = wait_for_nodes(grid, config.min_clients, config.node_wait)
    # Everything a client or a later round could trip over is checked here, once.
    run = open_run(context.run_config, num_clients=max(len(nodes), config.min_clients))
    start = time.perf_counter()
    run_method(run, GridTransport(grid), context.run_id)
    run.recorder.finish(config.method, seconds=time.perf_counter() - start)
    log.info("results written to %s", run.recorder.path.resolve())
    print(f"fedkd results: {run.recorder.path.resolve()}", flush=True)
