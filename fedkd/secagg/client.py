"""Client stages 1 and 2 (advertise, share keys), each over an explicit :class:`ClientState`.

Stage 3 is :mod:`fedkd.secagg.client_masked`, stages 3b and 4 :mod:`fedkd.secagg.client_unmask`.
Each function checks the request before doing anything secret; a failed check raises a
:class:`~fedkd.secagg.errors.RefusedRequest` and spends the round
(:mod:`fedkd.secagg.client_checks`). Only what would put this client's input at risk is
refused: a list the server got wrong or altered. What another client did wrong (a copied or
unusable key, a bad ciphertext) is the server's to drop, or this client's to report (stage 3).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import fedkd.secagg.auth as auth
import fedkd.secagg.client_auth as client_auth
import fedkd.secagg.crypto as crypto
import fedkd.secagg.merkle as merkle
import fedkd.secagg.shamir as shamir
from fedkd.secagg.client_checks import (
    check_fresh,
    expect_stage,
    refusals,
    self_mask_commitment,
)
from fedkd.secagg.client_state import ClientState, HeldShares
from fedkd.secagg.errors import (
    AuthenticationFailure,
    ConfigMismatch,
    InconsistentLists,
    TooFewSurvivors,
    UnknownPeer,
)
from fedkd.secagg.message import Stage
from fedkd.secagg.wire import (
    AdvertisedKeys,
    AdvertiseRequest,
    EncryptedShares,
    ReceiveKeys,
    ShareKeysRequest,
)

__all__ = ["client_advertise", "client_share_keys", "self_mask_commitment"]


def client_advertise(state: ClientState, request: AdvertiseRequest) -> AdvertisedKeys:
    """Stage 1: start a round with fresh key pairs and advertise their public halves.

    Besides the cipher and mask keys, a client makes one receive key per neighbour of the
    graph (each neighbour encrypts its shares to its own one) and, when the server sent its
    key of the round, proves it holds the private halves.

    Raises
    ------
    ReplayedRequest
        When this client already sent a masked input for (or refused) this (run_id, round).
    UnknownPeer
        When this client is not among the participants.
    AuthenticationFailure
        When the server's key of the round is unusable (low order).
    """
    config = request.config
    check_fresh(state, config)
    if state.node_id not in config.participants:
        raise UnknownPeer(f"client {state.node_id} is not in the participant list of the round")
    state.loaded = {}
    cipher, mask = _fresh(state), _fresh(state)
    neighbours = config.neighbours_of(state.node_id)
    receive = [_fresh(state) for _ in neighbours]
    state.config, state.stage, state.aborted = config, Stage.ADVERTISE, False
    state.cipher_private, state.mask_private, state.self_seed = cipher.private, mask.private, b""
    state.peer_keys, state.advertised, state.held, state.share_senders = {}, (), {}, ()
    state.share_keys, state.received_keys, state.identities, state.signed = {}, {}, {}, ()
    state.receive_private = {w: pair.private for w, pair in zip(neighbours, receive, strict=True)}
    state.accused = ()
    tree = merkle.Tree(
        [
            auth.receive_leaf(state.node_id, w, pair.public)
            for w, pair in zip(neighbours, receive, strict=True)
        ]
    )
    keys = AdvertisedKeys(
        state.node_id,
        cipher.public,
        mask.public,
        config.digest(),
        receive_root=tree.root,
        receive_publics=tuple(pair.public for pair in receive),
        receive_paths=tuple(tree.path(i) for i in range(len(neighbours))),
    )
    if state.identity is not None:
        keys = client_auth.sign_keys(state, keys)
    if request.pop_key:
        pop = auth.possession_proof(
            state.loaded_key(cipher.private),
            state.loaded_key(mask.private),
            request.pop_key,
            auth.keys_message(keys),
        )
        keys = dataclasses.replace(keys, pop=pop)
    return keys


def _fresh(state: ClientState) -> crypto.KeyPair:
    pair, loaded = crypto.generate_loaded()
    state.loaded[pair.private] = loaded
    return pair


def _check_advertised(
    state: ClientState, keys: tuple[AdvertisedKeys, ...], tags: dict[int, bytes]
) -> None:
    config = state.config
    assert config is not None
    ids = [k.node_id for k in keys]
    if len(set(ids)) != len(ids):
        raise InconsistentLists("the advertised key list names a client more than once")
    unknown = sorted(set(ids) - set(config.participants))
    if unknown:
        raise UnknownPeer(f"advertised keys of non-participants {unknown}")
    own = {k.node_id: k for k in keys}.get(state.node_id)
    if (
        own is None
        or own.cipher_public != state.public_of(state.cipher_private)
        or own.mask_public != state.public_of(state.mask_private)
    ):
        raise AuthenticationFailure("the advertised key list misses or alters this client's keys")
    mismatched = [k.node_id for k in keys if k.config_digest != config.digest()]
    if mismatched:
        raise ConfigMismatch(
            f"clients {mismatched} received a different configuration or "
            "participant list than this client (config digests differ)"
        )
    holders = config.holders_of(state.node_id)
    used = [k for k in keys if k.node_id in holders and k.node_id != state.node_id]
    if any(
        crypto.is_low_order(k.cipher_public) or crypto.is_low_order(k.mask_public) for k in used
    ):
        raise AuthenticationFailure("the server relayed an unusable (low-order) key of a holder")
    if state.roster is not None:
        # The keys this client uses (its share holders') must be signed (or tagged) by their
        # roster identity. Other clients' names only serve to check consistency signatures,
        # which are checked against the roster and bind the signer's node id themselves.
        client_auth.check_peers(state, own, used, tags)
        state.identities = {k.node_id: k.identity for k in keys}
    if len(ids) < config.threshold:
        raise TooFewSurvivors(
            f"only {len(ids)} clients advertised keys, fewer than the threshold {config.threshold}"
        )


def _receive_keys(
    state: ClientState,
    holders: Sequence[int],
    by_id: Mapping[int, AdvertisedKeys],
    routed: ReceiveKeys,
) -> tuple[dict[int, bytes], tuple[int, ...]]:
    """Each holder's receive key for this client that matches the root the holder signed, and
    the holders whose key does not (reported to the server: it holds what they sent)."""
    config = state.config
    assert config is not None
    given = {h: (k, p) for h, k, p in zip(routed.holders, routed.keys, routed.paths, strict=True)}
    out, unverified = {}, []
    for holder in holders:
        if holder == state.node_id:
            continue
        key, path = given.get(holder, (b"", b""))
        order = config.neighbours_of(holder)
        leaf = auth.receive_leaf(holder, state.node_id, key)
        if crypto.is_low_order(key) or not merkle.verify(
            by_id[holder].receive_root, len(order), order.index(state.node_id), leaf, path
        ):
            unverified.append(holder)
        else:
            out[holder] = key
    return out, tuple(unverified)


def client_share_keys(
    state: ClientState,
    request: ShareKeysRequest,
    tags: Sequence[bytes] = (),
    receive: ReceiveKeys | None = None,
) -> EncryptedShares:
    """Stage 2: check the advertised keys, then share ``b`` and ``s_sk`` with the neighbours.

    ``tags`` (optional, aligned with ``request.keys``) are the peers' HMAC tags addressed to
    this client (:mod:`fedkd.secagg.client_auth`); a key without a valid tag is checked by
    its signature instead. ``receive`` holds each share holder's receive key for this client.

    Returns
    -------
    EncryptedShares
        One AES-GCM ciphertext per neighbour that advertised keys, under the directed key
        this client -> that neighbour, with the commitments to its shares as associated data
        (and, with a roster, a signature over all of them).

    A holder whose receive key does not match the root it signed gets no shares and is
    reported in ``unverified``: the server, which holds what that holder sent, drops whichever
    of the two lied.

    Raises
    ------
    RefusedRequest
        ``ConfigMismatch`` for differing config digests, ``TooFewSurvivors`` when fewer than
        ``threshold`` share holders remain, ``UnknownPeer``/``InconsistentLists`` for bad lists,
        ``AuthenticationFailure`` for invalid or altered keys.
    """
    with refusals(state):
        expect_stage(state, Stage.ADVERTISE, "share-keys")
        config = state.config
        assert config is not None
        aligned = len(tags) == len(request.keys)
        by_tag = {k.node_id: t for k, t in zip(request.keys, tags, strict=True)} if aligned else {}
        _check_advertised(state, request.keys, by_tag)
        by_id = {k.node_id: k for k in request.keys}
        holders = sorted(v for v in config.holders_of(state.node_id) if v in by_id)
        if len(holders) < config.threshold:
            raise TooFewSurvivors(
                f"only {len(holders)} of this client's share holders advertised "
                f"keys, fewer than the threshold {config.threshold}"
            )
        receive_keys, unverified = _receive_keys(
            state, holders, by_id, receive or ReceiveKeys((), (), ())
        )
        holders = [v for v in holders if v not in unverified]
        if len(holders) < config.threshold:
            raise TooFewSurvivors(
                f"only {len(holders)} of this client's share holders have a receive key that "
                f"checks out, fewer than the threshold {config.threshold}"
            )
        shares = _split(state, holders)
        sealed = dataclasses.replace(
            _seal(state, holders, receive_keys, shares), unverified=unverified
        )
        state.peer_keys = {v: by_id[v] for v in holders if v != state.node_id}
        state.advertised = tuple(sorted(by_id))
        state.stage = Stage.SHARE_KEYS
        return sealed


def _split(state: ClientState, holders: list[int]) -> dict[int, tuple[int, int]]:
    """Fresh self-mask seed; both secrets split among ``holders``; this client's shares kept."""
    config = state.config
    assert config is not None
    seed = os.urandom(32)
    xs = [config.share_x(v) for v in holders]
    seed_shares = shamir.split_secret(seed, threshold=config.threshold, xs=xs)
    key_shares = shamir.split_secret(state.mask_private, threshold=config.threshold, xs=xs)
    shares = dict(zip(holders, zip(seed_shares, key_shares, strict=True), strict=True))
    state.self_seed = seed
    state.held = {state.node_id: HeldShares(*shares[state.node_id])}
    return shares


