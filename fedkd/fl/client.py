"""A federated client, free of any transport: one request envelope in, one reply out.

:func:`handle` is everything a client decides: which model it trains (the pushed student in
FedDF and FedAvg, its own persistent model in FedMD and local-only), whether it digests the
pushed teacher, whether it may answer in the clear (never when the run or its operator
requires secure aggregation), and the client side of the secure-aggregation stages, with
their freshness checks (the aggregation round must be the train round of this run, a spent
round is never answered again, the public set must be the one this node loaded or pinned).

Per-node state that outlives one message (the persistent model, the secure-aggregation
state, the pending contribution) goes through a :class:`NodeStore`: Flower's
``context.state`` in ``clients/app.py``, a dict in :class:`MemoryStore`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fedkd.fl import keys
from fedkd.fl.config import FedConfig, parse_run_config
from fedkd.fl.faults import InjectedFault, inject_fault
from fedkd.fl.identities import client_identity
from fedkd.secagg import (
    ClientState,
    SecAggError,
    decode_client_state,
    encode_client_state,
)
from fedkd.secagg import protocol as secagg
from fedkd.secagg.errors import ConfigMismatch, RefusedRequest, ReplayedRequest
from fedkd.secagg.identity import Identity, Roster
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

log = logging.getLogger("fedkd.client")

FAULT_STAGE = {
    keys.TRAIN: "train",
    secagg.SHARE_KEYS: "share",
    secagg.MASKED_INPUT: "mask",
    secagg.CONSISTENCY: "consistency",
    secagg.UNMASK: "unmask",
}


class BadRequest(ValueError):
    """The server's message is malformed (missing field or array, wrong shape, NaN...)."""


CRASHED = 500  # error code of an injected crash
SUMMED_PHASES = ("fedkd", "feddf")  # phases whose reply is a contribution to the (secure) sum
CLOCK_SLACK = 5.0  # seconds of clock difference tolerated between server and client


class LateRequest(ValueError):
    """The request arrived after its deadline: the server no longer waits for the answer."""


class PlaintextRefused(RefusedRequest):
    """The server asked for something in the clear where secure aggregation is required."""


class NodeStore(Protocol):
    """Per-node envelopes that survive between messages."""

    def get(self, key: str) -> Envelope | None: ...

    def put(self, key: str, value: Envelope) -> None: ...

    def delete(self, key: str) -> None: ...


class MemoryStore:
    """A :class:`NodeStore` in a dict (in-process federations, tests)."""

    def __init__(self) -> None:
        self.items: dict[str, Envelope] = {}

    def get(self, key: str) -> Envelope | None:
        value = self.items.get(key)
        return None if value is None else value.copy()

    def put(self, key: str, value: Envelope) -> None:
        self.items[key] = value.copy()

    def delete(self, key: str) -> None:
        self.items.pop(key, None)


@dataclass(frozen=True)
class NodeInfo:
    """What a node knows about itself: identity and its operator's settings."""

    node_id: int
    run_id: int
    partition_id: int
    num_partitions: int
    node_config: Mapping[str, Any] = field(default_factory=dict)  # the operator's settings
    require_secagg: bool = False  # the operator's word: nothing in the clear, whatever the run
    public_set_digest: str = ""  # hex SHA-256 the operator pins ("" = trust the run config)

    @classmethod
    def from_node_config(
        cls, node_id: int, run_id: int, node_config: Mapping[str, Any]
    ) -> NodeInfo:
        """Read ``partition-id``, ``num-partitions`` and the operator's optional settings."""
        try:
            partition_id = int(node_config[keys.NODE_PARTITION_ID])
            num_partitions = int(node_config[keys.NODE_NUM_PARTITIONS])
        except KeyError as missing:
            raise BadRequest(
                f"node config lacks {missing}; start the SuperNode with --node-config "
                "'partition-id=<i> num-partitions=<n>'"
            ) from None
        flag = str(node_config.get(keys.NODE_REQUIRE_SECAGG, "false")).lower()
        return cls(
            node_id=node_id,
            run_id=run_id,
            partition_id=partition_id,
            num_partitions=num_partitions,
            node_config=dict(node_config),
            require_secagg=flag in ("true", "1"),
            public_set_digest=str(node_config.get(keys.NODE_PUBLIC_DIGEST, "")).lower(),
        )


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
            FAULT_STAGE.get(request.kind, request.kind),
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


