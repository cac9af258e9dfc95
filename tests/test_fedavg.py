"""FedAvg and FedProx as library rounds: Flower's FedAvg aggregate, bad replies, every engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Message
from flwr.serverapp.strategy import FedAvg

from clients import codec
from clients.app import app as client_app
from fedkd.fl import keys
from fedkd.fl.config import FedConfig
from fedkd.fl.experiment import in_process_clients, simulate
from fedkd.fl.fedavg import (
    average_replies,
    reply_weights,
    weighted_average,
    weights_of,
    weights_request,
)
from fedkd.fl.server_work import new_student
from fedkd.transport import ExchangeResult, broadcast
from server.app import app as server_app
from tests.flower_harness import InProcessGrid, install_identity, server_context


def small_config(tmp_path: Path, **overrides: object) -> dict[str, object]:
    return {
        "method": "fedavg",
        "num-rounds": 2,
        "local-epochs": 1,
        "eval-clients": False,
        "out-dir": str(tmp_path),
        **overrides,
    }


def one_train_exchange(tmp_path: Path, clients: int = 4) -> tuple[ExchangeResult, dict]:
    """The replies of real library clients to one FedAvg train message (digits, Dirichlet)."""
    config = small_config(tmp_path)
    from fedkd.fl.config import parse_run_config
    from fedkd.fl.data import load_run_split

    parsed = parse_run_config(config)
    student = new_student(parsed, load_run_split(parsed))
    transport = in_process_clients(config, clients)
    request = weights_request(1, "fedavg", student, 0.0)
    return transport.exchange(broadcast(transport.nodes(), request), timeout=600), weights_of(
        student
    )


def flower_fedavg(replies: ExchangeResult) -> dict[str, np.ndarray]:
    """Flower's own FedAvg strategy aggregating the same replies, encoded as Flower replies."""
    install_identity()
    messages = [
        Message(codec.encode(reply), dst_node_id=node, message_type="train")
        for node, reply in replies.replies.items()
    ]
    arrays, _ = FedAvg().aggregate_train(1, messages)
    assert arrays is not None
    return {name: array.numpy() for name, array in arrays.items()}


def test_library_fedavg_equals_flowers_fedavg_on_the_same_replies(tmp_path: Path) -> None:
    train, global_weights = one_train_exchange(tmp_path)
    sizes = [r.fields[keys.NUM_EXAMPLES] for r in train.replies.values()]
    assert len(set(sizes)) > 1  # a Dirichlet split: the shard-size weighting matters
    ours = average_replies(train, global_weights)
    theirs = flower_fedavg(train)
    assert ours is not None and ours.keys() == theirs.keys()
    for name, value in ours.items():
        assert value.dtype == theirs[name].dtype
        np.testing.assert_allclose(value, theirs[name], rtol=1e-6, atol=1e-7, err_msg=name)
    states = [reply_weights(reply, global_weights) for reply in train.replies.values()]
    unweighted = weighted_average(states, [1.0] * len(states))  # what a wrong weighting gives
    assert not np.allclose(unweighted["head.weight"], theirs["head.weight"], rtol=1e-4)


def test_a_malformed_reply_drops_its_sender_not_the_round(tmp_path: Path) -> None:
    train, global_weights = one_train_exchange(tmp_path)
    nodes = sorted(train.replies)
    bad_shape, bad_size, nan = nodes[0], nodes[1], nodes[2]
    train.replies[bad_shape].arrays[keys.WEIGHTS_PREFIX + "head.bias"] = np.zeros(3, np.float32)
    train.replies[bad_size].fields[keys.NUM_EXAMPLES] = -5
    train.replies[nan].arrays[keys.WEIGHTS_PREFIX + "head.weight"][0, 0] = np.nan
    good = train.replies[nodes[3]]
    average = average_replies(train, global_weights)
    assert sorted(train.failures) == nodes[:3] and list(train.replies) == [nodes[3]]
    assert average is not None
    np.testing.assert_array_equal(
        average["head.weight"], good.arrays[keys.WEIGHTS_PREFIX + "head.weight"]
    )


def test_weighted_average_refuses_what_it_cannot_average() -> None:
    state = {"w": np.ones(2, np.float32)}
    with pytest.raises(ValueError, match="one weight per state"):
        weighted_average([state], [1.0, 2.0])
    with pytest.raises(ValueError, match="not all zero"):
        weighted_average([state], [0.0])
    with pytest.raises(ValueError, match="differ"):
        weighted_average([state, {"w": np.ones(3, np.float32)}], [1.0, 1.0])
    counts = weighted_average([{"n": np.array(2)}, {"n": np.array(5)}], [1.0, 1.0])["n"]
    assert counts.dtype == np.array(2).dtype and counts == 4  # integer buffers stay integers


@pytest.mark.parametrize("method", ["fedavg", "fedprox"])
def test_simulate_runs_fedavg_and_fedprox_in_python(tmp_path: Path, method: str) -> None:
    recorder = simulate(small_config(tmp_path, method=method, **{"num-rounds": 3}), 4)
    rows = recorder.rows
    assert [r.method for r in rows] == [method] * 3 and all(r.status == "ok" for r in rows)
    assert rows[-1].student_accuracy > 0.5 and rows[-1].survivors == 4
    assert rows[-1].bytes_up > 0 and (recorder.path / "student.pt").is_file()


def test_the_flower_app_runs_the_library_fedavg(tmp_path: Path) -> None:
    """The ServerApp over an in-process Grid: the same library round, the same history."""
    config = {**FedConfig().to_dict(), **small_config(tmp_path / "app"), "node-wait": 5.0}
    grid = InProcessGrid(client_app, config, 3)
    server_app(grid, server_context(config))
    (folder,) = [p for p in (tmp_path / "app").iterdir() if p.is_dir()]
    flower = json.loads((folder / "history.json").read_text())
    library = simulate(small_config(tmp_path / "lib"), 3).rows
    # Node ids differ between the engines; partitions, seeds and weights do not.
    assert [r["student_accuracy"] for r in flower] == [r.student_accuracy for r in library]
