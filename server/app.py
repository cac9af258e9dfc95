"""fedkd ServerApp: check the run config, then run the chosen method over the Grid.

Methods: ``fedkd`` (the default; secure aggregation on) and ``local`` (each client alone)
are library rounds (``fedkd.fl.rounds``) over a :class:`GridTransport`; ``fedavg`` is Flower's
own FedAvg strategy (``server/baselines.py``); ``central`` needs no clients.
"""

from __future__ import annotations

import logging
import sys
import time

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedkd.fl.config import parse_run_config, preflight
from fedkd.fl.data import load_run_split, public_digest
from fedkd.fl.history import RunRecorder
from fedkd.fl.rounds import METHODS, Federation, run_central
from server.baselines import run_fedavg
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
    config = preflight(context.run_config, num_clients=max(len(nodes), config.min_clients))
    split = load_run_split(config)
    recorder = RunRecorder(config.out_dir, config.run_name, config.to_dict())
    log.info(
        "%s (%s) on %s: %d private / %d public / %d test, %d clients, model %s, results in %s",
        config.method,
        config.mode,
        config.data.dataset,
        len(split.private),
        len(split.public),
        len(split.test),
        len(nodes),
        config.local.model,
        recorder.path,
    )
    start = time.perf_counter()
    if config.method == "central":
        run_central(config, split, recorder)
    elif config.method == "fedavg":
        run_fedavg(grid, config, split, recorder)
    else:
        federation = Federation(
            GridTransport(grid), config, split, recorder, context.run_id, public_digest(split)
        )
        METHODS[config.method](federation)
    recorder.finish(config.method, seconds=time.perf_counter() - start)
    log.info("results written to %s", recorder.path.resolve())
    print(f"fedkd results: {recorder.path.resolve()}", flush=True)
