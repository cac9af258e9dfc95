"""Simulated identities stay in simulation (issue 25, item 5).

A ClientApp under a deployed SuperNode runs in Flower's ``flwr-clientapp`` process; in Flower's
simulation it runs in a Ray worker. A deployed node refuses the ``simulated`` roster (whoever
runs the server can derive those identities from the source) and the curious no-roster mode
unless its operator allows it; in simulation both keep working.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from clients import app as client_module
from fedkd.cli.keygen import ROSTER_FILE, create_keys, identity_file
from fedkd.fl.config import FedConfig
from server.app import app as server_app
from tests.flower_harness import InProcessGrid, server_context

NODES = 3


def small(tmp_path: Path, **overrides: object) -> dict[str, Any]:
    config: dict[str, Any] = {
        **FedConfig().to_dict(),
        "num-rounds": 1,
        "local-epochs": 1,
        "warmup-epochs": 0,
        "distill-epochs": 1,
        "eval-clients": False,
        "out-dir": str(tmp_path),
        "run-name": "run",
        "node-wait": 5.0,
    }
    config.update(overrides)
    return config


def test_the_client_app_knows_a_deployed_supernode_by_its_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not client_module.deployed()  # pytest, as Flower's Ray workers: not deployed
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/flwr-clientapp", "--insecure"])
    assert client_module.deployed()
    monkeypatch.setattr(sys, "argv", ["/opt/venv/bin/flwr-clientapp-helper"])
    assert not client_module.deployed()


def _run(config: dict[str, Any], node_config: dict[str, Any] | None = None) -> dict[str, Any]:
    grid = InProcessGrid(client_module.app, config, NODES)
    for context in grid.contexts.values():
        context.node_config.update(node_config or {})
    server_app(grid, server_context(config))
    history = Path(config["out-dir"]) / config["run-name"] / "history.json"
    [row] = json.loads(history.read_text())
    return row


def _deployed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/flwr-clientapp"])


def test_a_deployed_node_refuses_simulated_identities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small(tmp_path)  # the default roster: simulated
    _deployed(monkeypatch)
    row = _run(config)
    assert row["status"] == "skipped" and row["survivors"] == 0
    assert len(row["dropped_reasons"]) == NODES
    assert all("deployed" in r and "'simulated'" in r for r in row["dropped_reasons"])


def test_a_deployed_node_refuses_simulated_identities_under_feddf_as_published_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``method=feddf`` sums the weights beside the logits through the same secure
    aggregation: a server that picks it must not get past the trust check."""
    _deployed(monkeypatch)
    row = _run(small(tmp_path, method="feddf"))
    assert row["status"] == "skipped" and row["survivors"] == 0
    assert all("deployed" in r and "'simulated'" in r for r in row["dropped_reasons"])


@pytest.mark.filterwarnings("ignore:secure aggregation")
def test_a_deployed_node_runs_curious_only_when_its_operator_allows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _deployed(monkeypatch)
    row = _run(small(tmp_path, **{"secagg-roster": "", "run-name": "no"}))
    assert row["status"] == "skipped"
    assert all("allow-curious" in r for r in row["dropped_reasons"])
    row = _run(small(tmp_path, **{"secagg-roster": "", "run-name": "yes"}), {"allow-curious": 1})
    assert row["status"] == "ok" and row["survivors"] == NODES


def test_a_deployed_node_with_its_operators_identity_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "keys"
    create_keys([str(i) for i in range(NODES)], keys)
    config = small(tmp_path, **{"secagg-roster": str(keys / ROSTER_FILE)})
    _deployed(monkeypatch)
    grid = InProcessGrid(client_module.app, config, NODES)
    for index, context in enumerate(grid.contexts.values()):
        context.node_config.update(
            {
                "secagg-identity": str(identity_file(keys, str(index))),
                "secagg-roster": str(keys / ROSTER_FILE),
                "state-dir": str(tmp_path / "nodes"),
            }
        )
    server_app(grid, server_context(config))
    [row] = json.loads((tmp_path / "run" / "history.json").read_text())
    assert row["status"] == "ok" and row["survivors"] == NODES
    # Each node's ledger is under its operator's state-dir, named by its roster identity.
    assert sorted(p.name for p in (tmp_path / "nodes").iterdir()) == [
        f"identity-{i}" for i in range(NODES)
    ]


@pytest.mark.slow
def test_real_supernodes_refuse_simulated_identities(tmp_path: Path) -> None:
    """Real SuperLink and SuperNode processes on loopback (``experiments/deploy_local.py``)
    with the default roster: every node refuses, in one line each, and the run goes on."""
    from experiments.deploy_local import deploy_local

    run = ["num-rounds=1 local-epochs=1 warmup-epochs=0 distill-epochs=1"]
    result = deploy_local(
        2, run, port=19191, keys=False, work_dir=tmp_path, timeout=600, echo=False
    )
    assert result.results is not None, (result.log_dir / "flwr-run.log").read_text()[-3000:]
    [row] = json.loads((result.results / "history.json").read_text())
    assert row["status"] == "skipped" and row["survivors"] == 0
    assert all("SuperNode is deployed" in r for r in row["dropped_reasons"])
