"""The secure-aggregation round, written once, over any :class:`~fedkd.transport.Transport`.

Server side: :func:`secure_sum` runs the stages as exchanges -- advertise keys, share keys,
masked input, consistency (rounds with a roster: the survivors sign the survivor set), unmask
-- calling the stage functions of :mod:`fedkd.secagg.server` between them.
Stage 1 may ride on another message (the federated round sends it with the train message):
pass its replies as ``advertised`` and the exchange is skipped.

Client side: :func:`serve_stage` answers one stage's envelope from a :class:`ClientState`;
the federated client and the standalone in-process nodes of :mod:`fedkd.secagg.driver` both
call it.

A reply that does not parse, is larger than its stage allows, names another node than the one
that sent it, or that the server's stage function rejects (duplicated, spoofed, inconsistent)
makes its sender a dropout for the round (with the reason in ``SecureOutcome.failed``); it never
ends the round by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from fedkd.secagg.client import client_advertise, client_share_keys
from fedkd.secagg.client_masked import client_masked_input
from fedkd.secagg.client_state import ClientState
from fedkd.secagg.client_unmask import client_consistency, client_unmask
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import ProtocolAbort, SecAggError
from fedkd.secagg.packing import pack_words, unpack_words
from fedkd.secagg.server import (
    AggregateResult,
    ServerState,
    server_advertise_request,
    server_collect_keys,
    server_collect_masked,
    server_collect_signatures,
    server_consistency_request,
    server_route_receive_keys,
    server_route_shares,
    server_route_tags,
    server_unmask,
)
from fedkd.secagg.wire import (
    Accusations,
    AdvertisedKeys,
    AdvertiseRequest,
    ConsistencyReply,
    ConsistencyRequest,
    EncryptedShares,
    MaskedInput,
    MaskedInputRequest,
    ReceiveKeys,
    ShareKeysRequest,
    Stage,
    UnmaskReply,
    UnmaskRequest,
)
from fedkd.transport import Envelope, ExchangeResult, Scalar, Transport, broadcast, log_failures

# Envelope kinds of the stages (their Stage names), and the fields that carry them.
ADVERTISE = Stage.ADVERTISE.value
SHARE_KEYS = Stage.SHARE_KEYS.value
MASKED_INPUT = Stage.MASKED_INPUT.value
CONSISTENCY = Stage.CONSISTENCY.value  # rounds with a roster only
UNMASK = Stage.UNMASK.value
STAGES = (ADVERTISE, SHARE_KEYS, MASKED_INPUT, CONSISTENCY, UNMASK)
PAYLOAD = "payload"  # field: an encoded stage message
MASKED = "masked"  # array: a client's masked words, packed to the modulus' width (uint8)
ROUND = "round"  # field: the train round the stage belongs to
RIDING = "secagg-config"  # field: stage 1's request riding on another message (the train one)
TAGS = "tags"  # field (share keys, roster rounds): the peers' 32-byte key tags for this node
RECEIVE = "receive"  # field (share keys): this node's holders' receive keys (ReceiveKeys)
ACCUSED = "accused"  # field (masked input replies): the node's reports of bad shares

_M = TypeVar("_M")


@dataclass
class SecureOutcome:
    """The decoded sum, or why there is none, and what each exchange cost."""

    result: AggregateResult | None = None
    reason: str = ""
    exchanges: dict[str, ExchangeResult] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)  # node -> "stage: reason"
    server_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def survivors(self) -> tuple[int, ...]:
        return () if self.result is None else self.result.survivors


def stage_envelope(kind: str, payload: bytes, server_round: int) -> Envelope:
    """A server request of one stage."""
    return Envelope(kind, {PAYLOAD: payload, ROUND: server_round})


def payload_of(message: Envelope) -> bytes:
    """The encoded stage message of an envelope; ``KeyError`` names what is missing."""
    value = message.fields.get(PAYLOAD)
    if not isinstance(value, bytes):
        raise KeyError(f"'{message.kind}' message has no bytes field '{PAYLOAD}'")
    return value


def payload_limit(config: SecAggConfig, kind: str) -> int:
    """Largest reply payload (bytes) an honest client sends in stage ``kind``."""
    if kind == ADVERTISE:  # tags for every roster member: bounded, not by the round's size
        return (1 << 20) + 64 * config.neighbours
    depth = (config.neighbours + 1).bit_length()  # Merkle path hashes per holder
    per_holder = {SHARE_KEYS: 256 + 32 * depth, MASKED_INPUT: 64, CONSISTENCY: 64, UNMASK: 128}
    return 4096 + per_holder.get(kind, 0) * (config.neighbours + 1)


def masked_reply(node: int, message: Envelope, config: SecAggConfig) -> MaskedInput:
    """A masked-input reply: its words and its reports of bad shares (``ValueError`` if too big)."""
    raw = message.fields.get(ACCUSED, b"")
    if not isinstance(raw, bytes) or len(raw) > payload_limit(config, MASKED_INPUT):
        raise ValueError(f"'{ACCUSED}' must be bytes within the stage's size limit")
    reports = Accusations.from_bytes(raw) if raw else Accusations((), ())
    return MaskedInput(node, masked_words(message, config), reports.accused, reports.evidence)


def masked_words(message: Envelope, config: SecAggConfig) -> np.ndarray:
    """The ``uint64`` words of a masked-input reply, unpacked from the modulus' width."""
    array = message.arrays.get(MASKED)
    if not isinstance(array, np.ndarray):
        raise KeyError(f"'{message.kind}' reply has no array '{MASKED}'")
    return unpack_words(array, config.modulus_bits, config.vector_length)


