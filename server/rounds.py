"""FedKD rounds (secure or plaintext) and the local-only baseline, over Flower messages."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid

from fedkd.data import DataSplit
from fedkd.fl import keys
from fedkd.fl.config import FedConfig
from fedkd.fl.history import RoundRecord, RunRecorder
from fedkd.fl.server_work import (
    distill_round,
    new_student,
    sample_clients,
    teacher_from_aggregate,
    vector_length,
)
from fedkd.secagg import ServerState
from fedkd.secagg.wire import AdvertiseRequest
from server.messaging import Exchange, exchange
from server.secure_sum import secagg_config, secure_sum

log = logging.getLogger("fedkd.server")


def _partition_ids(ex: Exchange) -> dict[int, int]:
    return {
        node: int(msg.content[keys.METRICS][keys.PARTITION_ID])
        for node, msg in ex.replies.items()
        if keys.METRICS in msg.content
    }


def _client_mean(ex: Exchange, key: str) -> float:
    """Mean of one client metric over the replies that carry it (NaN when none do)."""
    values = [
        float(msg.content[keys.METRICS][key])
        for msg in ex.replies.values()
        if keys.METRICS in msg.content and key in msg.content[keys.METRICS]
    ]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _plaintext_sum(ex: Exchange, length: int) -> tuple[np.ndarray | None, str]:
    """Sum the clients' contributions in the clear (secagg=false)."""
    total = np.zeros(length, dtype=np.float64)
    count = 0
    for node, msg in list(ex.replies.items()):
        try:
            vector = msg.content[keys.CONTRIBUTION].to_numpy_ndarrays()[0]
            if vector.shape != (length,) or not np.all(np.isfinite(vector)):
                raise ValueError(f"shape {vector.shape}, finite={np.all(np.isfinite(vector))}")
        except (KeyError, ValueError, IndexError) as problem:
            ex.failures[node] = f"malformed contribution: {problem}"
            del ex.replies[node]
            continue
        total += vector
        count += 1
    if count == 0:
        return None, "no usable contribution arrived"
    return total, ""


def run_fedkd(
    grid: Grid,
    config: FedConfig,
    split: DataSplit,
    public_digest: bytes,
    recorder: RunRecorder,
    node_ids: list[int],
    run_id: int,
) -> None:
    """FedKD: clients' public-set logits -> (secure) sum -> teacher -> distilled student."""
    student = new_student(config, split)
    rng = np.random.default_rng(config.seed)
    teacher_logits: np.ndarray | None = None
    length = vector_length(split)
    for server_round in range(1, config.num_rounds + 1):
        start = time.perf_counter()
        sampled = sample_clients(
            node_ids, fraction=config.fraction, minimum=config.min_clients, rng=rng
        )
        record = RoundRecord(round=server_round, method="fedkd", sampled=len(sampled))
        round_config = ConfigRecord({keys.ROUND: server_round, keys.PHASE: "fedkd"})
        state: ServerState | None = None
        if config.secagg:
            state = ServerState(
                secagg_config(
                    config,
                    run_id=run_id,
                    server_round=server_round,
                    participants=sampled,
                    vector_length=length,
                    public_digest=public_digest,
                )
            )
            round_config[keys.SECAGG_CONFIG] = AdvertiseRequest(state.config).to_bytes()
        content = RecordDict({keys.CONFIG: round_config})
        if config.mode == "feddf":
            content[keys.ARRAYS] = ArrayRecord(student.state_dict())
        elif teacher_logits is not None:
            content[keys.TEACHER] = ArrayRecord([teacher_logits.astype(np.float32)])
        train = exchange(
            grid,
            sampled,
            keys.TRAIN,
            lambda node, content=content: content,  # the same message for every client
            timeout=config.stage_timeout,
            group_id=f"round-{server_round}",
        )
        record.seconds_train = train.seconds
        record.client_accuracy_mean = _client_mean(train, keys.CLIENT_ACCURACY)
        pids = _partition_ids(train)
        record.clipped_fraction = _client_mean(train, keys.CLIPPED)
        if record.clipped_fraction > 0.01:
            log.warning(
                "round %d: %.1f%% of public-set logits were clipped at +-%.0f*T; raise "
                "'secagg-clip'",
                server_round,
                100 * record.clipped_fraction,
                config.secagg_clip,
            )
        if state is not None:
            secure = secure_sum(grid, state, train, config=config, server_round=server_round)
            exchanges, reason = secure.exchanges, secure.reason
            summed = None if secure.result is None else secure.result.total
            dropped_nodes = set(secure.failed)
            record.survivors = 0 if secure.result is None else len(secure.result.survivors)
            record.seconds_secagg = sum(ex.seconds for ex in exchanges[1:])
        else:
            exchanges = [train]
            summed, reason = _plaintext_sum(train, length)
            dropped_nodes = set(train.failures)
            record.survivors = len(train.replies)
        record.dropped = sorted(pids.get(node, -1) for node in dropped_nodes)
        record.bytes_up = sum(ex.bytes_up for ex in exchanges)
        record.bytes_down = sum(ex.bytes_down for ex in exchanges)
        if summed is None:
            record.status, record.reason = "skipped", reason
            record.seconds = time.perf_counter() - start
            recorder.add(record)
            log.warning("[fedkd] round %d skipped: %s", server_round, reason)
            continue
        teacher_logits = teacher_from_aggregate(summed, config, split)
        recorder.save_teacher(server_round, teacher_logits)
        outcome = distill_round(student, teacher_logits, config, split, server_round=server_round)
        record.teacher_accuracy = outcome.teacher_accuracy
        record.student_accuracy = outcome.student_accuracy
        record.distill_loss = outcome.distill_loss
        record.seconds_distill = outcome.seconds
        record.seconds = time.perf_counter() - start
        recorder.add(record)
        recorder.checkpoint(student)
        log.info(
            "[fedkd] round %d/%d: student %.4f | teacher %.4f | clients %.4f | %d/%d survived "
            "| %.1f s (distill on %s)",
            server_round,
            config.num_rounds,
            record.student_accuracy,
            record.teacher_accuracy,
            record.client_accuracy_mean,
            record.survivors,
            record.sampled,
            record.seconds,
            outcome.device,
        )


def run_local(grid: Grid, config: FedConfig, recorder: RunRecorder, node_ids: list[int]) -> None:
    """Local-only baseline: every client trains alone; we record their mean test accuracy."""
    content = RecordDict({keys.CONFIG: ConfigRecord({keys.PHASE: "local"})})
    for server_round in range(1, config.num_rounds + 1):
        start = time.perf_counter()
        content[keys.CONFIG][keys.ROUND] = server_round
        train = exchange(
            grid,
            node_ids,
            keys.TRAIN,
            lambda node: content,
            timeout=config.stage_timeout,
            group_id=f"round-{server_round}",
        )
        record = RoundRecord(
            round=server_round,
            method="local",
            client_accuracy_mean=_client_mean(train, keys.CLIENT_ACCURACY),
            sampled=len(node_ids),
            survivors=len(train.replies),
            bytes_up=train.bytes_up,
            bytes_down=train.bytes_down,
            seconds=time.perf_counter() - start,
            seconds_train=train.seconds,
        )
        recorder.add(record)
        log.info("[local] round %d: clients %.4f", server_round, record.client_accuracy_mean)
