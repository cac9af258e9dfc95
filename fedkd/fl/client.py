"""A federated client, free of any transport: one request envelope in, one reply out.

:func:`handle` is everything a client decides: which model it trains (the pushed student in
FedDF and FedAvg, its own persistent model in FedMD and local-only), whether it digests the
pushed teacher, whether it may answer in the clear (never when the run or its operator
requires secure aggregation), and the client side of the secure-aggregation stages
(:mod:`fedkd.fl.client_stages`), with their freshness checks (the aggregation round must be
the train round of this run, a spent round is never answered again, the public set must be
the one this node loaded or pinned) and its release ledger's rules (:mod:`fedkd.fl.release`:
no vector released for two participant sets, a privacy budget the node keeps itself).

Per-run state goes through a :class:`~fedkd.fl.node.NodeStore`; what outlives runs is in the
node's ledger (:mod:`fedkd.fl.ledger`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from fedkd.fl import keys, node_budget, release
from fedkd.fl.client_stages import secure_stage, start_round, trust
from fedkd.fl.config import SECURE_METHODS, FedConfig, parse_run_config
from fedkd.fl.faults import InjectedFault, inject_fault
from fedkd.fl.ledger import LedgerRefusal, Training
from fedkd.fl.node import BadRequest, MemoryStore, NodeInfo, NodeStore
from fedkd.fl.release import NodeBudget, admit_run, admit_training, training_input
from fedkd.secagg import SecAggConfig, SecAggError
from fedkd.secagg import protocol as secagg
from fedkd.secagg.errors import ConfigMismatch, RefusedRequest, ReplayedRequest
from fedkd.secagg.wire import AdvertiseRequest
from fedkd.transport import BAD_REQUEST, REFUSED, Envelope, Refusal

# Training (PyTorch, the data, dp-accounting's scipy) is imported where a train request is
# answered, not here: a deployed SuperNode starts a fresh process for every message, and the
# four secure-aggregation stages of a round need none of it (fedkd._lazy says why).
if TYPE_CHECKING:
    import torch

    from fedkd.fl.client_work import LocalResult
    from fedkd.fl.data import FederatedData
    from fedkd.models import FeatureModel

__all__ = ["BadRequest", "MemoryStore", "NodeInfo", "NodeStore", "handle", "train"]

log = logging.getLogger("fedkd.client")

CRASHED = 500  # error code of an injected crash
CLOCK_SLACK = 5.0  # seconds of clock difference tolerated between server and client


class LateRequest(ValueError):
    """The request arrived after its deadline: the server no longer waits for the answer."""


class PlaintextRefused(RefusedRequest):
    """The server asked for something in the clear where secure aggregation is required."""


def handle(
    request: Envelope, node: NodeInfo, store: NodeStore, run_config: Mapping[str, Any]
) -> Envelope | Refusal:
    """Answer one request; a malformed or refused request gets a :class:`Refusal`.

    An injected crash (``fault-kind=crash``) answers as a crashed ClientApp does -- an error
    reply, code :data:`CRASHED` -- without the traceback a real exception would print.
    """
    try:
        config = _config(run_config)
        server_round = _round(request)
        deadline = request.fields.get(keys.DEADLINE)
        inject_fault(
            config,
            request.kind,  # a fault stage is named as its message kind
            server_round,
            node.partition_id,
            deadline=deadline if isinstance(deadline, float) else None,
        )
        if request.kind == keys.TRAIN:
            return train(request, node, store, config, server_round)
        if request.kind in secagg.STAGES:
            return secure_stage(request, store, node, config)
        raise BadRequest(f"unknown message kind {request.kind!r}")
    except InjectedFault as crash:
        return Refusal(CRASHED, str(crash))
    except LedgerRefusal as refusal:  # the node's own rule: the operator sees it in one line
        text = release.refusal_text(node, refusal)
        log.warning(
            "node %s (partition %s) refuses %s of run %s round %s: %s",
            node.node_id,
            node.partition_id,
            request.kind,
            node.run_id,
            request.fields.get(keys.ROUND, "?"),
            text,
        )
        return Refusal(REFUSED, text)
    except SecAggError as refusal:
        return Refusal(REFUSED, f"secagg {request.kind} refused: {refusal}")
    except (ValueError, KeyError, TypeError) as problem:  # BadRequest included
        return Refusal(BAD_REQUEST, f"bad {request.kind} request: {problem}")


@functools.lru_cache(maxsize=8)
def _parsed(items: tuple[tuple[str, Any], ...]) -> FedConfig:
    return parse_run_config(dict(items))


def _config(run_config: Mapping[str, Any]) -> FedConfig:
    """The run config, parsed once per process (every message of a run carries the same)."""
    items = tuple(sorted(run_config.items()))
    try:
        return _parsed(items)
    except TypeError:  # an unhashable value: parse it uncached, and let it be refused there
        return parse_run_config(run_config)


def _round(request: Envelope) -> int:
    """The train round a request belongs to."""
    value = request.fields.get(keys.ROUND, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"field '{keys.ROUND}' must be an integer, got {value!r}")
    return value


def _single_array(request: Envelope, name: str, shape: tuple[int, ...]) -> np.ndarray:
    array = request.arrays.get(name)
    if array is None:
        raise BadRequest(f"message has no '{name}' array")
    if array.shape != shape:
        raise BadRequest(f"array '{name}' has shape {array.shape}, expected {shape}")
    if not np.all(np.isfinite(array)):
        raise BadRequest(f"array '{name}' holds NaN or infinite values")
    return array


def _phase(request: Envelope, config: FedConfig) -> str:
    phase = str(request.fields.get(keys.PHASE, config.method))
    if phase not in ("fedkd", "feddf", "fedavg", "fedprox", "local"):
        raise BadRequest(f"unknown phase {phase!r}")
    return phase


def _persistent(phase: str, config: FedConfig) -> bool:
    """FedMD and local-only clients keep their own model; FedDF and FedAvg get one pushed."""
    return phase == "local" or (phase == "fedkd" and config.mode == "fedmd")


def _model(
    request: Envelope,
    store: NodeStore,
    config: FedConfig,
    data: FederatedData,
    pid: int,
    phase: str,
) -> tuple[FeatureModel, bool]:
    """The model to train this round, and whether it is freshly initialised."""
    import torch

    from fedkd.fl.client_work import new_client_model

    model = new_client_model(config, data, pid)
    if _persistent(phase, config):
        saved = store.get(keys.STATE_MODEL)
        if saved is not None:
            model.load_state_dict({k: torch.from_numpy(v) for k, v in saved.arrays.items()})
        return model, saved is None
    weights = {k: v for k, v in request.arrays.items() if k.startswith(keys.WEIGHTS_PREFIX)}
    if not weights:
        raise BadRequest(f"a {phase} round needs the student weights")
    try:
        model.load_state_dict(
            {k.removeprefix(keys.WEIGHTS_PREFIX): torch.from_numpy(v) for k, v in weights.items()}
        )
    except RuntimeError as problem:
        raise BadRequest(
            f"pushed weights do not fit model '{config.local.model}': {problem}"
        ) from None
    # Warm-up epochs serve a first teacher (FedKD); FedAvg's and FedDF's clients train the
    # pushed model for their local epochs alone, as published.
    return model, phase == "fedkd" and _round(request) == 1


def dpsgd_history(store: NodeStore) -> list[tuple[float, float, int]]:
    """The node's DP-SGD accountant history (noise multiplier, sample rate, steps) so far."""
    saved = store.get(keys.STATE_DPSGD)
    if saved is None:
        return []
    return [(float(z), float(q), int(s)) for z, q, s in saved.arrays["history"]]


