"""Nothing but the DP model leaves a DP-SGD client (issue 25, item 6).

Record-level DP covers the DP-SGD model and whatever is computed from it and public data. The
test replays every phase a DP-SGD client answers and recomputes each value of its reply from
the DP model alone: a value that is not such a function -- the ``train-seconds`` a FedAvg client
sent, which tracked its shard size (Spearman 0.94) -- has no recipe here and fails the test.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedkd.distill import evaluate
from fedkd.fl import keys
from fedkd.fl.client import MemoryStore, NodeInfo, handle, weights_arrays
from fedkd.fl.client_work import new_client_model
from fedkd.fl.config import FedConfig, parse_run_config
from fedkd.fl.contribution import stats_block, teacher_contribution
from fedkd.fl.data import federated_data
from fedkd.fl.server_work import new_student
from fedkd.transport import Envelope, Refusal

PID, CLIENTS = 1, 3


def run_config(tmp_path: Path, **overrides: object) -> dict[str, Any]:
    config: dict[str, Any] = {
        **FedConfig().to_dict(),
        "client-dp-sgd": True,
        "client-dp-noise": 1.2,  # a given noise: no calibration, and the same for any shard
        "num-rounds": 1,
        "local-epochs": 1,
        "warmup-epochs": 0,
        "out-dir": str(tmp_path),
    }
    config.update(overrides)
    return config


def ask(config: dict[str, Any], request: Envelope, store: MemoryStore) -> Envelope:
    reply = handle(request, NodeInfo(1000 + PID, 0, PID, CLIENTS), store, config)
    assert not isinstance(reply, Refusal), reply.reason
    return reply


def _model_from(arrays: dict[str, np.ndarray], config: FedConfig) -> Any:
    model = new_client_model(config, federated_data(config, CLIENTS), PID)
    model.load_state_dict(
        {k.removeprefix(keys.WEIGHTS_PREFIX): torch.from_numpy(v) for k, v in arrays.items()}
    )
    return model


def _check_metrics(reply: Envelope, model: Any, config: FedConfig) -> None:
    """Each metric from the model (or a constant): the whole reply, nothing else."""
    data = federated_data(config, CLIENTS)
    expected: dict[str, Any] = {
        keys.NUM_EXAMPLES: 1,  # not the shard size
        keys.CLIENT_ACCURACY: evaluate(model, data.split.test, device="cpu").accuracy,
        keys.TRAIN_LOSS: math.nan,  # a loss on private batches is not private output
        keys.PARTITION_ID: PID,
        keys.CLIPPED: 0.0,  # no contribution in this phase
    }
    assert set(reply.fields) == set(expected)
    for name, value in expected.items():
        got = reply.fields[name]
        assert (math.isnan(value) and math.isnan(got)) or got == value, name  # type: ignore[arg-type]


@pytest.mark.parametrize("phase", ["fedavg", "local"])
def test_a_dpsgd_clients_plaintext_reply_is_its_dp_model_and_nothing_else(
    tmp_path: Path, phase: str
) -> None:
    config = run_config(tmp_path, method=phase)
    parsed = parse_run_config(config)
    store = MemoryStore()
    request = Envelope(keys.TRAIN, {keys.ROUND: 1, keys.PHASE: phase})
    if phase == "fedavg":
        student = new_student(parsed, federated_data(parsed, CLIENTS).split)
        request.arrays.update(weights_arrays(student))
    reply = ask(config, request, store)
    if phase == "fedavg":
        weights = {k: v for k, v in reply.arrays.items() if k.startswith(keys.WEIGHTS_PREFIX)}
        assert set(reply.arrays) == set(weights)
    else:
        assert reply.arrays == {}
        saved = store.get(keys.STATE_MODEL)
        assert saved is not None
        weights = saved.arrays
    _check_metrics(reply, _model_from(weights, parsed), parsed)


@pytest.mark.filterwarnings("ignore:secure aggregation is OFF")
def test_a_dpsgd_clients_contribution_is_computed_from_its_dp_model(tmp_path: Path) -> None:
    config = run_config(tmp_path, mode="fedmd", secagg=False)
    parsed = parse_run_config(config)
    store = MemoryStore()
    reply = ask(config, Envelope(keys.TRAIN, {keys.ROUND: 1, keys.PHASE: "fedkd"}), store)
    assert set(reply.fields) == {keys.PARTITION_ID} and set(reply.arrays) == {keys.CONTRIBUTION}
    saved = store.get(keys.STATE_MODEL)  # FedMD keeps its DP model: recompute from it
    assert saved is not None
    model, data = _model_from(saved.arrays, parsed), federated_data(parsed, CLIENTS)
    vector, clipped = teacher_contribution(parsed, data, PID, model)
    accuracy = evaluate(model, data.split.test, device="cpu").accuracy
    expected = np.concatenate([vector, stats_block(accuracy, math.nan, clipped)])
    np.testing.assert_array_equal(reply.arrays[keys.CONTRIBUTION], expected)


def test_a_secure_dpsgd_train_reply_names_only_the_partition(tmp_path: Path) -> None:
    from fedkd.fl.experiment import simulate
    from fedkd.transport import Transport
    from tests.relay import Eavesdropper

    spies: list[Eavesdropper] = []

    def spy_on(inner: Transport) -> Transport:
        spies.append(Eavesdropper(inner))
        return spies[-1]

    config = run_config(tmp_path, **{"distill-epochs": 1})
    simulate(config, CLIENTS, wrap=spy_on)
    seen = [r for spy in spies for r in spy.seen if r.kind == keys.TRAIN]
    assert len(seen) == CLIENTS
    assert all(set(r.fields) == {keys.PARTITION_ID, "payload"} and not r.arrays for r in seen)


@pytest.mark.slow
def test_flowers_fedavg_records_each_nodes_refusal(tmp_path: Path) -> None:
    """Under Flower's own FedAvg strategy too, a node's refusal is a dropout with its reason:
    a second run asking for more rounds than the first pinned is refused by every node."""
    import json

    from clients.app import app as client_app
    from server.app import app as server_app
    from tests.flower_harness import InProcessGrid, server_context

    def run(name: str, rounds: int) -> list[dict[str, Any]]:
        config = run_config(tmp_path, method="fedavg", **{"num-rounds": rounds, "run-name": name})
        server_app(InProcessGrid(client_app, config, CLIENTS), server_context(config))
        return json.loads((tmp_path / name / "history.json").read_text())

    assert [r["survivors"] for r in run("first", 1)] == [CLIENTS]
    second = run("second", 2)
    assert [r["survivors"] for r in second] == [0, 0]
    assert all(
        len(r["dropped_reasons"]) == CLIENTS
        and all("ledger refuses (budget)" in why for why in r["dropped_reasons"])
        for r in second
    )
