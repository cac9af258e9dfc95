"""FedAvg and FedProx baselines: Flower's own strategies, on the same clients, data and student
as FedKD."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx

from clients import codec
from fedkd.data import DataSplit
from fedkd.distill import evaluate
from fedkd.fl import keys
from fedkd.fl.config import FedConfig
from fedkd.fl.history import RoundRecord, RunRecorder
from fedkd.fl.rounds import FIRST_ROUND_TIMEOUT
from fedkd.fl.server_work import new_student
from server.grid_transport import content_bytes

log = logging.getLogger("fedkd.server")


class RecordingFedAvg(FedAvg):
    """Flower's FedAvg, plus a per-round row in our history (one hook overridden)."""

    method = "fedavg"  # the history's method column and the clients' phase

    def __init__(self, recorder: RunRecorder, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.recorder = recorder
        self.pending: dict[int, RoundRecord] = {}
        self.round_start = time.perf_counter()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.round_start = time.perf_counter()
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.pending[server_round] = RoundRecord(
            round=server_round,
            method=self.method,
            sampled=len(messages),
            bytes_down=sum(content_bytes(m.content) for m in messages),
        )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        record = self.pending[server_round]
        good = [r for r in replies if not r.has_error()]
        record.survivors = len(good)
        # A node's refusal (its ledger's, say) is a dropout with its reason; an error reply
        # carries no partition id, so the node id goes in the reason (-1: partition unknown).
        failed = sorted((r.metadata.src_node_id, r.error.reason) for r in replies if r.has_error())
        record.dropped = [-1] * len(failed)
        record.dropped_reasons = [f"train: node {node}: {reason}" for node, reason in failed]
        record.bytes_up = sum(content_bytes(r.content) for r in good)
        accuracies = [
            float(r.content.metric_records[codec.METRICS][keys.CLIENT_ACCURACY])  # type: ignore[arg-type]
            for r in good
            if codec.METRICS in r.content.metric_records
            and keys.CLIENT_ACCURACY in r.content.metric_records[codec.METRICS]
        ]
        record.client_accuracy_mean = float(np.mean(accuracies)) if accuracies else math.nan
        if accuracies:  # the clients' spread (their own models, after local training)
            record.client_accuracy_min = float(np.min(accuracies))
            record.client_accuracy_median = float(np.median(accuracies))
            record.client_accuracy_max = float(np.max(accuracies))
        record.seconds_train = time.perf_counter() - self.round_start
        return super().aggregate_train(server_round, replies)


class RecordingFedProx(RecordingFedAvg, FedProx):
    """Flower's FedProx (FedAvg that sends ``proximal-mu`` in every train config), recorded
    the same way; the clients add the proximal term (``fedkd.fl.fedprox``)."""

    method = "fedprox"


def run_fedavg(grid: Grid, config: FedConfig, split: DataSplit, recorder: RunRecorder) -> None:
    """FedAvg over the same clients, data and student architecture as FedKD."""
    _run_strategy(grid, config, split, recorder, RecordingFedAvg(recorder, **_sampling(config)))


def run_fedprox(grid: Grid, config: FedConfig, split: DataSplit, recorder: RunRecorder) -> None:
    """FedProx (``proximal-mu``) over the same clients, data and student as FedAvg."""
    strategy = RecordingFedProx(recorder, proximal_mu=config.local.proximal_mu, **_sampling(config))
    _run_strategy(grid, config, split, recorder, strategy)


def _sampling(config: FedConfig) -> dict[str, object]:
    """Flower's sampling arguments from our config (no federated evaluation round)."""
    return {
        "fraction_train": config.fraction,
        "fraction_evaluate": 0.0,
        "min_train_nodes": config.min_clients,
        "min_available_nodes": config.min_clients,
    }


def _run_strategy(
    grid: Grid,
    config: FedConfig,
    split: DataSplit,
    recorder: RunRecorder,
    strategy: RecordingFedAvg,
) -> None:
    """Run a recording weights-averaging strategy; the server evaluates the global model."""
    student = new_student(config, split)
    method = strategy.method

    def evaluate_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None
        student.load_state_dict(arrays.to_torch_state_dict())
        report = evaluate(student, split.test)
        record = strategy.pending.pop(server_round, RoundRecord(server_round, method))
        record.student_accuracy = report.accuracy
        record.seconds = time.perf_counter() - strategy.round_start
        recorder.add(record)
        recorder.checkpoint(student)
        log.info("[%s] round %d: student %.4f", method, server_round, report.accuracy)
        return MetricRecord({"accuracy": report.accuracy})

    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(student.state_dict()),
        num_rounds=config.num_rounds,
        timeout=config.stage_timeout or FIRST_ROUND_TIMEOUT,  # Flower's strategy: one fixed
        train_config=ConfigRecord({keys.PHASE: method}),
        evaluate_fn=evaluate_round,
    )