class _Run:
    """One server-side run of the stages; keeps the outcome as it goes."""

    def __init__(
        self, transport: Transport, state: ServerState, timeout: float, group: str
    ) -> None:
        self.transport, self.state, self.timeout, self.group = transport, state, timeout, group
        self.outcome = SecureOutcome()

    def send(self, kind: str, requests: Mapping[int, Envelope]) -> ExchangeResult:
        result = self.transport.exchange(requests, timeout=self.timeout, group=self.group)
        self.outcome.exchanges[kind] = result
        return result

    def decode(
        self, kind: str, result: ExchangeResult, parse: Callable[[int, Envelope], _M]
    ) -> dict[int, _M]:
        """Parse each reply; a reply that fails to parse or names another node drops out."""
        decoded: dict[int, _M] = {}
        limit = payload_limit(self.state.config, kind)
        for node, reply in list(result.replies.items()):
            try:
                payload = reply.fields.get(PAYLOAD)
                if isinstance(payload, bytes) and len(payload) > limit:
                    raise ValueError(
                        f"{len(payload)} bytes, more than the {limit} the stage allows"
                    )
                message = parse(node, reply)
                claimed = getattr(message, "node_id", node)
                if claimed != node:
                    raise ValueError(f"reply claims to come from node {claimed}")
                decoded[node] = message
            except (
                SecAggError,
                KeyError,
                TypeError,
                ValueError,
                IndexError,
                AttributeError,
            ) as problem:
                result.drop(node, f"malformed {kind} reply: {problem}")
        for node, reason in result.failures.items():
            self.outcome.failed.setdefault(node, f"{kind}: {reason}")
        log_failures(result, kind)
        return decoded

    def server(self, kind: str, step: Callable[[], _M]) -> _M:
        start = time.perf_counter()
        try:
            return step()
        finally:
            seconds = time.perf_counter() - start
            self.outcome.server_seconds[kind] = self.outcome.server_seconds.get(kind, 0.0) + seconds
            for node, reason in self.state.rejected.items():
                self.outcome.failed.setdefault(node, f"{kind}: {reason}")

    # ---------------------------------------------------------------- stage 1: advertise
    def advertise(self, nodes: list[int]) -> dict[int, AdvertisedKeys]:
        request = server_advertise_request(self.state).to_bytes()
        round_ = self.state.config.round
        result = self.send(ADVERTISE, broadcast(nodes, stage_envelope(ADVERTISE, request, round_)))
        return self.advertised(result)

    def advertised(self, result: ExchangeResult) -> dict[int, AdvertisedKeys]:
        self.outcome.exchanges.setdefault(ADVERTISE, result)
        return self.decode(ADVERTISE, result, lambda n, m: AdvertisedKeys.from_bytes(payload_of(m)))

    # ---------------------------------------------------------------- stage 2: share keys
    def share_keys(self, advertised: dict[int, AdvertisedKeys]) -> dict[int, EncryptedShares]:
        request = self.server(
            ADVERTISE, lambda: server_collect_keys(self.state, list(advertised.values()))
        )
        message = stage_envelope(SHARE_KEYS, request.to_bytes(), self.state.config.round)
        nodes = sorted(self.state.advertised)
        receive = self.server(ADVERTISE, lambda: server_route_receive_keys(self.state))
        tags: Mapping[int, bytes] = {}
        if self.state.config.authenticated:
            tags = self.server(ADVERTISE, lambda: server_route_tags(self.state, request))
        requests = {}
        for v in nodes:
            fields = {**message.fields, RECEIVE: receive[v].to_bytes()}
            if v in tags:
                fields[TAGS] = tags[v]
            requests[v] = Envelope(SHARE_KEYS, fields)
        result = self.send(SHARE_KEYS, requests)
        return self.decode(
            SHARE_KEYS, result, lambda n, m: EncryptedShares.from_bytes(payload_of(m))
        )

    # ---------------------------------------------------------------- stage 3: masked input
    def masked_input(self, shares: dict[int, EncryptedShares]) -> dict[int, MaskedInput]:
        inbox = self.server(
            SHARE_KEYS, lambda: server_route_shares(self.state, list(shares.values()))
        )
        round_ = self.state.config.round
        requests = {
            node: stage_envelope(MASKED_INPUT, request.to_bytes(), round_)
            for node, request in inbox.items()
        }
        result = self.send(MASKED_INPUT, requests)
        config = self.state.config
        return self.decode(MASKED_INPUT, result, lambda n, m: masked_reply(n, m, config))

    # ---------------------------------------------------------------- stage 3b: consistency
    def consistency(self, masked: dict[int, MaskedInput]) -> dict[int, UnmaskRequest]:
        request = self.server(
            MASKED_INPUT, lambda: server_collect_masked(self.state, list(masked.values()))
        )
        if not self.state.config.authenticated:
            return {node: request for node in request.survivors}
        check = server_consistency_request(self.state)
        message = stage_envelope(CONSISTENCY, check.to_bytes(), self.state.config.round)
        result = self.send(CONSISTENCY, broadcast(list(check.survivors), message))
        signed = self.decode(
            CONSISTENCY, result, lambda n, m: ConsistencyReply.from_bytes(payload_of(m))
        )
        return self.server(
            CONSISTENCY, lambda: server_collect_signatures(self.state, list(signed.values()))
        )

    # ---------------------------------------------------------------- stage 4: unmask
    def unmask(self, requests: dict[int, UnmaskRequest]) -> AggregateResult:
        round_ = self.state.config.round
        encoded: dict[bytes, Envelope] = {}  # one envelope per distinct request
        messages = {}
        for node, request in requests.items():
            payload = request.to_bytes()
            messages[node] = encoded.setdefault(payload, stage_envelope(UNMASK, payload, round_))
        result = self.send(UNMASK, messages)
        revealed = self.decode(UNMASK, result, lambda n, m: UnmaskReply.from_bytes(payload_of(m)))
        return self.server(UNMASK, lambda: server_unmask(self.state, list(revealed.values())))