def weights_of(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """A model's state dict as numpy arrays (the form weights are kept and averaged in)."""
    return {name: t.detach().cpu().numpy() for name, t in model.state_dict().items()}


def weights_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """A model's state dict as envelope arrays (the form weights travel in)."""
    return {keys.WEIGHTS_PREFIX + name: value for name, value in weights_of(model).items()}


def _metrics(result: LocalResult, pid: int) -> dict[str, int | float]:
    return {
        keys.NUM_EXAMPLES: result.num_examples,
        keys.CLIENT_ACCURACY: result.client_accuracy,
        keys.TRAIN_LOSS: result.train_loss,
        keys.PARTITION_ID: pid,
        keys.CLIPPED: result.clipped_fraction,
    }


def _refuse_plaintext(phase: str, secure: bool, node: NodeInfo, config: FedConfig) -> None:
    if phase in ("fedavg", "fedprox", "local") and node.require_secagg:
        raise PlaintextRefused(
            f"this node requires secure aggregation; a {phase} round would send its weights "
            "or its statistics in the clear"
        )
    if phase in SECURE_METHODS and not secure and (config.secagg.enabled or node.require_secagg):
        # A server that drops the secure-aggregation config would get our logits in the clear.
        raise PlaintextRefused(
            "the run (or this node's 'require-secagg') demands secure aggregation, but the "
            "train message carries no secure-aggregation config; not sending logits in clear"
        )


def _check_train_request(request: Envelope, config: FedConfig) -> None:
    if keys.ROUND not in request.fields:
        raise BadRequest(f"train message has no '{keys.ROUND}' in its 'config' record")
    deadline = request.fields.get(keys.DEADLINE)
    if isinstance(deadline, float) and time.time() > deadline + CLOCK_SLACK:
        raise LateRequest(
            f"the round's deadline passed {time.time() - deadline:.0f} s before this client "
            "could start; not training"
        )


def _admit(node: NodeInfo, config: FedConfig, data: FederatedData, server_round: int) -> NodeBudget:
    """The node's ledger and budget for this request (before any work on private data)."""
    from fedkd.fl.privacy import budget_targets

    identity, roster = trust(node, config)
    targets = budget_targets(config, node.num_partitions, data.shard_size(node.partition_id))
    asked = node_budget.run_budget(
        config, client_epsilon=targets.get("client"), dpsgd_epsilon=targets.get("dpsgd")
    )
    name = identity.name if identity is not None else ""
    return admit_run(node, config, name, roster, server_round, asked)


def _dpsgd_seed(
    nb: NodeBudget,
    request: Envelope,
    store: NodeStore,
    node: NodeInfo,
    config: FedConfig,
    shard: int,
    epochs: int,
    server_round: int,
) -> tuple[int, list[tuple[float, float, int]]]:
    """Check the DP-SGD budget and record the training; the seed of its noise, and the
    accountant's entries of the node's other trainings in this federation."""
    from fedkd.fl.privacy import dpsgd_plan

    saved = store.get(keys.STATE_MODEL)
    inputs = training_input(
        request.arrays,
        None if saved is None else saved.arrays,
        config.to_dict(),
        server_round,
        node.partition_id,
    )
    z, q, steps = dpsgd_plan(config, shard, epochs)
    seed = admit_training(
        nb, Training(nb.federation, server_round, node.run_id, inputs, z, q, steps)
    )
    return seed, release.dpsgd_history(nb, without=inputs)


def _work(
    request: Envelope,
    node: NodeInfo,
    store: NodeStore,
    config: FedConfig,
    data: FederatedData,
    nb: NodeBudget,
    server_round: int,
) -> tuple[LocalResult, FeatureModel]:
    """The round's local training on the model this phase trains."""
    from fedkd.fl.client_work import local_round
    from fedkd.fl.fedprox import proximal_round

    phase = _phase(request, config)
    model, fresh = _model(request, store, config, data, node.partition_id, phase)
    seed: int | None = None
    history: list[tuple[float, float, int]] = []
    if config.dp.client_dp_sgd:
        epochs = config.local.epochs + (config.local.warmup_epochs if fresh else 0)
        shard = data.shard_size(node.partition_id)
        seed, history = _dpsgd_seed(nb, request, store, node, config, shard, epochs, server_round)
    teacher = None
    if phase == "fedkd" and keys.TEACHER in request.arrays:
        shape = (len(data.split.public), data.split.num_classes)
        teacher = _single_array(request, keys.TEACHER, shape)
    if phase == "fedprox":
        result = proximal_round(
            config,
            data,
            node.partition_id,
            model,
            server_round=server_round,
            mu=_proximal_mu(request),
            first_round=fresh,
        )
        return result, model
    result = local_round(
        config,
        data,
        node.partition_id,
        model,
        server_round=server_round,
        teacher_logits=teacher,
        contribute=phase in SECURE_METHODS,
        first_round=fresh,
        dpsgd_history=history,
        dpsgd_seed=seed,
        send_weights=phase == "feddf",
    )
    return result, model


def train(
    request: Envelope, node: NodeInfo, store: NodeStore, config: FedConfig, server_round: int
) -> Envelope:
    """Local training; then the teacher contribution (FedKD) or the weights (FedAvg)."""
    import torch

    from fedkd.fl.data import federated_data
    from fedkd.fl.privacy import require_round_noise

    # Small models on few cores: one intra-op thread per process avoids oversubscription.
    torch.set_num_threads(config.local.torch_threads)
    _check_train_request(request, config)
    phase = _phase(request, config)
    secure = keys.SECAGG_CONFIG in request.fields
    _refuse_plaintext(phase, secure, node, config)
    data = federated_data(config, node.num_partitions)
    if node.public_set_digest and node.public_set_digest != data.public_digest.hex():
        # Whatever the phase: answering on a public set the operator did not accept would let
        # a server that picks the public set query this node's model (crafted queries).
        raise ConfigMismatch(
            "this node's pinned public-set digest differs from the public set the run loads"
        )
    advertise: Envelope | None = None
    round_config: SecAggConfig | None = None
    if secure:
        advertise, round_config = _check_secagg_request(request, node, data, server_round)
        if config.dp.placement == "distributed":  # before any work on private data
            require_round_noise(config, round_config, node.num_partitions)
    nb = _admit(node, config, data, server_round)
    result, model = _work(request, node, store, config, data, nb, server_round)
    _keep(store, config, phase, model, result, nb)
    if phase not in SECURE_METHODS:
        reply = Envelope(keys.TRAIN, dict(_metrics(result, node.partition_id)))
        if phase in ("fedavg", "fedprox"):
            reply.arrays.update(weights_arrays(model))
        return reply
    # FedKD, FedDF: the statistics ride inside the summed vector; only who answered is in the clear
    reply = Envelope(keys.TRAIN, {keys.PARTITION_ID: node.partition_id})
    prepared = release.prepare_release(nb, node, config, result.vector, server_round, round_config)
    if advertise is None:
        nb.ledger.record_release(prepared.release, budgeted=nb.budgeted)
        reply.arrays[keys.CONTRIBUTION] = prepared.values
    else:
        reply.fields[secagg.PAYLOAD] = start_round(
            store, node, config, advertise, prepared, budgeted=nb.budgeted
        )
    return reply


def _keep(
    store: NodeStore,
    config: FedConfig,
    phase: str,
    model: FeatureModel,
    result: LocalResult,
    nb: NodeBudget,
) -> None:
    """What outlives the round in the run's store: the own model, the DP-SGD accountant."""
    if config.dp.client_dp_sgd and result.dpsgd_history:
        history = np.asarray(release.dpsgd_history(nb), dtype=np.float64)  # (entries, 3)
        store.put(keys.STATE_DPSGD, Envelope(keys.STATE_DPSGD, arrays={"history": history}))
        # The node's own log: its epsilon depends on its shard size, so it never leaves the node.
        log.info(
            "DP-SGD: epsilon %.3f (PLD) at delta %g after %d steps over the federation's runs "
            "(noise %.3f, sample rate %.4f)",
            result.dpsgd_epsilon,
            config.dp.client_delta,
            sum(steps for _, _, steps in result.dpsgd_history),
            result.dpsgd_history[-1][0],
            result.dpsgd_history[-1][1],
        )
    if _persistent(phase, config):
        store.put(keys.STATE_MODEL, Envelope(keys.STATE_MODEL, arrays=weights_of(model)))


def _proximal_mu(request: Envelope) -> float:
    """The proximal weight a FedProx train message carries (a number >= 0)."""
    value = request.fields.get(keys.PROXIMAL_MU)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"a fedprox round needs a number '{keys.PROXIMAL_MU}', got {value!r}")
    if not 0.0 <= value < float("inf"):  # also refuses NaN
        raise BadRequest(f"'{keys.PROXIMAL_MU}' must be finite and >= 0, got {value!r}")
    return float(value)


def _check_secagg_request(
    request: Envelope, node: NodeInfo, data: FederatedData, server_round: int
) -> tuple[Envelope, SecAggConfig]:
    """The round's aggregation config must belong to this run, this round and this public set;
    returns stage 1's request and that config."""
    payload = request.fields[keys.SECAGG_CONFIG]
    if not isinstance(payload, bytes):
        raise BadRequest(f"field '{keys.SECAGG_CONFIG}' must be bytes")
    config = AdvertiseRequest.from_bytes(payload).config
    if config.run_id != node.run_id or config.round != server_round:
        raise ReplayedRequest(
            f"aggregation config is for run {config.run_id} round {config.round}, but this is "
            f"run {node.run_id} round {server_round}; refusing (a replay or a re-numbered round)"
        )
    if config.public_set_digest != data.public_digest:
        raise ConfigMismatch("the aggregation config names another public set than this node's")
    return secagg.stage_envelope(secagg.ADVERTISE, payload, server_round), config
