"""Node state that spills to disk, and the engine worker's loop (no Ray needed)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkd.engines.node_store import SpillingStores
from fedkd.engines.worker import ClientWorker
from fedkd.fl import keys
from fedkd.fl.experiment import FIRST_NODE_ID
from fedkd.transport import Envelope, Refusal

OPERATION = st.tuples(
    st.sampled_from(["put", "get", "delete"]),
    st.integers(0, 5),  # node
    st.sampled_from(["a", "b"]),  # key
    st.integers(0, 400),  # array length of a put
)


@settings(max_examples=60, deadline=None)
@given(operations=st.lists(OPERATION, max_size=60), budget=st.integers(0, 4000))
def test_spilling_stores_behave_like_dicts(
    tmp_path_factory: object, operations: list[tuple[str, int, str, int]], budget: int
) -> None:
    """Whatever spills when, every node reads back what it last wrote, and a node whose
    last envelope was deleted has no state at all (in memory or on disk)."""
    folder = Path(tmp_path_factory.mktemp("spill"))  # type: ignore[attr-defined]
    stores, model = SpillingStores(folder, budget), {}
    for step, (op, node, key, length) in enumerate(operations):
        view = stores.store(node)
        if op == "put":
            value = Envelope("state", {"step": step}, {"x": np.full(length, step, np.int64)})
            view.put(key, value)
            model[(node, key)] = step
        elif op == "delete":
            view.delete(key)
            model.pop((node, key), None)
        else:
            got = view.get(key)
            assert (got is None) == ((node, key) not in model)
            if got is not None:
                assert got.fields["step"] == model[(node, key)]
                assert np.all(got.arrays["x"] == model[(node, key)])
        stores.settle()
        assert stores.memory_bytes <= max(budget, 0) or stores.nodes_in_memory() == 0
    with_state = {node for node, _ in model}
    assert stores.nodes_in_memory() + stores.nodes_on_disk() == len(with_state)
    stores.budget = 0
    stores.settle()  # everything to disk: a replacement worker over the folder reads it all
    successor = SpillingStores(folder, budget)
    for (node, key), step in model.items():
        got = successor.store(node).get(key)
        assert got is not None and got.fields["step"] == step


def test_a_spilled_node_is_read_back_by_a_replacement(tmp_path: Path) -> None:
    stores = SpillingStores(tmp_path, budget=0)  # everything spills at once
    stores.store(7).put("k", Envelope("s", arrays={"x": np.arange(10)}))
    stores.settle()
    assert stores.nodes_in_memory() == 0 and (tmp_path / "7.pkl").is_file()
    again = SpillingStores(tmp_path, budget=1 << 20).store(7).get("k")
    assert again is not None and np.array_equal(again.arrays["x"], np.arange(10))


RUN = {"min-clients": 2, "model": "mlp", "local-epochs": 1, "warmup-epochs": 0}


def _worker(tmp_path: Path, run_config: dict[str, object] = RUN) -> ClientWorker:
    return ClientWorker(run_config, 4, 0, None, tmp_path / "state", 1 << 20, tmp_path / "nodes")


def test_a_bad_or_crashing_node_is_an_answer_not_a_worker_crash(tmp_path: Path) -> None:
    worker = _worker(tmp_path, {**RUN, "fault-stage": "train", "fault-prob": 1.0})
    train = Envelope(keys.TRAIN, {keys.ROUND: 1, keys.PHASE: "local"})
    batch = [(FIRST_NODE_ID, Envelope("no-such-kind")), (FIRST_NODE_ID + 1, train)]
    answers = [a for group in worker.serve(batch, time.time() + 60) for a in group]
    assert [a.node for a in answers] == [FIRST_NODE_ID, FIRST_NODE_ID + 1]
    assert all(isinstance(a.reply, Refusal) for a in answers)
    assert "unknown message kind" in answers[0].reply.reason  # type: ignore[union-attr]
    assert "injected crash" in answers[1].reply.reason  # type: ignore[union-attr]
    assert worker.stats().nodes_with_state == 0  # nobody kept anything


def test_past_its_deadline_a_batch_is_dropped(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    train = Envelope(keys.TRAIN, {keys.ROUND: 1, keys.PHASE: "local"})
    assert list(worker.serve([(FIRST_NODE_ID, train)], time.time() - 1)) == []
    assert worker.nodes_served == 0


def test_a_client_that_raises_is_a_crashed_node(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def broken(*args: object) -> Envelope:
        raise MemoryError("the client ran out of memory")

    monkeypatch.setattr("fedkd.engines.worker.handle", broken)
    worker = _worker(tmp_path)
    answer = worker.answer(FIRST_NODE_ID, Envelope(keys.TRAIN))
    assert answer.reply == "crashed: MemoryError: the client ran out of memory"


def test_clients_train_where_they_are_told() -> None:
    import pytest

    from fedkd.fl.client_work import client_device
    from fedkd.fl.config import parse_run_config
    from fedkd.fl.preflight import preflight

    assert client_device(parse_run_config({})) == "cpu"  # the default: bit-equal everywhere
    auto = client_device(parse_run_config({"client-device": "auto"}))
    assert auto == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="client-device"):
        preflight({"client-device": "cuda", "client-dp-sgd": True, "client-dp-noise": 1.0}, 4)


def test_the_pool_is_one_actor_per_core_and_per_gpu_share() -> None:
    import pytest

    from fedkd.engines.ray_transport import RayResources, pool_size

    assert pool_size(RayResources(), {"CPU": 16.0}) == 16
    assert pool_size(RayResources(cpus=2.0), {"CPU": 16.0}) == 8
    assert pool_size(RayResources(gpus=0.25), {"CPU": 16.0, "GPU": 1.0}) == 4
    assert pool_size(RayResources(cpus=4.0), {"CPU": 2.0}) == 1  # at least one
    with pytest.raises(ValueError, match="no GPU"):
        pool_size(RayResources(gpus=0.5), {"CPU": 2.0})
    with pytest.raises(ValueError, match="invalid Ray engine resources"):
        RayResources(cpus=0.0)