def secure_sum(
    transport: Transport,
    state: ServerState,
    *,
    timeout: float,
    advertised: ExchangeResult | None = None,
    group: str = "",
) -> SecureOutcome:
    """Run a secure-aggregation round over ``transport`` for ``state.config.participants``.

    Parameters
    ----------
    transport
        Carries the exchanges.
    state
        The server's state for this round: its config names the participants and the trust
        mode (``config.roster_digest``); for a roster round pass ``ServerState(config,
        roster=roster)`` so clients with bad keys or signatures are dropped before relaying
        (without it the clients still refuse them, but one bad client then fails the round).
    timeout
        Seconds per exchange.
    advertised
        Replies of a stage-1 exchange that already happened (the advertise payload riding on
        another message); ``None`` runs stage 1 as its own exchange.
    group
        Transport group id (Flower's message group).

    Returns
    -------
    SecureOutcome
        The sum (or the reason the round could not complete), per-stage exchanges and failures.
        A :class:`SecAggError` on the server side ends the round cleanly with its reason.
    """
    run = _Run(transport, state, timeout, group)
    try:
        if advertised is None:
            keys = run.advertise(list(state.config.participants))
        else:
            keys = run.advertised(advertised)
        shares = run.share_keys(keys)
        masked = run.masked_input(shares)
        run.outcome.result = run.unmask(run.consistency(masked))
    except SecAggError as problem:
        run.outcome.reason = f"secure aggregation aborted: {problem}"
    return run.outcome


