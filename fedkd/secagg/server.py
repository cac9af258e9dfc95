"""Server stage functions over an explicit :class:`ServerState`.

The server relays keys and ciphertexts, sums masked inputs as they arrive, and finally removes the
masks: survivors' self masks from their reconstructed seeds ``b``, and dropped clients' pairwise
masks from their reconstructed mask keys ``s_sk``. Each function checks what it receives and
raises :class:`ProtocolAbort` when the round can no longer complete (fewer than ``threshold``
clients, or a secret without ``threshold`` shares). Per-client request messages are returned as
``dict[node_id, message]``; the transport delivers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fedkd.secagg import crypto, shamir
from fedkd.secagg.client import self_mask_commitment
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import ProtocolAbort
from fedkd.secagg.masking import MaskExpander, pair_adds
from fedkd.secagg.wire import (
    AdvertisedKeys,
    AdvertiseRequest,
    EncryptedShares,
    MaskedInput,
    MaskedInputRequest,
    ShareKeysRequest,
    UnmaskReply,
    UnmaskRequest,
)


@dataclass
class ServerState:
    """What the server knows about one round.

    Attributes
    ----------
    config : SecAggConfig
        The round's configuration.
    advertised : dict[int, AdvertisedKeys]
        Stage-1 answers (the set U1).
    shares : dict[int, EncryptedShares]
        Stage-2 answers (the set U2).
    masked_sum : np.ndarray | None
        Running ``uint64`` sum of the masked inputs received (stage 3).
    survivors : tuple[int, ...]
        Clients whose masked input arrived (U3).
    dropped : tuple[int, ...]
        Clients of U2 whose masked input did not arrive.
    self_mask_shares, key_shares : dict[int, dict[int, int]]
        Shares received in stage 4: ``owner -> {holder: share}``.
    """

    config: SecAggConfig
    advertised: dict[int, AdvertisedKeys] = field(default_factory=dict)
    shares: dict[int, EncryptedShares] = field(default_factory=dict)
    masked_sum: np.ndarray | None = None
    survivors: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    self_mask_shares: dict[int, dict[int, int]] = field(default_factory=dict)
    key_shares: dict[int, dict[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class AggregateResult:
    """Outcome of a round: the exact modular sum and its decoding."""

    quantized_sum: np.ndarray  # (d,) uint64
    total: np.ndarray  # (d,) float64 sum of the survivors' clipped inputs
    mean: np.ndarray  # (d,) float64
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]


def server_advertise_request(state: ServerState) -> AdvertiseRequest:
    """Stage 1 request: the configuration every participant receives."""
    return AdvertiseRequest(state.config)


def _require_neighbourhoods(config: SecAggConfig, present: set[int], stage: str) -> None:
    if len(present) < config.threshold:
        raise ProtocolAbort(
            f"only {len(present)} clients answered the {stage} stage, fewer than "
            f"the threshold {config.threshold}; the round cannot complete"
        )
    for node in sorted(present):
        holders = present.intersection(config.holders_of(node))
        if len(holders) < config.threshold:
            raise ProtocolAbort(
                f"client {node} has only {len(holders)} share holders left after "
                f"the {stage} stage, fewer than the threshold {config.threshold}"
            )


def server_collect_keys(state: ServerState, replies: Sequence[AdvertisedKeys]) -> ShareKeysRequest:
    """Stage 1 -> 2: record the advertised keys and broadcast them.

    Raises
    ------
    ProtocolAbort
        On duplicate or unknown senders, a config digest unlike the server's, or too few clients.
    """
    config, digest = state.config, state.config.digest()
    for reply in replies:
        if reply.node_id not in config.participants or reply.node_id in state.advertised:
            raise ProtocolAbort(f"unexpected or repeated keys from client {reply.node_id}")
        if reply.config_digest != digest:
            raise ProtocolAbort(
                f"client {reply.node_id} holds a different configuration "
                "(config digest differs from the server's)"
            )
        state.advertised[reply.node_id] = reply
    _require_neighbourhoods(config, set(state.advertised), "advertise")
    return ShareKeysRequest(tuple(state.advertised[v] for v in sorted(state.advertised)))


def server_route_shares(
    state: ServerState, replies: Sequence[EncryptedShares]
) -> dict[int, MaskedInputRequest]:
    """Stage 2 -> 3: forward to each client the ciphertexts addressed to it.

    Returns
    -------
    dict[int, MaskedInputRequest]
        One request per client that sent its shares (U2).
    """
    config = state.config
    for reply in replies:
        sender = reply.node_id
        if sender not in state.advertised or sender in state.shares:
            raise ProtocolAbort(f"unexpected or repeated shares from client {sender}")
        allowed = set(config.neighbours_of(sender)) & set(state.advertised)
        if not set(reply.recipients) <= allowed or len(set(reply.recipients)) != len(
            reply.recipients
        ):
            raise ProtocolAbort(f"client {sender} addressed shares outside its neighbourhood")
        state.shares[sender] = reply
    present = set(state.shares)
    _require_neighbourhoods(config, present, "share")
    inbox: dict[int, tuple[list[int], list[bytes]]] = {v: ([], []) for v in sorted(present)}
    for sender in sorted(present):
        reply = state.shares[sender]
        for recipient, sealed in zip(reply.recipients, reply.ciphertexts, strict=True):
            if recipient in inbox:
                inbox[recipient][0].append(sender)
                inbox[recipient][1].append(sealed)
    return {v: MaskedInputRequest(tuple(s), tuple(c)) for v, (s, c) in inbox.items()}


def server_collect_masked(state: ServerState, replies: Sequence[MaskedInput]) -> UnmaskRequest:
    """Stage 3 -> 4: add the masked inputs and announce survivors and dropped clients.

    Returns
    -------
    UnmaskRequest
        The same request for every survivor.
    """
    config = state.config
    if state.masked_sum is None:
        state.masked_sum = np.zeros(config.vector_length, dtype=np.uint64)
    arrived = set(state.survivors)
    for reply in replies:
        if reply.node_id not in state.shares or reply.node_id in arrived:
            raise ProtocolAbort(f"unexpected or repeated masked input from client {reply.node_id}")
        if reply.masked.dtype != np.uint64 or reply.masked.shape != (config.vector_length,):
            raise ProtocolAbort(
                f"client {reply.node_id} sent a masked input of dtype "
                f"{reply.masked.dtype} and shape {reply.masked.shape}"
            )
        np.add(state.masked_sum, reply.masked, out=state.masked_sum)
        arrived.add(reply.node_id)
    if len(arrived) < config.threshold:
        raise ProtocolAbort(
            f"only {len(arrived)} masked inputs arrived, fewer than the threshold "
            f"{config.threshold}; the round cannot complete"
        )
    state.survivors = tuple(sorted(arrived))
    state.dropped = tuple(sorted(set(state.shares) - arrived))
    return UnmaskRequest(state.survivors, state.dropped)


def _record_reply(state: ServerState, reply: UnmaskReply) -> None:
    config, holder = state.config, reply.node_id
    if holder not in state.survivors:
        raise ProtocolAbort(f"unmask reply from client {holder}, who is not a survivor")
    pairs = [
        (o, s, state.self_mask_shares, state.survivors)
        for o, s in zip(reply.self_mask_owners, reply.self_mask_shares, strict=True)
    ]
    pairs += [
        (o, s, state.key_shares, state.dropped)
        for o, s in zip(reply.key_owners, reply.key_shares, strict=True)
    ]
    for owner, share, store, expected in pairs:
        if owner not in expected or holder not in config.holders_of(owner):
            raise ProtocolAbort(f"client {holder} sent a share of client {owner} it cannot hold")
        try:
            store.setdefault(owner, {})[holder] = shamir.share_from_bytes(share)
        except ValueError as error:
            raise ProtocolAbort(f"client {holder} sent a malformed share: {error}") from None


def _reconstruct(config: SecAggConfig, owner: int, shares: dict[int, int], what: str) -> bytes:
    if len(shares) < config.threshold:
        raise ProtocolAbort(
            f"only {len(shares)} shares of client {owner}'s {what} arrived, fewer "
            f"than the threshold {config.threshold}; the round cannot complete"
        )
    holders = sorted(shares)[: config.threshold]
    return shamir.combine_shares([config.share_x(h) for h in holders], [shares[h] for h in holders])


def server_unmask(state: ServerState, replies: Sequence[UnmaskReply]) -> AggregateResult:
    """Stage 4: reconstruct the secrets, strip the masks and decode the sum.

    Raises
    ------
    ProtocolAbort
        When a needed secret has fewer than ``threshold`` shares, or a reconstructed secret
        contradicts its commitment (self-mask seed) or its advertised public key (mask key).
    """
    config = state.config
    if state.masked_sum is None:
        raise ProtocolAbort("server_unmask called before any masked input was collected")
    for reply in replies:
        _record_reply(state, reply)
    context, expander = config.key_context(), MaskExpander(config.vector_length)
    total = state.masked_sum.copy()
    for owner in state.survivors:
        seed = _reconstruct(config, owner, state.self_mask_shares.get(owner, {}), "self-mask seed")
        if self_mask_commitment(context, owner, seed) != state.shares[owner].self_mask_commitment:
            raise ProtocolAbort(
                f"the reconstructed self-mask seed of client {owner} does not "
                "match its commitment (a holder sent a wrong share)"
            )
        expander.add(total, seed, subtract=True, self_mask=True)
    survivors = set(state.survivors)
    for owner in state.dropped:
        partners = [w for w in config.neighbours_of(owner) if w in survivors]
        if not partners:
            continue
        private = _reconstruct(config, owner, state.key_shares.get(owner, {}), "mask key")
        if crypto.public_from_private(private) != state.advertised[owner].mask_public:
            raise ProtocolAbort(
                f"the reconstructed mask key of client {owner} does not match "
                "its advertised public key (a holder sent a wrong share)"
            )
        loaded = crypto.load_private(private)
        for partner in partners:
            secret = crypto.agree(loaded, state.advertised[partner].mask_public)
            seed = crypto.derive_key(
                secret, label=crypto.MASK_SEED_LABEL, context=context, first=owner, second=partner
            )
            expander.add(total, seed, subtract=pair_adds(partner, owner))
    quantizer, count = config.quantizer, len(state.survivors)
    return AggregateResult(
        total,
        quantizer.decode_sum(total, count),
        quantizer.decode_mean(total, count),
        state.survivors,
        state.dropped,
    )
