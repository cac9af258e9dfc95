"""Server stage functions over an explicit :class:`ServerState`.

The server relays keys and ciphertexts, sums masked inputs as they arrive, certifies one
survivor set (with a roster) and finally removes the masks (:mod:`fedkd.secagg.server_unmask`).
What one client sends never ends the round: a duplicated, unknown, spoofed, malformed or
inconsistent reply makes that client a dropout (``state.rejected`` keeps the reason). Each
function raises :class:`ProtocolAbort` only when the clients left cannot complete the round
(fewer than ``threshold`` in some neighbourhood, too few signatures, a secret without
``threshold`` good shares). Per-client requests are returned as ``dict[node_id, message]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedkd.secagg import auth, crypto, shamir
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import ProtocolAbort
from fedkd.secagg.server_state import AggregateResult, ServerState
from fedkd.secagg.server_unmask import server_unmask
from fedkd.secagg.wire import (
    AdvertisedKeys,
    AdvertiseRequest,
    ConsistencyReply,
    ConsistencyRequest,
    EncryptedShares,
    MaskedInput,
    MaskedInputRequest,
    ShareKeysRequest,
    UnmaskRequest,
)

__all__ = [
    "AggregateResult",
    "ServerState",
    "server_advertise_request",
    "server_collect_keys",
    "server_collect_masked",
    "server_collect_signatures",
    "server_consistency_request",
    "server_route_shares",
    "server_route_tags",
    "server_unmask",
]

SEALED_BYTES = crypto.NONCE_BYTES + 2 * shamir.SHARE_BYTES + 16  # one encrypted share bundle


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


def _key_problem(state: ServerState, reply: AdvertisedKeys) -> str | None:
    config = state.config
    if reply.node_id not in config.participants:
        return f"keys from client {reply.node_id}, who is not a participant"
    if reply.node_id in state.advertised:
        return f"repeated keys from client {reply.node_id}"
    if reply.config_digest != config.digest():
        return "a different configuration (config digest differs from the server's)"
    if len(reply.cipher_public) != 32 or len(reply.mask_public) != 32:
        return "public keys that are not 32 bytes"
    return None


def server_collect_keys(state: ServerState, replies: Sequence[AdvertisedKeys]) -> ShareKeysRequest:
    """Stage 1 -> 2: record the advertised keys and broadcast them.

    A duplicated, unknown or mis-configured sender, and (when the server holds the roster) an
    unsigned, forged or duplicated identity, is dropped.

    Raises
    ------
    ProtocolAbort
        When fewer clients than the threshold remain in some neighbourhood.
    """
    accepted: list[AdvertisedKeys] = []
    for reply in replies:
        problem = _key_problem(state, reply)
        if problem is not None:
            state.reject(reply.node_id, problem)
            continue
        state.advertised[reply.node_id] = reply
        accepted.append(reply)
    if state.roster is not None:
        for node, reason in auth.check_advertised(state.roster, accepted).items():
            state.reject(node, reason)
            del state.advertised[node]
    _require_neighbourhoods(state.config, set(state.advertised), "advertise")
    return ShareKeysRequest(tuple(state.advertised[v] for v in sorted(state.advertised)))


def server_route_tags(state: ServerState, request: ShareKeysRequest) -> dict[int, bytes]:
    """Per recipient, the tags its peers addressed to it, aligned with ``request.keys``.

    Each value is the concatenation of 32-byte tags (zeros where a peer sent none); the
    recipient checks them and falls back to signatures (:mod:`fedkd.secagg.client_auth`).
    """
    by_owner = [dict(zip(k.tag_names, k.tags, strict=True)) for k in request.keys]
    missing = bytes(32)
    routed = {}
    for keys in request.keys:
        name = state.advertised[keys.node_id].identity
        routed[keys.node_id] = b"".join(tags.get(name, missing) for tags in by_owner)
    return routed


def _shares_problem(state: ServerState, reply: EncryptedShares) -> str | None:
    sender = reply.node_id
    if sender not in state.advertised or sender in state.shares:
        return f"unexpected or repeated shares from client {sender}"
    allowed = set(state.config.neighbours_of(sender)) & set(state.advertised)
    if not set(reply.recipients) <= allowed or len(set(reply.recipients)) != len(reply.recipients):
        return f"client {sender} addressed shares outside its neighbourhood"
    if any(len(c) != SEALED_BYTES for c in reply.ciphertexts):
        return f"client {sender} sent ciphertexts that are not {SEALED_BYTES} bytes"
    if len(reply.share_commitments) != 2 * len(reply.holders) or any(
        len(c) != 32 for c in (*reply.share_commitments, reply.self_mask_commitment)
    ):
        return f"client {sender} sent malformed commitments"
    return None


def server_route_shares(
    state: ServerState, replies: Sequence[EncryptedShares]
) -> dict[int, MaskedInputRequest]:
    """Stage 2 -> 3: forward to each client the ciphertexts addressed to it.

    Returns
    -------
    dict[int, MaskedInputRequest]
        One request per client that sent its shares (U2).
    """
    for reply in replies:
        problem = _shares_problem(state, reply)
        if problem is not None:
            state.reject(reply.node_id, problem)
        else:
            state.shares[reply.node_id] = reply
    present = set(state.shares)
    _require_neighbourhoods(state.config, present, "share")
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

    A repeated, unexpected, wrong-length or non-``uint64`` masked input is dropped (its
    sender then counts as dropped before stage 3).

    Returns
    -------
    UnmaskRequest
        The same request for every survivor (without signatures).
    """
    config = state.config
    if state.masked_sum is None:
        state.masked_sum = np.zeros(config.vector_length, dtype=np.uint64)
    arrived = set(state.survivors)
    for reply in replies:
        masked = reply.masked
        if reply.node_id not in state.shares or reply.node_id in arrived:
            state.reject(reply.node_id, f"unexpected or repeated masked input from {reply.node_id}")
        elif (
            not isinstance(masked, np.ndarray)
            or masked.dtype != np.uint64
            or masked.shape != (config.vector_length,)
        ):
            what = f"{masked.dtype} {masked.shape}" if isinstance(masked, np.ndarray) else "?"
            state.reject(reply.node_id, f"a masked input of dtype/shape {what}")
        else:
            np.add(state.masked_sum, masked, out=state.masked_sum)
            arrived.add(reply.node_id)
    if len(arrived) < config.threshold:
        raise ProtocolAbort(
            f"only {len(arrived)} masked inputs arrived, fewer than the threshold "
            f"{config.threshold}; the round cannot complete"
        )
    state.survivors = tuple(sorted(arrived))
    state.dropped = tuple(sorted(set(state.shares) - arrived))
    return UnmaskRequest(state.survivors, state.dropped)