def _tags(request: Envelope) -> tuple[bytes, ...]:
    raw = request.fields.get(TAGS, b"")
    if not isinstance(raw, bytes) or len(raw) % 32:
        return ()
    return tuple(raw[i : i + 32] for i in range(0, len(raw), 32))


def serve_stage(
    state: ClientState,
    request: Envelope,
    values: np.ndarray | None = None,
    noise_rng: np.random.Generator | None = None,
) -> Envelope:
    """Answer one stage's request on the client side.

    ``values`` is the client's contribution, needed (only) for the masked-input stage, and
    ``noise_rng`` draws its distributed-DP noise share (``None``: OS entropy).
    The trust mode and the freshness checks come from ``state``: build it as
    ``ClientState(node_id, identity=..., roster=..., expected_run=..., expected_round=...)``
    (identity and roster: the malicious-server mode; expected run/round: what the caller
    knows the current run and round to be). Refusals propagate as
    :class:`~fedkd.secagg.errors.RefusedRequest`.
    """
    payload = payload_of(request)
    kind = request.kind
    if kind == ADVERTISE:
        reply: bytes = client_advertise(state, AdvertiseRequest.from_bytes(payload)).to_bytes()
    elif kind == SHARE_KEYS:
        keys = ShareKeysRequest.from_bytes(payload)
        raw = request.fields.get(RECEIVE, b"")
        receive = ReceiveKeys.from_bytes(raw) if isinstance(raw, bytes) and raw else None
        reply = client_share_keys(state, keys, _tags(request), receive).to_bytes()
    elif kind == MASKED_INPUT:
        if values is None:
            raise ProtocolAbort("no contribution to mask on this node")
        masked = client_masked_input(
            state, MaskedInputRequest.from_bytes(payload), values, noise_rng
        )
        width = state.config.modulus_bits if state.config is not None else 64
        fields: dict[str, Scalar] = {}
        if masked.accused:
            fields[ACCUSED] = Accusations(masked.accused, masked.evidence).to_bytes()
        return Envelope(kind, fields, arrays={MASKED: pack_words(masked.masked, width)})
    elif kind == CONSISTENCY:
        reply = client_consistency(state, ConsistencyRequest.from_bytes(payload)).to_bytes()
    elif kind == UNMASK:
        reply = client_unmask(state, UnmaskRequest.from_bytes(payload)).to_bytes()
    else:
        raise KeyError(f"unknown secure-aggregation stage {kind!r}")
    return Envelope(kind, {PAYLOAD: reply})