def weights_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """A model's state dict as envelope arrays (the form weights travel in)."""
    return {
        keys.WEIGHTS_PREFIX + name: tensor.detach().cpu().numpy()
        for name, tensor in model.state_dict().items()
    }


def _metrics(result: LocalResult, pid: int) -> dict[str, int | float]:
    return {
        keys.NUM_EXAMPLES: result.num_examples,
        keys.CLIENT_ACCURACY: result.client_accuracy,
        keys.TRAIN_LOSS: result.train_loss,
        keys.TRAIN_SECONDS: result.seconds,
        keys.PARTITION_ID: pid,
        keys.CLIPPED: result.clipped_fraction,
    }


def train(
    request: Envelope, node: NodeInfo, store: NodeStore, config: FedConfig, server_round: int
) -> Envelope:
    """Local training; then the teacher contribution (FedKD) or the weights (FedAvg)."""
    import torch

    from fedkd.fl.client_work import local_round
    from fedkd.fl.data import federated_data
    from fedkd.fl.fedprox import proximal_round
    from fedkd.fl.privacy import require_round_noise

    # Small models on few cores: one intra-op thread per process avoids oversubscription.
    torch.set_num_threads(config.local.torch_threads)
    if keys.ROUND not in request.fields:
        raise BadRequest(f"train message has no '{keys.ROUND}' in its 'config' record")
    deadline = request.fields.get(keys.DEADLINE)
    if isinstance(deadline, float) and time.time() > deadline + CLOCK_SLACK:
        raise LateRequest(
            f"the round's deadline passed {time.time() - deadline:.0f} s before this client "
            "could start; not training"
        )
    phase = _phase(request, config)
    secure = keys.SECAGG_CONFIG in request.fields
    if phase in ("fedavg", "fedprox", "local") and node.require_secagg:
        raise PlaintextRefused(
            f"this node requires secure aggregation; a {phase} round would send its weights "
            "or its statistics in the clear"
        )
    if phase in SUMMED_PHASES and not secure and (config.secagg.enabled or node.require_secagg):
        # A server that drops the secure-aggregation config would get our logits in the clear.
        raise PlaintextRefused(
            "the run (or this node's 'require-secagg') demands secure aggregation, but the "
            "train message carries no secure-aggregation config; not sending logits in clear"
        )
    data = federated_data(config, node.num_partitions)
    if node.public_set_digest and node.public_set_digest != data.public_digest.hex():
        # Whatever the phase: answering on a public set the operator did not accept would let
        # a server that picks the public set query this node's model (crafted queries).
        raise ConfigMismatch(
            "this node's pinned public-set digest differs from the public set the run loads"
        )
    advertise = _check_secagg_request(request, node, data, server_round) if secure else None
    if secure and config.dp.placement == "distributed":  # before any work on private data
        payload = request.fields[keys.SECAGG_CONFIG]
        assert isinstance(payload, bytes)  # _check_secagg_request refused anything else
        round_config = AdvertiseRequest.from_bytes(payload).config
        require_round_noise(config, round_config, node.num_partitions)
    model, fresh = _model(request, store, config, data, node.partition_id, phase)
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
    else:
        result = local_round(
            config,
            data,
            node.partition_id,
            model,
            server_round=server_round,
            teacher_logits=teacher,
            contribute=phase in SUMMED_PHASES,
            first_round=fresh,
            dpsgd_history=dpsgd_history(store),
            send_weights=phase == "feddf",
        )
    if config.dp.client_dp_sgd and result.dpsgd_history:  # the accountant outlives the round
        history = np.asarray(result.dpsgd_history, dtype=np.float64)  # (entries, 3)
        store.put(keys.STATE_DPSGD, Envelope(keys.STATE_DPSGD, arrays={"history": history}))
        # The node's own log: its epsilon depends on its shard size, so it never leaves the node.
        log.info(
            "DP-SGD: epsilon %.3f (PLD) at delta %g after %d steps (noise %.3f, sample rate %.4f)",
            result.dpsgd_epsilon,
            config.dp.client_delta,
            sum(steps for _, _, steps in result.dpsgd_history),
            result.dpsgd_history[-1][0],
            result.dpsgd_history[-1][1],
        )
    if _persistent(phase, config):
        store.put(
            keys.STATE_MODEL,
            Envelope(
                keys.STATE_MODEL,
                arrays={k: v.detach().cpu().numpy() for k, v in model.state_dict().items()},
            ),
        )
    if phase in SUMMED_PHASES:  # the statistics ride inside the summed vector; only who answered
        reply = Envelope(keys.TRAIN, {keys.PARTITION_ID: node.partition_id})
    else:
        reply = Envelope(keys.TRAIN, dict(_metrics(result, node.partition_id)))
    if phase in ("fedavg", "fedprox"):
        reply.arrays.update(weights_arrays(model))
    elif advertise is not None:
        state = _load_state(store, node, config) or _new_state(node, config)
        state.expected_run, state.expected_round = node.run_id, server_round
        try:
            stage = secagg.serve_stage(state, advertise)
        finally:
            _save_state(store, state)
        store.put(
            keys.STATE_PENDING, Envelope(keys.STATE_PENDING, arrays={"values": result.vector})
        )
        reply.fields[secagg.PAYLOAD] = stage.fields[secagg.PAYLOAD]
    elif phase in SUMMED_PHASES:
        reply.arrays[keys.CONTRIBUTION] = result.vector
    return reply


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
) -> Envelope:
    """The round's aggregation config must belong to this run, this round and this public set."""
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
    return secagg.stage_envelope(secagg.ADVERTISE, payload, server_round)


