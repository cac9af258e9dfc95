"""Client-level DP and DP-SGD through the real federated round (in process, digits)."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from fedkd.dp.accounting import PrivacyLedger
from fedkd.dp.dpsgd import epsilon_of_history, steps_per_epoch
from fedkd.fl import keys
from fedkd.fl.client import MemoryStore, dpsgd_history
from fedkd.fl.config import FedConfig, parse_run_config
from fedkd.fl.contribution import STATS
from fedkd.fl.data import federated_data
from fedkd.fl.experiment import simulate
from fedkd.fl.history import RoundRecord
from fedkd.fl.privacy import client_release, dpsgd_noise, noise_plan, server_release
from fedkd.secagg.wire import AdvertiseRequest
from fedkd.transport import Envelope, ExchangeResult, Transport


def small(tmp_path: Path, name: str, **overrides: object) -> dict[str, object]:
    config = {
        **FedConfig().to_dict(),
        "num-rounds": 2,
        "local-epochs": 1,
        "warmup-epochs": 1,
        "distill-epochs": 1,
        "out-dir": str(tmp_path),
        "run-name": name,
        "node-wait": 5.0,
    }
    config.update(overrides)
    return config


def _history(recorder_path: Path) -> list[dict[str, object]]:
    return json.loads((recorder_path / "history.json").read_text())


def test_local_noise_and_clip_on_a_clients_vector() -> None:
    config = parse_run_config({"dp": "local", "dp-noise-multiplier": 2.0, "dp-clip": 0.5})
    vector = np.full(50_000, 0.01)  # norm 2.2 > clip: scaled down to 0.5
    released = client_release(config, vector, num_clients=10, seed=3)
    plan = noise_plan(config, 10)
    assert plan is not None and plan.std == pytest.approx(1.0)
    noise = released - client_release(
        parse_run_config({"dp": "central", "dp-noise-multiplier": 2.0, "dp-clip": 0.5}),
        vector,
        num_clients=10,
    )
    assert abs(float(noise.var()) / plan.std**2 - 1) < 0.03
    flag = len(vector) - len(STATS) + STATS.index("dp_clipped_sum")
    assert released[flag] - noise[flag] == pytest.approx(0.1)  # it was cut: the flag is set
    assert np.linalg.norm(released - noise) == pytest.approx(0.5)  # flag included in the clip


def test_central_noise_and_the_epsilon_recorded(tmp_path: Path) -> None:
    config = parse_run_config({"dp": "central", "dp-noise-multiplier": 1.5, "dp-clip": 0.2})
    total = np.zeros(40_000)
    record = RoundRecord(round=2, method="fedkd", sampled=5, survivors=5)
    earlier = [RoundRecord(round=1, method="fedkd", dp_noise_multiplier=1.5, dp_sampling=0.5)]
    released = server_release(config, total, record, earlier, num_clients=10, seed=5)
    teacher = released[: -len(STATS)]
    assert abs(float(teacher.var()) / 0.3**2 - 1) < 0.03  # sigma = z * clip
    assert record.dp_noise_multiplier == 1.5 and record.dp_sampling == 0.5
    expected = PrivacyLedger(config.dp.delta, [(1.5, 0.5), (1.5, 0.5)]).report()
    assert record.dp_epsilon == pytest.approx(expected.epsilon)
    assert record.dp_epsilon_rdp == pytest.approx(expected.epsilon_rdp)


class LowNoiseServer(Transport):
    """A malicious server that tells every client the round needs no distributed noise."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def nodes(self) -> list[int]:
        return self.inner.nodes()

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        for request in requests.values():
            payload = request.fields.get(keys.SECAGG_CONFIG)
            if request.kind == keys.TRAIN and isinstance(payload, bytes):
                honest = AdvertiseRequest.from_bytes(payload).config
                lie = dataclasses.replace(honest, noise_variance=honest.noise_variance / 100)
                request.fields[keys.SECAGG_CONFIG] = AdvertiseRequest(lie).to_bytes()
        return self.inner.exchange(requests, timeout=timeout, group=group)


def test_clients_refuse_a_server_that_asks_for_less_distributed_noise(tmp_path: Path) -> None:
    run = small(tmp_path, "lie", **{"dp": "distributed", "dp-epsilon": 4.0, "num-rounds": 1})
    recorder = simulate(run, num_clients=4, wrap=LowNoiseServer)
    [row] = _history(recorder.path)
    assert row["status"] == "skipped" and row["survivors"] == 0


@pytest.mark.slow
def test_distributed_dp_round_end_to_end(tmp_path: Path) -> None:
    run = small(tmp_path, "dist", **{"dp": "distributed", "dp-epsilon": 4.0, "dp-clip": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recorder = simulate(run, num_clients=4)
    rows = _history(recorder.path)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    eps = [float(r["dp_epsilon"]) for r in rows]  # type: ignore[arg-type]
    assert 0 < eps[0] < eps[1] <= 4.0  # the realised noise (4 of threshold 3) spends less
    z = float(rows[0]["dp_noise_multiplier"])  # type: ignore[arg-type]
    plan = noise_plan(parse_run_config(run), 4)
    assert plan is not None and z == pytest.approx(
        plan.noise_multiplier * math.sqrt(4 / 3), rel=1e-2
    )
    summary = json.loads((recorder.path / "summary.json").read_text())
    assert summary["dp_epsilon"] == pytest.approx(eps[1]) and summary["dp_delta"] == 1e-5


@pytest.mark.slow
def test_dpsgd_clients_spend_their_own_epsilon(tmp_path: Path) -> None:
    run = small(tmp_path, "dpsgd", **{"client-dp-sgd": True, "client-dp-epsilon": 4.0})
    stores: dict[int, MemoryStore] = {}
    recorder = simulate(run, num_clients=3, stores=stores)
    assert [r["status"] for r in _history(recorder.path)] == ["ok", "ok"]
    config = parse_run_config(run)
    for partition, store in sorted(stores.items()):
        history = dpsgd_history(store)  # what the node's accountant holds after the run
        shard = len(federated_data(config, 3).client_train(partition))
        steps = steps_per_epoch(shard, config.local.batch_size)
        assert history == [
            (pytest.approx(dpsgd_noise(config, shard)), pytest.approx(1 / steps), 3 * steps)
        ]
        assert 3.95 <= epsilon_of_history(history, 1e-5) <= 4.0  # every client, its own shard


def test_dpsgd_history_composes_across_rounds() -> None:
    import torch

    from fedkd.dp.dpsgd import dp_train
    from fedkd.models import build_model

    torch.manual_seed(0)
    model = build_model("cnn_small", input_shape=(1, 8, 8), num_classes=10)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 64)
    first = dp_train(
        model,
        x,
        y,
        epochs=1,
        batch_size=16,
        lr=1e-3,
        noise_multiplier=1.1,
        max_grad_norm=1.0,
        delta=1e-5,
    )
    second = dp_train(
        model,
        x,
        y,
        epochs=1,
        batch_size=16,
        lr=1e-3,
        noise_multiplier=1.1,
        max_grad_norm=1.0,
        delta=1e-5,
        history=first.history,
    )
    assert first.steps == 4 and second.history == [(1.1, 0.25, 8)]
    assert second.epsilon > first.epsilon
    assert second.epsilon == pytest.approx(epsilon_of_history([(1.1, 0.25, 8)], 1e-5))
    assert not model._forward_hooks  # the plain module again