def server_consistency_request(state: ServerState) -> ConsistencyRequest:
    """Stage 3b request (rounds with a roster): the survivor set every survivor signs."""
    return ConsistencyRequest(state.survivors)


def server_collect_signatures(
    state: ServerState, replies: Sequence[ConsistencyReply]
) -> dict[int, UnmaskRequest]:
    """Stage 3b -> 4: relay the survivors' signatures (and tags) of the survivor set.

    A signature that does not verify (checked when the server holds the roster) is not
    relayed, nor are its signer's tags; its signer stays a survivor (its masked input is in
    the sum).

    Returns
    -------
    dict[int, UnmaskRequest]
        One request per survivor: the lists, every signature, and the tags addressed to it.

    Raises
    ------
    ProtocolAbort
        When fewer than ``config.consistency_quorum`` signatures remain: no honest client
        would unmask.
    """
    config, members = state.config, set(state.survivors)
    message = auth.survivors_message(config, state.survivors)
    for reply in replies:
        node = reply.node_id
        keys = state.advertised.get(node)
        if node not in members or node in state.signatures or keys is None:
            continue  # not a survivor, or a second signature: nothing to relay
        if state.roster is None or state.roster.verifies(keys.identity, message, reply.signature):
            state.signatures[node] = reply.signature
            for recipient, tag in zip(reply.recipients, reply.tags, strict=True):
                if recipient in members:
                    state.tags.setdefault(recipient, {})[node] = tag
    if len(state.signatures) < config.consistency_quorum:
        raise ProtocolAbort(
            f"only {len(state.signatures)} clients signed the survivor set, fewer than the "
            f"quorum {config.consistency_quorum}; no honest client would unmask"
        )
    signers = tuple(sorted(state.signatures))
    signatures = tuple(state.signatures[v] for v in signers)
    requests = {}
    for node in state.survivors:
        tags = state.tags.get(node, {})
        taggers = tuple(sorted(tags))
        requests[node] = UnmaskRequest(
            state.survivors,
            state.dropped,
            signers,
            signatures,
            taggers,
            tuple(tags[v] for v in taggers),
        )
    return requests
