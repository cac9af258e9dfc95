"""fedkd ClientApp: a thin Flower adapter over ``fedkd.fl.client_work`` and ``fedkd.secagg``.

Each handler decodes a Message, calls the library, encodes the reply. Anything a client must
remember between messages (its own model in FedMD/local mode, its secure-aggregation state and
pending contribution) lives in ``context.state``, never in module globals: Ray reuses one
actor for many virtual clients, and a deployed SuperNode starts a fresh process per message.
A malformed request gets an error reply that names the problem; it never crashes the node.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedkd.fl import keys
from fedkd.fl.client_work import LocalResult, local_round, new_client_model
from fedkd.fl.config import FedConfig, parse_run_config
from fedkd.fl.data import FederatedData, federated_data
from fedkd.fl.faults import inject_fault
from fedkd.models import FeatureModel
from fedkd.secagg import (
    ClientState,
    SecAggError,
    client_advertise,
    client_masked_input,
    client_share_keys,
    client_unmask,
    decode_client_state,
    encode_client_state,
)
from fedkd.secagg.errors import ReplayedRequest
from fedkd.secagg.wire import AdvertiseRequest, MaskedInputRequest, ShareKeysRequest, UnmaskRequest

app = ClientApp()

# Error codes of our error replies (Flower reserves small numbers for its own).
BAD_REQUEST = 400
REFUSED = 403


class BadRequest(ValueError):
    """The server's message is malformed (missing record, wrong shape, NaN values, ...)."""


class PlaintextRefused(SecAggError):
    """The server asked for a plaintext contribution where secure aggregation is required."""


def _setup(context: Context, *, needs_data: bool) -> tuple[FedConfig, FederatedData | None, int]:
    config = parse_run_config(context.run_config)
    # Small models on few cores: one intra-op thread per actor avoids oversubscription
    # (measured 16 ms vs 220 ms per CNN step with 2 threads on a busy 2-core machine).
    torch.set_num_threads(config.torch_threads)
    try:
        partition_id = int(context.node_config[keys.NODE_PARTITION_ID])
        num_partitions = int(context.node_config[keys.NODE_NUM_PARTITIONS])
    except KeyError as missing:
        raise BadRequest(
            f"node config lacks {missing}; start the SuperNode with --node-config "
            "'partition-id=<i> num-partitions=<n>'"
        ) from None
    data = federated_data(config, num_partitions) if needs_data else None
    return config, data, partition_id


def _handler(
    stage: str, *, needs_data: bool = True
) -> Callable[[Callable[..., RecordDict]], Callable[..., Message]]:
    """Wrap a handler: fault injection, and errors turned into error replies.

    The secure-aggregation stages need no data: they skip loading it, which matters in a
    deployment, where every message starts a fresh ClientApp process.
    """

    def wrap(body: Callable[..., RecordDict]) -> Callable[..., Message]:
        @functools.wraps(body)
        def handle(message: Message, context: Context) -> Message:
            try:
                config, data, partition_id = _setup(context, needs_data=needs_data)
                server_round = int(_config_record(message).get(keys.ROUND, 0))
                inject_fault(config, stage, server_round, partition_id)
                content = body(message, context, config, data, partition_id)
            except SecAggError as refusal:
                return Message(
                    Error(REFUSED, f"secagg {stage} refused: {refusal}"), reply_to=message
                )
            except (ValueError, KeyError, TypeError) as problem:  # BadRequest included
                return Message(
                    Error(BAD_REQUEST, f"bad {stage} request: {problem}"), reply_to=message
                )
            return Message(content, reply_to=message)

        return handle

    return wrap


def _config_record(message: Message) -> ConfigRecord:
    if keys.CONFIG not in message.content:
        raise BadRequest(f"message has no '{keys.CONFIG}' record")
    return message.content[keys.CONFIG]


