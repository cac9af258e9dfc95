"""FedProx: the proximal term (fedkd.distill), the client's round, the library round in the app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clients import codec
from clients.app import app as client_app
from fedkd.data import ArrayDataset, DataSplit
from fedkd.distill import train_supervised
from fedkd.distill.terms import Proximal, Step
from fedkd.fl import keys
from fedkd.fl.client import MemoryStore, NodeInfo, handle, weights_arrays
from fedkd.fl.client_work import local_round, new_client_model
from fedkd.fl.config import FedConfig, parse_run_config
from fedkd.fl.data import federated_data
from fedkd.fl.fedprox import proximal_round
from fedkd.models import build_model
from fedkd.transport import BAD_REQUEST, Envelope, Refusal
from server.app import app as server_app
from tests.flower_harness import InProcessGrid, server_context


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _cnn(split: DataSplit) -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", input_shape=split.input_shape, num_classes=split.num_classes)


def test_proximal_term_is_half_mu_times_the_squared_distance() -> None:
    model = nn.Linear(3, 2)
    term = Proximal.around(model, mu=0.5)
    assert float(term(Step({}, {})).detach()) == 0.0  # at the anchor
    with torch.no_grad():
        model.weight.add_(1.0)  # 6 entries moved by 1
    assert float(term(Step({}, {})).detach()) == pytest.approx(0.5 * 0.5 * 6)
    with pytest.raises(ValueError, match="mu"):
        Proximal(mu=-1.0)
    with pytest.raises(ValueError, match="proximal_mu"):
        train_supervised(
            model,
            ArrayDataset(np.zeros((2, 1, 1, 3), np.float32), np.zeros(2, np.int64)),
            proximal_mu=-1,
        )


def test_proximal_term_keeps_local_training_near_the_global_weights(digits: DataSplit) -> None:
    """Skewed local data (three classes) pulls the weights far; the term holds them back."""
    shard = digits.private.subset(np.flatnonzero(digits.private.y < 3)[:150])
    start = _flat(_cnn(digits))
    moved = {}
    for mu in (0.0, 1.0):
        model = _cnn(digits)
        train_supervised(model, shard, epochs=3, batch_size=32, lr=0.05, optimizer="sgd", seed=1)
        if mu == 0.0:  # a zero weight is plain cross-entropy: the same run bit for bit
            again = _cnn(digits)
            train_supervised(
                again, shard, epochs=3, batch_size=32, lr=0.05, optimizer="sgd", seed=1,
                proximal_mu=0.0,
            )  # fmt: skip
            assert torch.equal(_flat(again), _flat(model))
        model = _cnn(digits)
        train_supervised(
            model, shard, epochs=3, batch_size=32, lr=0.05, optimizer="sgd", seed=1, proximal_mu=mu
        )
        moved[mu] = float((_flat(model) - start).norm())
    assert moved[1.0] < 0.8 * moved[0.0], moved


def _small(**overrides: object) -> FedConfig:
    return parse_run_config(
        {"num-rounds": 2, "local-epochs": 1, "warmup-epochs": 0, "eval-clients": False, **overrides}
    )


def test_fedprox_client_at_mu_zero_is_the_fedavg_client() -> None:
    """Same epochs, seeds and batches: FedProx differs from FedAvg by the term alone."""
    config = _small(method="fedprox")
    data = federated_data(config, 3)
    fedavg, fedprox = new_client_model(config, data, 1), new_client_model(config, data, 1)
    local_round(config, data, 1, fedavg, server_round=2, contribute=False)
    proximal_round(config, data, 1, fedprox, server_round=2, mu=0.0)
    assert torch.equal(_flat(fedavg), _flat(fedprox))
    pulled = new_client_model(config, data, 1)
    proximal_round(config, data, 1, pulled, server_round=2, mu=10.0)
    assert not torch.equal(_flat(pulled), _flat(fedavg))


@pytest.mark.parametrize("mu", [None, -0.1, float("nan"), "0.1", True])
def test_a_fedprox_request_without_a_usable_mu_is_refused(mu: object) -> None:
    config = _small(method="fedprox")
    data = federated_data(config, 2)
    model = new_client_model(config, data, 0)
    fields: dict[str, object] = {keys.ROUND: 1, keys.PHASE: "fedprox"}
    if mu is not None:
        fields[keys.PROXIMAL_MU] = mu
    request = Envelope(keys.TRAIN, fields, arrays=weights_arrays(model))  # type: ignore[arg-type]
    node = NodeInfo(node_id=1, run_id=1, partition_id=0, num_partitions=2)
    reply = handle(request, node, MemoryStore(), config.to_dict())
    assert isinstance(reply, Refusal) and reply.code == BAD_REQUEST
    assert keys.PROXIMAL_MU in reply.reason


def test_bad_proximal_mu_in_the_run_config_names_the_key() -> None:
    with pytest.raises(ValueError, match="'proximal-mu'"):
        parse_run_config({"proximal-mu": -1.0})
    with pytest.raises(ValueError, match="'proximal-mu'"):
        parse_run_config({"proximal-mu": "lots"})


def test_fedprox_app_round_trip_sends_mu_and_learns(tmp_path: Path) -> None:
    """The library's FedProx round in our ServerApp, our ClientApp, an in-process Grid."""
    config = {
        **FedConfig().to_dict(),
        **{"method": "fedprox", "proximal-mu": 0.05, "num-rounds": 2, "local-epochs": 1},
        **{"warmup-epochs": 0, "out-dir": str(tmp_path), "node-wait": 5.0},
    }
    grid = InProcessGrid(client_app, config, 3)
    server_app(grid, server_context(config))
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    history = json.loads((folder / "history.json").read_text())
    assert [r["method"] for r in history] == ["fedprox", "fedprox"]
    assert history[-1]["student_accuracy"] > 0.3 and history[-1]["survivors"] == 3
    last = history[-1]  # clients report their own accuracy; the history keeps the spread
    assert (
        last["client_accuracy_min"] <= last["client_accuracy_median"] <= last["client_accuracy_max"]
    )
    assert (
        last["client_accuracy_min"] <= last["client_accuracy_mean"] <= last["client_accuracy_max"]
    )
    assert last["client_accuracy_mean"] > 0.1
    trains = [m for m in grid.sent if m.metadata.message_type == keys.TRAIN]
    assert len(trains) == 6
    for message in trains:
        sent = codec.decode(keys.TRAIN, message.content).fields
        assert sent[keys.PROXIMAL_MU] == 0.05 and sent[keys.PHASE] == "fedprox"
    assert not any(r.has_error() for r in grid.replies)
