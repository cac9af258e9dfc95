"""fedkd's rounds as a Flower strategy: ``FedKD(...).start(grid=grid)`` in your own ServerApp.

Flower's strategies (``FedAvg``, ``FedProx``, ...) are driven from a ServerApp's main function;
:class:`FedKD` is driven the same way and returns Flower's ``Result``. It carries the library's
rounds (every method: FedKD with secure aggregation, FedDF, FedAvg, FedProx, local, central)
over a :class:`~server.grid_transport.GridTransport`, so it pairs with fedkd's ClientApp
(``clients.app:app``)::

    from flwr.serverapp import Grid, ServerApp
    from flwr.app import Context
    from server.strategy import FedKD

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        result = FedKD(context.run_config, teacher_rule="dsfl").start(grid=grid, num_rounds=5)
        print(result.evaluate_metrics_serverapp)

fedkd's own ServerApp (``server.app``) is exactly that. The run also writes its results folder
(``out-dir``), as every fedkd run does: the journal there is what makes it resumable.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result

from fedkd.fl.config import parse_run_config
from fedkd.fl.experiment import open_run, run_method
from fedkd.fl.history import RunRecorder
from server.grid_transport import GridTransport, wait_for_nodes

log = logging.getLogger("fedkd")
Metric = int | float | list[int] | list[float]  # what a MetricRecord holds

SERVER_METRICS = ("student_accuracy", "teacher_accuracy", "dp_epsilon")
CLIENT_METRICS = ("client_accuracy_mean", "client_train_loss", "sampled", "survivors")


class FedKD:
    """The library's rounds, configured by run-config keys, in the shape of Flower's strategies.

    Parameters
    ----------
    run_config
        Run-config keys (``docs/configuration.md``), e.g. a ServerApp's
        ``context.run_config``; checked here, so a bad key fails before any message is sent.
    **settings
        More keys as keyword arguments, ``_`` for ``-`` (``teacher_rule="dsfl"``); they win
        over ``run_config``.
    """

    def __init__(self, run_config: Mapping[str, Any] | None = None, **settings: Any) -> None:
        self.run_config = dict(run_config or {})
        self.run_config.update({key.replace("_", "-"): v for key, v in settings.items()})
        self.config = parse_run_config(self.run_config)
        self.results: Path | None = None  # the run folder, once started

    def start(
        self,
        grid: Grid,
        num_rounds: int | None = None,
        timeout: float | None = None,
        run_id: int | None = None,
    ) -> Result:
        """Run the rounds over ``grid``; the final student and each round's metrics.

        ``num_rounds`` and ``timeout`` (seconds per exchange, ``stage-timeout``) override the
        run config's, as Flower's ``Strategy.start`` takes them. ``run_id`` (what the clients
        and secure aggregation bind to) defaults to the grid's run; a ServerApp passes its
        ``context.run_id``.
        """
        run_config = dict(self.run_config)
        if num_rounds is not None:
            run_config["num-rounds"] = num_rounds
        if timeout is not None:
            run_config["stage-timeout"] = timeout
        config = parse_run_config(run_config)
        torch.set_num_threads(config.local.torch_threads)
        nodes: list[int] = []
        if config.method != "central":
            nodes = wait_for_nodes(grid, config.min_clients, config.node_wait)
        # Everything a client or a later round could trip over is checked here, once.
        run = open_run(run_config, num_clients=max(len(nodes), config.min_clients))
        self.results = run.recorder.path.resolve()
        began = time.perf_counter()
        run_method(run, GridTransport(grid), grid.run.run_id if run_id is None else run_id)
        run.recorder.finish(config.method, seconds=time.perf_counter() - began)
        log.info("results written to %s", self.results)
        return flower_result(run.recorder)


def flower_result(recorder: RunRecorder) -> Result:
    """A run folder's outcome as Flower's ``Result``: the student's arrays (when the method
    has one), the server's and the clients' metrics per completed round."""
    result = Result()
    student = Path(recorder.path) / "student.pt"
    if student.exists():
        result.arrays = ArrayRecord(torch.load(student, weights_only=True))
    for row in recorder.rows:
        if row.status != "ok":
            continue
        numbers = dataclasses.asdict(row)
        server = _finite(numbers, SERVER_METRICS)
        clients = _finite(numbers, CLIENT_METRICS)
        if server:
            result.evaluate_metrics_serverapp[row.round] = MetricRecord(server)
        if clients:
            result.train_metrics_clientapp[row.round] = MetricRecord(clients)
    return result


def _finite(row: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Metric]:
    return {key: float(row[key]) for key in keys if math.isfinite(row[key])}
