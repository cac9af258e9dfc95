"""fedkd ServerApp: parse the run config once, then run the chosen method's rounds.

Methods: ``fedkd`` (the default; secure aggregation on), ``fedavg`` (Flower's own FedAvg),
``local`` (each client alone) and ``central`` (all private data pooled). All share the data
split, the student architecture and the results folder layout.
"""

from __future__ import annotations

import logging
import sys
import time

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedkd.fl.config import parse_run_config
from fedkd.fl.data import load_run_split, public_digest
from fedkd.fl.history import RunRecorder
from server.baselines import run_central, run_fedavg
from server.messaging import wait_for_nodes
from server.rounds import run_fedkd, run_local

app = ServerApp()
log = logging.getLogger("fedkd.server")


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
    torch.set_num_threads(config.torch_threads)
    split = load_run_split(config)
    recorder = RunRecorder(config.out_dir, config.run_name, config.to_dict())
    log.info(
        "fedkd %s on %s: %d private / %d public / %d test, model %s, results in %s",
        config.method,
        config.dataset,
        len(split.private),
        len(split.public),
        len(split.test),
        config.model,
        recorder.path,
    )
    start = time.perf_counter()
    if config.method == "central":
        run_central(config, split, recorder)
    else:
        nodes = wait_for_nodes(grid, config.min_clients, config.node_wait)
        log.info("%d clients connected", len(nodes))
        if config.method == "fedavg":
            run_fedavg(grid, config, split, recorder)
        elif config.method == "local":
            run_local(grid, config, recorder, nodes)
        else:
            run_fedkd(grid, config, split, public_digest(split), recorder, nodes, context.run_id)
    recorder.plot()
    last = recorder.rows[-1] if recorder.rows else None
    recorder.write_json(
        "summary.json",
        {
            "method": config.method,
            "rounds": len(recorder.rows),
            "final_student_accuracy": None if last is None else last.student_accuracy,
            "final_client_accuracy_mean": None if last is None else last.client_accuracy_mean,
            "seconds": time.perf_counter() - start,
        },
    )
    log.info("results written to %s", recorder.path.resolve())
    print(f"fedkd results: {recorder.path.resolve()}", flush=True)
