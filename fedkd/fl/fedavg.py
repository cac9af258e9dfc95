"""FedAvg and FedProx as library rounds, over any :class:`~fedkd.transport.Transport`.

A round reads like McMahan et al. (2017)::

    sample clients
    train            push the global weights; each client trains on its shard (FedProx: with
                     mu / 2 ||w - w_global||^2) and answers its weights and its shard size
    average          the weights, weighted by shard size (Flower's FedAvg, ``num-examples``)
    record           the global model's test accuracy, bytes, seconds; a checkpoint

Weights travel in the clear, as in Flower's strategies: a node that requires secure
aggregation refuses these rounds. A reply with missing, misshapen or non-finite weights, or a
shard size that is not a positive number, drops its sender, never the round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fedkd.distill import evaluate
from fedkd.fl import keys
from fedkd.fl.client import weights_arrays, weights_of
from fedkd.fl.federation import Federation
from fedkd.fl.resume import RoundOutcome, commit_round, resume_point
from fedkd.fl.rounds import plaintext_record, train_phase
from fedkd.fl.server_work import sample_clients
from fedkd.models import FeatureModel
from fedkd.transport import Envelope, ExchangeResult

Weights = dict[str, np.ndarray]


def weighted_average(
    states: Sequence[Mapping[str, np.ndarray]], weights: Sequence[float]
) -> Weights:
    """``sum_k w_k * state_k / sum_k w_k``, tensor by tensor, as Flower's FedAvg computes it.

    Sums are taken in float64 and cast back to each tensor's dtype (integer buffers rounded),
    so the result equals Flower's ``aggregate_arrayrecords`` up to float32 rounding.

    Raises
    ------
    ValueError
        On no states, a weight count that differs from the states', a weight that is not
        finite and >= 0, a zero total, or states whose tensor names or shapes differ.
    """
    if not states or len(states) != len(weights):
        raise ValueError(f"need one weight per state; got {len(states)} states, {len(weights)}")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all zero; got {list(weights)}")
    total = float(sum(weights))
    first = states[0]
    average: Weights = {}
    for name, reference in first.items():
        if any(s.keys() != first.keys() or s[name].shape != reference.shape for s in states):
            raise ValueError(f"states differ in their tensors (at {name!r})")
        acc = np.zeros(reference.shape, dtype=np.float64)
        for state, weight in zip(states, weights, strict=True):
            acc += np.asarray(state[name], dtype=np.float64) * (weight / total)
        if np.issubdtype(reference.dtype, np.integer):
            acc = np.rint(acc)
        average[name] = acc.astype(reference.dtype)
    return average


def reply_weights(reply: Envelope, expected: Mapping[str, np.ndarray]) -> Weights:
    """The weights a train reply carries, checked against the global model's tensors.

    Raises
    ------
    ValueError
        Naming the first missing, extra, misshapen or non-finite tensor.
    """
    found = {
        k.removeprefix(keys.WEIGHTS_PREFIX): v
        for k, v in reply.arrays.items()
        if k.startswith(keys.WEIGHTS_PREFIX)
    }
    if found.keys() != expected.keys():
        missing = sorted(expected.keys() - found.keys())
        extra = sorted(found.keys() - expected.keys())
        raise ValueError(f"weights do not match the model (missing {missing}, extra {extra})")
    for name, value in found.items():
        if value.shape != expected[name].shape or not np.all(np.isfinite(value)):
            raise ValueError(f"tensor {name!r}: shape {value.shape}, or not finite")
    return found


def shard_size(reply: Envelope) -> float:
    """The ``num-examples`` a reply reports: FedAvg's weight (a positive finite number)."""
    value = reply.fields.get(keys.NUM_EXAMPLES)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{keys.NUM_EXAMPLES}' must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"'{keys.NUM_EXAMPLES}' must be finite and > 0, got {value!r}")
    return float(value)


def average_replies(train: ExchangeResult, global_weights: Weights) -> Weights | None:
    """FedAvg's aggregate of the usable replies (unusable ones drop their sender); ``None``
    when no reply was usable."""
    states, sizes = [], []
    for node, reply in list(train.replies.items()):
        try:
            state, size = reply_weights(reply, global_weights), shard_size(reply)
        except ValueError as problem:
            train.drop(node, f"malformed weights reply: {problem}")
            continue
        states.append(state)
        sizes.append(size)
    return weighted_average(states, sizes) if states else None


def weights_request(
    server_round: int, phase: str, student: FeatureModel, proximal_mu: float
) -> Envelope:
    """The train message: the global weights (FedProx: and ``proximal-mu``)."""
    request = Envelope(keys.TRAIN, {keys.ROUND: server_round, keys.PHASE: phase})
    if phase == "fedprox":
        request.fields[keys.PROXIMAL_MU] = float(proximal_mu)
    request.arrays.update(weights_arrays(student))
    return request


def fedavg_round(fed: Federation, student: FeatureModel, server_round: int) -> RoundOutcome:
    """One FedAvg (or, with ``method = fedprox``, FedProx) round; ``student`` is updated."""
    start, config = time.perf_counter(), fed.config
    rng = np.random.default_rng([config.seed, server_round])
    sampled = sample_clients(
        fed.transport.nodes(), fraction=config.fraction, minimum=config.min_clients, rng=rng
    )
    request = weights_request(server_round, config.method, student, config.local.proximal_mu)
    train = train_phase(fed, request, sampled, server_round)
    average = average_replies(train, weights_of(student))  # drops unusable replies first
    record, faults = plaintext_record(fed, server_round, len(sampled), train)
    if average is None:
        record.status, record.reason = "skipped", "no usable weights arrived"
    else:
        student.load_state_dict({k: torch.from_numpy(v) for k, v in average.items()})
        record.student_accuracy = evaluate(student, fed.split.test).accuracy
    record.seconds = time.perf_counter() - start
    return RoundOutcome(record, None, faults)


def run_fedavg(fed: Federation) -> None:
    """FedAvg (``method = fedavg``) or FedProx (``method = fedprox``), round after round."""
    first, student = resume_point(fed)
    for server_round in range(first, fed.config.num_rounds + 1):
        if fed.journal is not None:
            fed.journal.round = server_round
        commit_round(fed, fedavg_round(fed, student, server_round), student)
