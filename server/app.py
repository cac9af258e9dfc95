"""fedkd ServerApp: check the run config, then run the chosen method over the Grid.

Every method -- ``fedkd`` (the default; secure aggregation on), ``feddf``, ``fedavg``,
``fedprox``, ``local`` and ``central`` -- is library code (``fedkd.fl.experiment``) over a
:class:`GridTransport`: the same rounds as on every other engine. (FedAvg's aggregate equals
Flower's own ``FedAvg`` strategy's on the same replies: tests/test_fedavg.py.)
"""

from __future__ import annotations

import logging
import sys

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.strategy import FedKD

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
    """Run one experiment described by ``context.run_config`` (:class:`FedKD`)."""
    _configure_logging()
    strategy = FedKD(context.run_config)
    strategy.start(grid=grid, run_id=context.run_id)
    print(f"fedkd results: {strategy.results}", flush=True)
