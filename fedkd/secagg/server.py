"""Server stage functions over an explicit :class:`ServerState`: stages 1 and 2.

The server relays keys and ciphertexts, sums masked inputs as they arrive, certifies one
survivor set (with a roster) and finally removes the masks. Stages 3 and 3b are in
:mod:`fedkd.secagg.server_masked`, stage 4 in :mod:`fedkd.secagg.server_unmask`; this module
re-exports them. What one client sends never ends the round: a duplicated, unknown, spoofed,
malformed or inconsistent reply, an unusable (low-order) or copied key, makes that client a
dropout (``state.rejected`` keeps the reason). Each function raises :class:`ProtocolAbort` only
when the clients left cannot complete the round (fewer than ``threshold`` in some
neighbourhood, a secret without ``threshold`` good shares). Per-client requests are returned as
``dict[node_id, message]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import fedkd.secagg.auth as auth
import fedkd.secagg.crypto as crypto
import fedkd.secagg.merkle as merkle
import fedkd.secagg.shamir as shamir
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import ProtocolAbort
from fedkd.secagg.identity import SIGNATURE_BYTES
from fedkd.secagg.server_masked import (
    server_collect_masked,
    server_collect_signatures,
    server_consistency_request,
)
from fedkd.secagg.server_state import AggregateResult, ServerState
from fedkd.secagg.server_unmask import server_unmask
from fedkd.secagg.wire import (
    AdvertisedKeys,
    AdvertiseRequest,
    EncryptedShares,
    MaskedInputRequest,
    ReceiveKeys,
    ShareKeysRequest,
    Stage,
)

__all__ = [
    "AggregateResult",
    "ServerState",
    "server_advertise_request",
    "server_collect_keys",
    "server_collect_masked",
    "server_collect_signatures",
    "server_consistency_request",
    "server_route_receive_keys",
    "server_route_shares",
    "server_route_tags",
    "server_unmask",
]

SEALED_BYTES = crypto.NONCE_BYTES + 2 * shamir.SHARE_BYTES + 16  # one encrypted share bundle


def server_advertise_request(state: ServerState) -> AdvertiseRequest:
    """Stage 1 request: the configuration, and the server's key of the round for proofs of
    possession (kept in ``state.pop_private`` to settle copied keys)."""
    if not state.pop_private:
        state.pop_private = crypto.generate_keypair().private
    return AdvertiseRequest(state.config, crypto.public_from_private(state.pop_private))


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
    if crypto.is_low_order(reply.cipher_public) or crypto.is_low_order(reply.mask_public):
        return "public keys that are not 32 bytes or of low order"
    count = len(config.neighbours_of(reply.node_id))
    if len(reply.receive_publics) != count or len(reply.receive_paths) != count:
        return "receive keys or their paths missing or extra"
    if any(crypto.is_low_order(k) for k in reply.receive_publics):
        return "receive keys that are not 32 bytes or of low order"
    return None


def _drop_copies(state: ServerState, accepted: list[AdvertisedKeys]) -> list[AdvertisedKeys]:
    """Of clients advertising one public key, keep those proving they hold it (first only)."""
    claims: dict[bytes, list[int]] = {}
    for keys in accepted:
        for public in {keys.cipher_public, keys.mask_public}:
            claims.setdefault(public, []).append(keys.node_id)
    shared = {node for nodes in claims.values() if len(nodes) > 1 for node in nodes}
    if not shared:
        return accepted
    by_id = {k.node_id: k for k in accepted}
    proven = {
        v for v in shared if state.pop_private and auth.possesses(state.pop_private, by_id[v])
    }
    dropped: set[int] = set()
    for nodes in claims.values():
        if len(nodes) < 2:
            continue
        keep = next((v for v in nodes if v in proven), None)
        for node in nodes:
            if node != keep and node not in dropped:
                dropped.add(node)
                state.reject(
                    node,
                    "advertised a public key another client advertised too, without proving "
                    "it holds the private key",
                )
    return [k for k in accepted if k.node_id not in dropped]


def server_collect_keys(state: ServerState, replies: Sequence[AdvertisedKeys]) -> ShareKeysRequest:
    """Stage 1 -> 2: record the advertised keys and broadcast them.

    A duplicated, unknown or mis-configured sender, unusable keys, a client that copied
    another's key (it cannot prove possession), and (when the server holds the roster) an
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
        accepted = [k for k in accepted if k.node_id in state.advertised]
    kept = {k.node_id for k in _drop_copies(state, accepted)}
    state.advertised = {v: k for v, k in state.advertised.items() if v in kept}
    _require_neighbourhoods(state.config, set(state.advertised), Stage.ADVERTISE.value)
    return ShareKeysRequest(tuple(state.advertised[v] for v in sorted(state.advertised)))


