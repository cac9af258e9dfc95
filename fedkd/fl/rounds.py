"""The federated rounds, over any :class:`~fedkd.transport.Transport`.

A FedKD round reads like the protocol (FedDF as published, ``method = feddf``, is the same
round with the clients' weights summed beside their logits: ``fedkd.fl.feddf``)::

    sample clients
    train            (+ secure-aggregation stage 1: advertise keys, on the same message)
    aggregate        secure sum (share keys, masked input, consistency, unmask), or plaintext
    teacher          the summed contributions -> ensemble-teacher logits on the public set
    distill          the student on the public set against the teacher
    record           one RoundRecord, history, teacher and checkpoint written at once

The local-only and centralized baselines share the data split, student and results layout;
FedAvg and FedProx are in ``fedkd.fl.fedavg``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedkd.data import DataSplit
from fedkd.distill import evaluate, train_supervised
from fedkd.fl import keys
from fedkd.fl.client import weights_arrays
from fedkd.fl.cohort import round_neighbours, threshold_for
from fedkd.fl.config import FedConfig
from fedkd.fl.contribution import split_sum, value_bound, vector_length
from fedkd.fl.feddf import contribution_length, start_from_average
from fedkd.fl.federation import Federation
from fedkd.fl.history import RoundRecord, RunRecorder
from fedkd.fl.privacy import secagg_with_dp, server_release
from fedkd.fl.resume import (
    RoundOutcome,
    commit_round,
    distill_config,
    distill_into,
    log_membership,
    log_round,
    note_faults,
    resume_point,
    save_aggregated,
)
from fedkd.fl.server_work import (
    new_student,
    sample_clients,
    teacher_from_aggregate,
)
from fedkd.models import FeatureModel
from fedkd.secagg import SecAggConfig, ServerState
from fedkd.secagg.identity import NO_ROSTER
from fedkd.secagg.protocol import secure_sum
from fedkd.secagg.quantize import modulus_bits_for
from fedkd.secagg.server import server_advertise_request
from fedkd.transport import NO_REPLY, Envelope, ExchangeResult, broadcast

log = logging.getLogger("fedkd.server")


def secagg_round_config(
    fed: Federation, server_round: int, participants: list[int], length: int | None = None
) -> SecAggConfig:
    """The round's public secure-aggregation parameters (identical for every participant).

    Neighbours: ``secagg-neighbours``, or (0, auto) full SecAgg for small cohorts and SecAgg+
    with O(log n) neighbours from :data:`~fedkd.fl.cohort.SECAGG_PLUS_FROM` clients. The
    threshold is the configured share of each client's share holders, and never less than a
    strict majority of them (below that a server that forges dropouts learns inputs).
    ``length`` is the contribution's (default: FedKD's, :func:`vector_length`).
    """
    settings, n = fed.config.secagg, len(participants)
    neighbours = round_neighbours(n, settings.neighbours, settings.threshold)
    plain = SecAggConfig(
        run_id=fed.run_id,
        round=server_round,
        participants=tuple(participants),
        threshold=threshold_for(neighbours, settings.threshold),
        neighbours=neighbours,
        clip=value_bound(fed.config),
        vector_length=vector_length(fed.split) if length is None else length,
        bits=settings.bits,
        modulus_bits=modulus_bits_for(n, settings.bits),
        public_set_digest=fed.public_digest,
        graph_seed=fed.config.seed,
        roster_digest=NO_ROSTER if fed.roster is None else fed.roster.digest(),
    )
    # Client-level DP: distributed noise shares and their modulus headroom, or the local range.
    return secagg_with_dp(fed.config, plain, num_clients=len(fed.transport.nodes()))


# ------------------------------------------------------------------------------ train
def train_phase(
    fed: Federation, request: Envelope, nodes: list[int], server_round: int
) -> ExchangeResult:
    """Send the train request to ``nodes``; learn their partition ids from the replies.

    The request carries its deadline (wall-clock seconds): a client that receives it late --
    queued behind a slow one -- drops the work instead of making the next round wait.
    """
    request.fields[keys.DEADLINE] = time.time() + fed.timeout()
    result = fed.exchange(broadcast(nodes, request), server_round)
    fed.last_train_seconds = result.seconds
    for node, reply in result.replies.items():
        pid = reply.fields.get(keys.PARTITION_ID)
        if isinstance(pid, int) and not isinstance(pid, bool):
            fed.partitions[node] = pid
    return result


def fedkd_request(
    fed: Federation,
    server_round: int,
    student: FeatureModel,
    teacher: np.ndarray | None,
    state: ServerState | None,
) -> Envelope:
    """The round's train message: the last teacher, and in FedDF the student's weights too
    (FedDF as published, ``method = feddf``: the weights only)."""
    published = fed.config.method == "feddf"
    phase = "feddf" if published else "fedkd"
    request = Envelope(keys.TRAIN, {keys.ROUND: server_round, keys.PHASE: phase})
    if state is not None:
        request.fields[keys.SECAGG_CONFIG] = server_advertise_request(state).to_bytes()
    if fed.config.mode == "feddf" or published:
        request.arrays.update(weights_arrays(student))
    if teacher is not None and not published:
        request.arrays[keys.TEACHER] = teacher.astype(np.float32)
    return request


# ------------------------------------------------------------------------------ aggregate
@dataclass
class AggregateOutcome:
    """The summed contributions (or why there are none) and what getting them cost."""

    total: np.ndarray | None
    reason: str
    survivors: int
    failed: dict[int, str]
    exchanges: list[ExchangeResult]
    seconds_secagg: float = 0.0  # the exchanges after train
    seconds_secagg_server: float = 0.0  # the server's own secure-aggregation compute


def plaintext_sum(
    fed: Federation, train: ExchangeResult, length: int | None = None
) -> AggregateOutcome:
    """Sum the contributions in the clear (secagg=false); malformed ones drop their sender.
    ``length`` is the contributions' (default: FedKD's, :func:`vector_length`)."""
    length = vector_length(fed.split) if length is None else length
    total, count = np.zeros(length, dtype=np.float64), 0
    for node, reply in list(train.replies.items()):
        vector = reply.arrays.get(keys.CONTRIBUTION)
        if vector is None or vector.shape != (length,) or not np.all(np.isfinite(vector)):
            shape = None if vector is None else vector.shape
            train.drop(node, f"malformed contribution (shape {shape}, expected ({length},))")
            continue
        total += vector
        count += 1
    reason = "" if count else "no usable contribution arrived"
    failed = {node: f"train: {why}" for node, why in train.failures.items()}
    return AggregateOutcome(total if count else None, reason, count, failed, [train])


def secure_aggregate(
    fed: Federation, state: ServerState, train: ExchangeResult, server_round: int
) -> AggregateOutcome:
    """The stages after advertise (with a roster: consistency too); stage 1 rode on train."""
    outcome = secure_sum(
        fed.transport,
        state,
        timeout=fed.timeout(secagg=True),
        advertised=train,
        group=f"round-{server_round}",
    )
    later = [x for kind, x in outcome.exchanges.items() if x is not train]
    return AggregateOutcome(
        None if outcome.result is None else outcome.result.total,
        outcome.reason,
        len(outcome.survivors),
        outcome.failed,
        [train, *later],
        sum(x.seconds for x in later),
        sum(outcome.server_seconds.values()),
    )


def sit_out_silent(fed: Federation, nodes: Sequence[int], server_round: int) -> Sequence[int]:
    """The nodes a round samples from: those that answered last round.

    A node silent past the deadline last round sits this one out: a killed SuperNode stays
    listed by the SuperLink until its heartbeats expire (up to a minute), and sampled it would
    raise the round's threshold while never answering; a slow one gets time to drain its queue
    instead of starting every round's work late. When too few would remain, all are sampled;
    with client-level DP nobody sits out (its accounting takes the sample as the configured
    random one).
    """
    if not fed.silent:  # the usual case; and never a pass over a whole population
        return nodes
    ready = [node for node in nodes if node not in fed.silent]
    if len(ready) < fed.config.min_clients or fed.config.dp.enabled:
        return nodes
    for node in sorted(set(nodes) & fed.silent):
        partition = fed.partition_of(node)
        log.info(
            "round %d: node %s (partition %s) was silent last round: sitting this one out",
            server_round,
            node,
            "?" if partition < 0 else partition,
        )
    return ready


# ------------------------------------------------------------------------------ the round
def fedkd_round(
    fed: Federation, student: FeatureModel, teacher: np.ndarray | None, server_round: int
) -> RoundOutcome:
    """One FedKD round: its record, the new teacher and the faults (who dropped where)."""
    start, config = time.perf_counter(), fed.config
    # --- sample -----------------------------------------------------------------------
    rng = np.random.default_rng([config.seed, server_round])
    nodes = fed.transport.nodes()
    log_membership(fed, nodes, server_round)
    sampled = sample_clients(
        sit_out_silent(fed, nodes, server_round),
        fraction=config.fraction,
        minimum=config.min_clients,
        rng=rng,
    )
    # --- train (+ advertise keys) -------------------------------------------------------
    length = contribution_length(config, fed.split, student)
    state = (
        ServerState(secagg_round_config(fed, server_round, sampled, length), roster=fed.roster)
        if config.secagg.enabled
        else None
    )
    train = train_phase(
        fed, fedkd_request(fed, server_round, student, teacher, state), sampled, server_round
    )
    # --- aggregate ------------------------------------------------------------------------
    if state is None:
        agg = plaintext_sum(fed, train, length)
    else:
        agg = secure_aggregate(fed, state, train, server_round)
    record = RoundRecord(
        round=server_round,
        method=config.method,
        bytes_up=sum(x.bytes_up for x in agg.exchanges),
        bytes_down=sum(x.bytes_down for x in agg.exchanges),
        seconds_train=train.seconds,
        seconds_secagg=agg.seconds_secagg,
        seconds_secagg_server=agg.seconds_secagg_server,
        sampled=len(sampled),
        survivors=agg.survivors,
    )
    outcome = RoundOutcome(record, None, note_faults(fed, record, agg.failed))
    fed.silent = {node for node, why in agg.failed.items() if NO_REPLY in why}
    if agg.total is None:
        record.status, record.reason = "skipped", agg.reason
        record.seconds = time.perf_counter() - start
        return outcome
    secagg = None if state is None else state.config
    outcome.teacher = teach(fed, student, agg.total, record, secagg, start)
    record.seconds = time.perf_counter() - start
    return outcome


def teach(
    fed: Federation,
    student: FeatureModel,
    total: np.ndarray,
    record: RoundRecord,
    secagg: SecAggConfig | None,
    start: float,
) -> np.ndarray:
    """The summed contributions -> the clients' statistics, the teacher, the distilled student
    (FedDF as published: distilled from the clients' averaged weights). Returns the teacher,
    saved (with the record so far) before distillation: a server that dies while distilling
    finishes the round on resume without asking a client again."""
    config = fed.config
    if config.dp.enabled:  # central noise, realised noise and epsilon spent (fedkd.fl.privacy)
        total = server_release(
            config,
            total,
            record,
            fed.recorder.rows,
            num_clients=len(fed.transport.nodes()),
            secagg=secagg,
        )
    summed, clients = split_sum(total, record.survivors)
    record.client_accuracy_mean = clients.accuracy_mean
    record.client_accuracy_min = clients.accuracy_min
    record.client_accuracy_median = clients.accuracy_median
    record.client_accuracy_max = clients.accuracy_max
    record.client_train_loss = clients.train_loss_mean
    record.clipped_fraction = clients.clipped_fraction
    _warn_if_clipped(record, config)
    if config.method == "feddf":
        summed = start_from_average(student, summed, config, fed.split, record.round)
    new_teacher = teacher_from_aggregate(summed, distill_config(config), fed.split)
    record.seconds = time.perf_counter() - start
    save_aggregated(fed, record, new_teacher, student)
    distill_into(fed, student, new_teacher, record)
    return new_teacher


def _warn_if_clipped(record: RoundRecord, config: FedConfig) -> None:
    if record.clipped_fraction > 0.01:
        log.warning(
            "round %d: %.1f%% of public-set logits were clipped at +-%g*T; raise 'secagg-clip'",
            record.round,
            100 * record.clipped_fraction,
            config.secagg.clip,
        )


def run_fedkd(fed: Federation) -> None:
    """FedKD: clients' public-set logits -> (secure) sum -> teacher -> distilled student."""
    first, student = resume_point(fed)
    teacher = fed.recorder.last_teacher()
    for server_round in range(first, fed.config.num_rounds + 1):
        if fed.journal is not None:
            fed.journal.round = server_round
        outcome = fedkd_round(fed, student, teacher, server_round)
        teacher = teacher if outcome.teacher is None else outcome.teacher
        commit_round(fed, outcome, student)


def plaintext_record(
    fed: Federation, server_round: int, sampled: int, train: ExchangeResult
) -> tuple[RoundRecord, list[dict[str, object]]]:
    """The record of a round whose clients answer in the clear (FedAvg, FedProx, local-only)
    from its train exchange: its figures, its dropouts and the clients' accuracy mean and
    spread (the server sees each one here); and its faults, for the journal."""
    record = RoundRecord(
        round=server_round,
        method=fed.config.method,
        sampled=sampled,
        survivors=len(train.replies),
        bytes_up=train.bytes_up,
        bytes_down=train.bytes_down,
        seconds_train=train.seconds,
    )
    faults = note_faults(fed, record, {n: f"train: {why}" for n, why in train.failures.items()})
    values = [
        float(v)
        for r in train.replies.values()
        if isinstance(v := r.fields.get(keys.CLIENT_ACCURACY), float | int) and math.isfinite(v)
    ]
    if values:
        record.client_accuracy_mean = float(np.mean(values))
        record.client_accuracy_min = min(values)
        record.client_accuracy_median = float(np.median(values))
        record.client_accuracy_max = max(values)
    return record, faults


def run_local(fed: Federation) -> None:
    """Local-only baseline: every client trains alone; we record their mean test accuracy."""
    nodes = list(fed.transport.nodes())  # every client, every round: local-only's definition
    for server_round in range(len(fed.recorder.rows) + 1, fed.config.num_rounds + 1):
        if fed.journal is not None:
            fed.journal.round = server_round
        start = time.perf_counter()
        request = Envelope(keys.TRAIN, {keys.ROUND: server_round, keys.PHASE: "local"})
        train = train_phase(fed, request, nodes, server_round)
        record, faults = plaintext_record(fed, server_round, len(nodes), train)
        record.seconds = time.perf_counter() - start
        commit_round(fed, RoundOutcome(record, None, faults), None)


def run_central(config: FedConfig, split: DataSplit, recorder: RunRecorder) -> None:
    """Upper bound: the student trained on the whole private pool, no federation.

    One "round" is ``local-epochs`` epochs, so the curve lines up with the federated ones.
    """
    student, local = recorder.load_student(new_student(config, split)), config.local
    for server_round in range(len(recorder.rows) + 1, config.num_rounds + 1):
        start = time.perf_counter()
        train_supervised(
            student,
            split.private,
            epochs=local.epochs,
            batch_size=local.batch_size,
            lr=local.lr,
            seed=config.seed * 1_009 + server_round,
            optimizer=local.optimizer,
        )
        record = RoundRecord(
            round=server_round,
            method="central",
            student_accuracy=evaluate(student, split.test).accuracy,
            seconds=time.perf_counter() - start,
        )
        recorder.commit(record, student)
        log_round(record, config.num_rounds)
