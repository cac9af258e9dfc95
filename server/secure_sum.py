"""Drive ``fedkd.secagg`` over Flower messages: the three exchanges after the train message.

Stage 1 (advertise keys) rides on the round's ``train`` message, so a secure round costs four
exchanges in all: train+advertise, share keys, masked input, unmask. The server only ever
holds public keys, ciphertexts it cannot open, masked vectors and the decoded sum.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedkd.fl import keys
from fedkd.fl.config import FedConfig
from fedkd.secagg import (
    AggregateResult,
    SecAggConfig,
    SecAggError,
    ServerState,
    majority_threshold,
    server_collect_keys,
    server_collect_masked,
    server_route_shares,
    server_unmask,
)
from fedkd.secagg.wire import AdvertisedKeys, EncryptedShares, MaskedInput, UnmaskReply
from server.messaging import Exchange, exchange

log = logging.getLogger("fedkd.server")


def quantization_bits(num_clients: int) -> int:
    """Bits per value so that ``num_clients`` values sum below 2**64 with room to spare."""
    return min(48, 63 - math.ceil(math.log2(num_clients + 1)))


def secagg_config(
    config: FedConfig,
    *,
    run_id: int,
    server_round: int,
    participants: list[int],
    vector_length: int,
    public_digest: bytes,
) -> SecAggConfig:
    """The round's public secure-aggregation parameters (identical for every participant)."""
    n = len(participants)
    neighbours = n - 1 if config.secagg_neighbours <= 0 else min(config.secagg_neighbours, n - 1)
    threshold = max(
        majority_threshold(neighbours), math.ceil(config.secagg_threshold * (neighbours + 1))
    )
    return SecAggConfig(
        run_id=run_id,
        round=server_round,
        participants=tuple(participants),
        threshold=min(threshold, neighbours + 1),
        neighbours=neighbours,
        clip=config.secagg_clip,
        vector_length=vector_length,
        bits=quantization_bits(n),
        public_set_digest=public_digest,
        graph_seed=config.seed,
    )


@dataclass
class SecureOutcome:
    """The decoded sum, or why there is none, and the cost of getting it."""

    result: AggregateResult | None
    reason: str = ""
    exchanges: list[Exchange] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)  # node -> stage and reason


def _payload(message: Message) -> bytes:
    return bytes(message.content[keys.SECAGG][keys.PAYLOAD])


def _secagg_content(payload: bytes, server_round: int) -> RecordDict:
    return RecordDict(
        {
            keys.SECAGG: ConfigRecord({keys.PAYLOAD: payload}),
            keys.CONFIG: ConfigRecord({keys.ROUND: server_round}),
        }
    )


def _decode(
    ex: Exchange, decode: Callable[[int, Message], object], stage: str
) -> dict[int, object]:
    """Decode each reply; a reply that does not parse counts as that node dropping out."""
    decoded: dict[int, object] = {}
    for node, message in ex.replies.items():
        try:
            decoded[node] = decode(node, message)
        except (SecAggError, KeyError, TypeError, ValueError) as problem:
            ex.failures[node] = f"malformed {stage} reply: {problem}"
            log.warning("node %s: malformed %s reply: %s", node, stage, problem)
    return decoded


def secure_sum(
    grid: Grid,
    state: ServerState,
    train: Exchange,
    *,
    config: FedConfig,
    server_round: int,
) -> SecureOutcome:
    """Finish a secure round whose ``train`` replies (stage 1) are in ``train``.

    Any ``SecAggError`` (too few survivors, an inconsistent reply) ends the round cleanly with
    the reason; nothing is decoded then.
    """
    outcome = SecureOutcome(result=None, exchanges=[train])
    group = f"round-{server_round}"

    def note_failures(ex: Exchange, stage: str) -> None:
        for node, reason in ex.failures.items():
            outcome.failed.setdefault(node, f"{stage}: {reason}")

    try:
        advertised = _decode(
            train, lambda n, m: AdvertisedKeys.from_bytes(_payload(m)), "advertise"
        )
        note_failures(train, "train")
        share_request = server_collect_keys(state, list(advertised.values()))  # type: ignore[arg-type]
        request_bytes = share_request.to_bytes()
        shares_ex = exchange(
            grid,
            sorted(advertised),
            keys.QUERY_SHARE_KEYS,
            lambda node: _secagg_content(request_bytes, server_round),
            timeout=config.stage_timeout,
            group_id=group,
        )
        outcome.exchanges.append(shares_ex)
        shares = _decode(shares_ex, lambda n, m: EncryptedShares.from_bytes(_payload(m)), "share")
        note_failures(shares_ex, "share")
        inbox = server_route_shares(state, list(shares.values()))  # type: ignore[arg-type]
        masked_ex = exchange(
            grid,
            sorted(inbox),
            keys.QUERY_MASKED_INPUT,
            lambda node: _secagg_content(inbox[node].to_bytes(), server_round),
            timeout=config.stage_timeout,
            group_id=group,
        )
        outcome.exchanges.append(masked_ex)
        masked = _decode(
            masked_ex,
            lambda n, m: MaskedInput(n, m.content[keys.MASKED].to_numpy_ndarrays()[0]),
            "masked input",
        )
        note_failures(masked_ex, "mask")
        unmask_request = server_collect_masked(state, list(masked.values()))  # type: ignore[arg-type]
        unmask_bytes = unmask_request.to_bytes()
        unmask_ex = exchange(
            grid,
            list(unmask_request.survivors),
            keys.QUERY_UNMASK,
            lambda node: _secagg_content(unmask_bytes, server_round),
            timeout=config.stage_timeout,
            group_id=group,
        )
        outcome.exchanges.append(unmask_ex)
        revealed = _decode(unmask_ex, lambda n, m: UnmaskReply.from_bytes(_payload(m)), "unmask")
        note_failures(unmask_ex, "unmask")
        outcome.result = server_unmask(state, list(revealed.values()))  # type: ignore[arg-type]
    except SecAggError as problem:
        outcome.reason = f"secure aggregation aborted: {problem}"
        log.warning("round %d: %s", server_round, outcome.reason)
    return outcome