def _single_array(message: Message, name: str) -> np.ndarray:
    if name not in message.content:
        raise BadRequest(f"message has no '{name}' record")
    arrays = message.content[name].to_numpy_ndarrays()
    if len(arrays) != 1:
        raise BadRequest(f"record '{name}' must hold one array, holds {len(arrays)}")
    array = arrays[0]
    if not np.all(np.isfinite(array)):
        raise BadRequest(f"record '{name}' holds NaN or infinite values")
    return array


def _model(
    message: Message, context: Context, config: FedConfig, data: FederatedData, pid: int
) -> FeatureModel:
    """FedDF/FedAvg: the pushed weights. FedMD/local: the client's own persistent model."""
    model = new_client_model(config, data, pid)
    phase = str(_config_record(message).get(keys.PHASE, config.method))
    if phase in ("fedavg",) or (phase == "fedkd" and config.mode == "feddf"):
        if keys.ARRAYS not in message.content:
            raise BadRequest(f"a {phase} round needs the student weights in '{keys.ARRAYS}'")
        try:
            model.load_state_dict(message.content[keys.ARRAYS].to_torch_state_dict())
        except RuntimeError as problem:
            raise BadRequest(
                f"pushed weights do not fit model '{config.model}': {problem}"
            ) from None
    elif keys.STATE_MODEL in context.state:
        model.load_state_dict(context.state[keys.STATE_MODEL].to_torch_state_dict())
    return model


def _metrics(result: LocalResult, pid: int) -> MetricRecord:
    return MetricRecord(
        {
            keys.NUM_EXAMPLES: result.num_examples,
            keys.CLIENT_ACCURACY: result.client_accuracy,
            keys.TRAIN_LOSS: result.train_loss,
            keys.TRAIN_SECONDS: result.seconds,
            keys.PARTITION_ID: pid,
            keys.CLIPPED: result.clipped_fraction,
        }
    )


def _load_state(context: Context) -> ClientState | None:
    if keys.STATE_SECAGG not in context.state:
        return None
    return decode_client_state(bytes(context.state[keys.STATE_SECAGG][keys.PAYLOAD]))


def _save_state(context: Context, state: ClientState) -> None:
    context.state[keys.STATE_SECAGG] = ConfigRecord({keys.PAYLOAD: encode_client_state(state)})


@app.train()
@_handler("train")
def train(
    message: Message, context: Context, config: FedConfig, data: FederatedData, pid: int
) -> RecordDict:
    """Local training; then the teacher contribution (FedKD) or the weights (FedAvg)."""
    round_config = _config_record(message)
    phase = str(round_config.get(keys.PHASE, config.method))
    server_round = int(round_config.get(keys.ROUND, round_config.get("server-round", 0)))
    persistent = phase == "local" or (phase == "fedkd" and config.mode == "fedmd")
    first_round = keys.STATE_MODEL not in context.state if persistent else server_round == 1
    model = _model(message, context, config, data, pid)
    teacher = None
    if phase == "fedkd" and config.mode == "fedmd" and keys.TEACHER in message.content:
        teacher = _single_array(message, keys.TEACHER)
    result = local_round(
        config,
        data,
        pid,
        model,
        server_round=server_round,
        teacher_logits=teacher,
        contribute=phase == "fedkd",
        first_round=first_round,
    )
    if persistent:
        context.state[keys.STATE_MODEL] = ArrayRecord(model.state_dict())
    reply = RecordDict({keys.METRICS: _metrics(result, pid)})
    if phase == "fedavg":
        reply[keys.ARRAYS] = ArrayRecord(model.state_dict())
    elif phase == "fedkd" and keys.SECAGG_CONFIG in round_config:
        state = _load_state(context) or ClientState(node_id=context.node_id)
        request = AdvertiseRequest.from_bytes(bytes(round_config[keys.SECAGG_CONFIG]))
        advertised = client_advertise(state, request)
        _save_state(context, state)
        context.state[keys.STATE_PENDING] = ArrayRecord([result.vector])
        reply[keys.SECAGG] = ConfigRecord({keys.PAYLOAD: advertised.to_bytes()})
    elif phase == "fedkd":
        if config.secagg or _node_requires_secagg(context):
            # A server that drops the secure-aggregation config would receive this client's
            # logits in the clear: refuse instead.
            raise PlaintextRefused(
                "the run (or this node's 'require-secagg') demands secure aggregation, but the "
                "train message carries no secure-aggregation config; not sending logits in clear"
            )
        reply[keys.CONTRIBUTION] = ArrayRecord([result.vector])
    return reply