def share_commitments(
    context: bytes, owner: int, holder: int, shares: tuple[int, int]
) -> tuple[bytes, bytes]:
    """Commitments to ``holder``'s self-mask share and key share of ``owner``'s secrets."""
    seed_share, key_share = (shamir.share_to_bytes(x) for x in shares)
    return (
        auth.share_commitment(context, owner, holder, auth.SEED_SHARE, seed_share),
        auth.share_commitment(context, owner, holder, auth.KEY_SHARE, key_share),
    )


def _seal(
    state: ClientState,
    holders: list[int],
    receive_keys: dict[int, bytes],
    shares: dict[int, tuple[int, int]],
) -> EncryptedShares:
    config = state.config
    assert config is not None
    context, me = config.key_context(), state.node_id
    recipients = [v for v in holders if v != me]
    cipher_private = state.loaded_key(state.cipher_private)
    commitments = {v: share_commitments(context, me, v, shares[v]) for v in holders}
    ciphertexts, leaves = [], []
    for holder in recipients:
        key = state.share_keys[holder] = crypto.derive_directed_key(
            crypto.agree(cipher_private, receive_keys[holder]),
            label=crypto.DIRECTED_SHARE_LABEL,
            context=context,
            sender=me,
            recipient=holder,
        )
        plaintext = b"".join(shamir.share_to_bytes(x) for x in shares[holder])
        bound = b"".join(commitments[holder])
        sealed = crypto.encrypt_share(
            key, plaintext, context=context, sender=me, recipient=holder, extra=bound
        )
        ciphertexts.append(sealed)
        leaves.append(auth.ciphertext_leaf(me, holder, sealed, bound))
    signature, paths = b"", tuple[bytes, ...]()
    if state.identity is not None:
        tree = merkle.Tree(leaves)
        signature = state.identity.sign(auth.ciphertexts_message(config, me, tree.root))
        paths = tuple(tree.path(i) for i in range(len(leaves)))
    return EncryptedShares(
        me,
        tuple(recipients),
        tuple(ciphertexts),
        self_mask_commitment(context, me, state.self_seed),
        tuple(c for v in (*recipients, me) for c in commitments[v]),
        signature,
        paths,
    )
