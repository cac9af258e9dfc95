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

from fedkd.attacks.federation import build_federation, observe_round
from fedkd.dp.accounting import PrivacyLedger
from fedkd.dp.dpsgd import epsilon_of_history, steps_per_epoch
from fedkd.fl import keys
from fedkd.fl.client import MemoryStore, dpsgd_history
from fedkd.fl.client_work import local_round, new_client_model
from fedkd.fl.config import FedConfig, parse_run_config
from fedkd.fl.contribution import (
    STATS,
    max_count,
    split_sum,
    stats_block,
    teacher_contribution,
)
from fedkd.fl.data import FederatedData, federated_data
from fedkd.fl.experiment import simulate
from fedkd.fl.history import RoundRecord
from fedkd.fl.privacy import client_release, dpsgd_noise, noise_plan, server_release
from fedkd.secagg.wire import AdvertiseRequest
from fedkd.transport import Envelope, ExchangeResult
from tests.relay import Relay


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


class LowNoiseServer(Relay):
    """A malicious server that tells every client the round needs no distributed noise."""

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


def _without_one_record(data: FederatedData, partition: int) -> FederatedData:
    """The neighbouring federation: one record less in ``partition``'s shard."""
    parts = list(data.parts)
    parts[partition] = parts[partition][1:]
    return dataclasses.replace(data, parts=tuple(parts))


@pytest.mark.parametrize("weighting", [(True, True), (True, False), (False, False)])
def test_a_dpsgd_release_depends_on_the_shard_only_through_the_model(
    weighting: tuple[bool, bool],
) -> None:
    """Record-level DP covers the DP-SGD model, so with the model fixed, the vector a client
    sends must be the same for neighbouring shards. Without DP-SGD it is not (the shard's label
    counts or size weigh the vector): that is the leak this test catches."""
    class_weighting, entropy_weighting = weighting
    teacher = {"class-weighting": class_weighting, "entropy-weighting": entropy_weighting}
    private = parse_run_config({**teacher, "client-dp-sgd": True, "client-dp-epsilon": 8.0})
    plain = parse_run_config(teacher)
    data = federated_data(private, 3)
    neighbour = _without_one_record(data, 0)
    model = new_client_model(private, data, 0)

    def sent(config: FedConfig, federation: FederatedData) -> np.ndarray:
        return teacher_contribution(config, federation, 0, model)[0]

    np.testing.assert_array_equal(sent(private, data), sent(private, neighbour))
    assert not np.array_equal(sent(plain, data), sent(plain, neighbour))


def test_dpsgd_with_fedprox_is_refused_not_run_without_its_proximal_term() -> None:
    with pytest.raises(ValueError, match="client-dp-sgd.*proximal"):
        parse_run_config({"method": "fedprox", "client-dp-sgd": True, "client-dp-epsilon": 8.0})


@pytest.mark.slow
def test_a_dpsgd_client_reports_no_loss_and_no_shard_size() -> None:
    config = parse_run_config(
        {"client-dp-sgd": True, "client-dp-epsilon": 8.0, "local-epochs": 1, "warmup-epochs": 0}
    )
    data = federated_data(config, 3)
    model = new_client_model(config, data, 0)
    result = local_round(config, data, 0, model, server_round=1)
    assert result.num_examples == 1 and math.isnan(result.train_loss)  # FedAvg's metrics
    stats = dict(zip(STATS, result.vector[-len(STATS) :], strict=True))  # FedKD's summed stats
    assert stats["train_loss_sum"] == 0 and stats["train_loss_count"] == 0
    _, means = split_sum(np.concatenate([np.zeros(4), stats_block(0.5, math.nan, 0.0)]), 1)
    assert math.isnan(means.train_loss_mean) and means.accuracy_mean == 0.5


@pytest.mark.slow
def test_the_server_cannot_read_the_pools_labels_from_a_dpsgd_round(tmp_path: Path) -> None:
    """The attack: a server decodes the weights block of a secure DP-SGD round's sum. With the
    shard's label counts as weights it held the private pool's exact label histogram; now it
    holds the DP models' predicted labels on the public set, P per client."""
    run = small(
        tmp_path,
        "labels",
        **{
            "client-dp-sgd": True,
            "client-dp-epsilon": 8.0,
            "entropy-weighting": False,
            "num-rounds": 1,
            "warmup-epochs": 0,
        },
    )
    af = build_federation(run, 3)
    view = observe_round(af, 1, [0, 1, 2])
    assert view.survivors == 3 and view.total is not None
    split = af.data.split
    public, classes = len(split.public), split.num_classes
    counts = view.total[public * classes :] * max_count(af.config, af.data)  # (C,)
    # whole predicted labels, to the quantiser's step (16 bits over [0, 1], times P)
    np.testing.assert_allclose(counts, np.rint(counts), atol=0.05)
    assert np.rint(counts).sum() == 3 * public
    pool = np.bincount(split.private.y, minlength=classes)
    assert not np.allclose(counts * len(split.private) / (3 * public), pool, rtol=0.01)


@pytest.mark.slow
def test_dpsgd_clients_spend_their_own_epsilon(tmp_path: Path) -> None:
    run = small(tmp_path, "dpsgd", **{"client-dp-sgd": True, "client-dp-epsilon": 4.0})
    stores: dict[int, MemoryStore] = {}
    recorder = simulate(run, num_clients=3, stores=stores)
    rows = _history(recorder.path)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(r["client_train_loss"] is None for r in rows)  # NaN: no client reported one
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