def _trust(node: NodeInfo, config: FedConfig) -> tuple[Identity | None, Roster | None]:
    return client_identity(
        config.secagg.roster,
        node.node_config,
        run_id=node.run_id,
        partition_id=node.partition_id,
        num_partitions=node.num_partitions,
    )


def _new_state(node: NodeInfo, config: FedConfig) -> ClientState:
    """A node's first secure-aggregation state, with its identity when the run has a roster."""
    identity, roster = _trust(node, config)
    return ClientState(node_id=node.node_id, identity=identity, roster=roster)


def _load_state(store: NodeStore, node: NodeInfo, config: FedConfig) -> ClientState | None:
    """The node's saved state; the roster, saved by digest only, comes from the node's own."""
    saved = store.get(keys.STATE_SECAGG)
    if saved is None:
        return None
    payload = bytes(saved.fields[secagg.PAYLOAD])  # type: ignore[arg-type]
    return decode_client_state(payload, roster=_trust(node, config)[1])


def _save_state(store: NodeStore, state: ClientState) -> None:
    payload = encode_client_state(state, with_roster=False)
    store.put(keys.STATE_SECAGG, Envelope(keys.STATE_SECAGG, {secagg.PAYLOAD: payload}))


def secure_stage(
    request: Envelope, store: NodeStore, node: NodeInfo, config: FedConfig
) -> Envelope:
    """The later secure-aggregation stages; the state is saved back however the stage ends (a
    refusal marks the round spent, and the node must remember that for the next message)."""
    state = _load_state(store, node, config)
    if state is None:
        raise BadRequest("no secure-aggregation round in progress on this node")
    values = None
    if request.kind == secagg.MASKED_INPUT:
        pending = store.get(keys.STATE_PENDING)
        if pending is None:
            spent = state.config is not None and (state.config.run_id, state.config.round) in (
                state.spent_rounds
            )
            if spent:  # the contribution was masked and sent already: this is a replay
                _save_state(store, state)
                raise ReplayedRequest("this round was already answered; refusing")
            raise BadRequest("no pending contribution on this node (train first)")
        values = pending.arrays["values"]
    try:
        reply = secagg.serve_stage(state, request, values)
    finally:
        _save_state(store, state)
    if request.kind == secagg.MASKED_INPUT:
        store.delete(keys.STATE_PENDING)  # the plaintext contribution is not kept past use
    return reply