def server_route_tags(state: ServerState, request: ShareKeysRequest) -> dict[int, bytes]:
    """Per recipient, the key tags its peers addressed to it, aligned with ``request.keys``.

    Each value is the concatenation of 32-byte tags (zeros where a peer sent none); the
    recipient checks them and falls back to signatures (:mod:`fedkd.secagg.client_auth`).
    """
    by_owner = [
        dict(
            zip(
                state.advertised[k.node_id].tag_names, state.advertised[k.node_id].tags, strict=True
            )
        )
        for k in request.keys
    ]
    missing = bytes(32)
    routed = {}
    for keys in request.keys:
        name = state.advertised[keys.node_id].identity
        routed[keys.node_id] = b"".join(tags.get(name, missing) for tags in by_owner)
    return routed


def server_route_receive_keys(state: ServerState) -> dict[int, ReceiveKeys]:
    """Per client, each of its share holders' receive key for it with the path the holder
    sent along (relayed as is: the client checks it against the root the holder signed)."""
    config, present = state.config, set(state.advertised)
    position = {v: {w: i for i, w in enumerate(config.neighbours_of(v))} for v in present}
    routed = {}
    for sender in sorted(present):
        holders = [w for w in config.neighbours_of(sender) if w in present]
        advertised = [state.advertised[w] for w in holders]
        index = [position[w][sender] for w in holders]
        routed[sender] = ReceiveKeys(
            tuple(holders),
            tuple(k.receive_publics[i] for k, i in zip(advertised, index, strict=True)),
            tuple(k.receive_paths[i] for k, i in zip(advertised, index, strict=True)),
        )
    return routed


def _shares_problem(state: ServerState, reply: EncryptedShares) -> str | None:
    sender, config = reply.node_id, state.config
    if sender not in state.advertised or sender in state.shares:
        return f"unexpected or repeated shares from client {sender}"
    expected = tuple(v for v in config.neighbours_of(sender) if v in state.advertised)
    addressed = tuple(v for v in expected if v not in set(reply.unverified))
    if reply.recipients != addressed or not set(reply.unverified) <= set(expected):
        return f"client {sender} did not address its shares to exactly its neighbours"
    if any(len(c) != SEALED_BYTES for c in reply.ciphertexts):
        return f"client {sender} sent ciphertexts of the wrong size"
    commitments = reply.share_commitments
    if len(commitments) != 2 * len(reply.holders) or any(len(c) != 32 for c in commitments):
        return f"client {sender} sent the wrong number of share commitments"
    if len(reply.self_mask_commitment) != 32:
        return f"client {sender} sent a self-mask commitment of the wrong size"
    wanted = SIGNATURE_BYTES if config.authenticated else 0
    if len(reply.signature) != wanted:
        return f"client {sender} sent a ciphertext signature of {len(reply.signature)} bytes"
    if config.authenticated and len(reply.paths) != len(reply.recipients):
        return f"client {sender} sent {len(reply.paths)} ciphertext paths"
    return None


def _judge_receive_reports(state: ServerState) -> dict[int, str]:
    """Who lied in each report of a receive key that did not match its owner's root: the
    owner when the key and path it sent do not lead to the root it signed, else the reporter."""
    config, liars = state.config, dict[int, str]()
    for reporter, reply in state.shares.items():
        for owner in reply.unverified:
            keys = state.advertised[owner]
            index = config.neighbours_of(owner).index(reporter)
            leaf = auth.receive_leaf(owner, reporter, keys.receive_publics[index])
            count = len(config.neighbours_of(owner))
            if merkle.verify(keys.receive_root, count, index, leaf, keys.receive_paths[index]):
                liars.setdefault(reporter, f"reported client {owner}'s valid receive key")
            else:
                liars.setdefault(owner, f"sent a receive key for client {reporter} off its root")
    return liars


def server_route_shares(
    state: ServerState, replies: Sequence[EncryptedShares]
) -> dict[int, MaskedInputRequest]:
    """Stage 2 -> 3: route each ciphertext, with its commitments, to its recipient.

    With a roster each also carries its sender's signature and the Merkle path the sender
    sent along: what a recipient needs to prove a bad ciphertext came from its sender. A
    sender that did not address exactly its neighbours, or sent malformed ciphertexts or
    commitments, is dropped.

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
    for liar, reason in _judge_receive_reports(state).items():
        state.reject(liar, reason)
        state.shares.pop(liar, None)
    present = set(state.shares)
    _require_neighbourhoods(state.config, present, Stage.SHARE_KEYS.value)
    signed = state.config.authenticated
    inbox: dict[int, list[tuple[int, bytes, bytes, bytes, bytes]]] = {
        v: [] for v in sorted(present)
    }
    for sender in sorted(present):
        reply = state.shares[sender]
        for index, (recipient, sealed) in enumerate(
            zip(reply.recipients, reply.ciphertexts, strict=True)
        ):
            if recipient in inbox:
                path = reply.paths[index] if signed else b""
                entry = (sender, sealed, reply.commitments_for(index), reply.signature, path)
                inbox[recipient].append(entry)
    requests = {}
    for recipient, entries in inbox.items():
        requests[recipient] = MaskedInputRequest(
            tuple(e[0] for e in entries),
            tuple(e[1] for e in entries),
            tuple(e[2] for e in entries),
            tuple(e[3] for e in entries) if signed else (),
            tuple(e[4] for e in entries) if signed else (),
        )
        state.routed[recipient] = frozenset(requests[recipient].senders)
    return requests