def _node_requires_secagg(context: Context) -> bool:
    """SuperNode operators can insist on secure aggregation whatever the run config says:
    ``flower-supernode --node-config "... require-secagg=true"``."""
    return str(context.node_config.get(keys.NODE_REQUIRE_SECAGG, "false")).lower() in ("true", "1")


def _secagg_payload(message: Message) -> bytes:
    if keys.SECAGG not in message.content or keys.PAYLOAD not in message.content[keys.SECAGG]:
        raise BadRequest(f"message has no '{keys.SECAGG}.{keys.PAYLOAD}' field")
    return bytes(message.content[keys.SECAGG][keys.PAYLOAD])


@contextlib.contextmanager
def _secagg_session(context: Context) -> Iterator[ClientState]:
    """The node's secure-aggregation state, saved back however the stage ends: a refusal
    marks the round spent, and the node must remember that for the next message."""
    state = _load_state(context)
    if state is None:
        raise BadRequest("no secure-aggregation round in progress on this node")
    try:
        yield state
    finally:
        _save_state(context, state)


@app.query(keys.SHARE_KEYS)
@_handler("share", needs_data=False)
def share_keys(
    message: Message, context: Context, config: FedConfig, data: FederatedData | None, pid: int
) -> RecordDict:
    """Stage 2: check every advertised key set, send encrypted Shamir shares."""
    with _secagg_session(context) as state:
        shares = client_share_keys(state, ShareKeysRequest.from_bytes(_secagg_payload(message)))
    return RecordDict({keys.SECAGG: ConfigRecord({keys.PAYLOAD: shares.to_bytes()})})


@app.query(keys.MASKED_INPUT)
@_handler("mask", needs_data=False)
def masked_input(
    message: Message, context: Context, config: FedConfig, data: FederatedData | None, pid: int
) -> RecordDict:
    """Stage 3: authenticate received shares, send the masked quantised contribution."""
    with _secagg_session(context) as state:
        if keys.STATE_PENDING not in context.state:
            spent = state.config is not None and (state.config.run_id, state.config.round) in (
                state.spent_rounds
            )
            if spent:  # the contribution was masked and sent already: this is a replay
                raise ReplayedRequest(f"round {state.config.round} already answered; refusing")
            raise BadRequest("no pending contribution on this node (train first)")
        values = context.state[keys.STATE_PENDING].to_numpy_ndarrays()[0]
        request = MaskedInputRequest.from_bytes(_secagg_payload(message))
        masked = client_masked_input(state, request, values)
    del context.state[keys.STATE_PENDING]  # the plaintext contribution is not kept past use
    return RecordDict({keys.MASKED: ArrayRecord([masked.masked])})


@app.query(keys.UNMASK)
@_handler("unmask", needs_data=False)
def unmask(
    message: Message, context: Context, config: FedConfig, data: FederatedData | None, pid: int
) -> RecordDict:
    """Stage 4: reveal self-mask shares of survivors or key shares of dropouts, never both."""
    with _secagg_session(context) as state:
        reply = client_unmask(state, UnmaskRequest.from_bytes(_secagg_payload(message)))
    return RecordDict({keys.SECAGG: ConfigRecord({keys.PAYLOAD: reply.to_bytes()})})
