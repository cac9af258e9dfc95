"""Client stage functions: one per protocol stage, each over an explicit :class:`ClientState`.

Each function checks the request before doing anything secret. A check that fails raises a
:class:`RefusedRequest` subclass, reveals nothing, and marks the round spent and aborted: the client
answers nothing more for that (run_id, round). The invariant of Bonawitz et al. holds by
construction: :func:`client_unmask` runs at most once per round and answers, for each peer, either
its self-mask share (peer survived) or its key share (peer dropped), never both.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from fedkd.dp.mechanisms import add_noise_share
from fedkd.secagg import auth, client_auth, crypto, shamir
from fedkd.secagg.client_state import ClientState, HeldShares
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import (
    AuthenticationFailure,
    ConfigMismatch,
    InconsistentLists,
    RefusedRequest,
    ReplayedRequest,
    RoundAborted,
    StageOrderError,
    TooFewSurvivors,
    UnknownPeer,
)
from fedkd.secagg.masking import MaskExpander, mask_vector
from fedkd.secagg.packing import reduce_words
from fedkd.secagg.wire import (
    AdvertisedKeys,
    AdvertiseRequest,
    EncryptedShares,
    MaskedInput,
    MaskedInputRequest,
    ShareKeysRequest,
    Stage,
)

COMMITMENT_LABEL = b"fedkd-secagg/self-mask-commitment/v1"


def self_mask_commitment(context: bytes, node_id: int, seed: bytes) -> bytes:
    """SHA-256 commitment to a self-mask seed (the server checks reconstructed seeds with it)."""
    return hashlib.sha256(COMMITMENT_LABEL + context + node_id.to_bytes(8, "big") + seed).digest()


@contextmanager
def _refusals(state: ClientState) -> Iterator[None]:
    """Abort and spend the current round when a refusal escapes."""
    try:
        yield
    except RefusedRequest:
        state.aborted = True
        key = state.round_key()
        if key is not None:
            state.spent_rounds.add(key)
        raise


def _expect_stage(state: ClientState, previous: Stage | None, request: str) -> None:
    if state.aborted:
        raise RoundAborted(
            f"client {state.node_id} refused a request of this round; it refuses "
            f"the {request} request too"
        )
    if state.stage is not previous:
        found = "no stage" if state.stage is None else f"stage {state.stage.value!r}"
        wanted = "no stage" if previous is None else f"stage {previous.value!r}"
        raise StageOrderError(
            f"a {request} request needs {wanted} completed, client {state.node_id} is at {found}"
        )


def client_advertise(state: ClientState, request: AdvertiseRequest) -> AdvertisedKeys:
    """Stage 1: start a round with fresh key pairs and advertise their public halves.

    Parameters
    ----------
    state : ClientState
        Reset for the new round (``spent_rounds`` kept).
    request : AdvertiseRequest
        The round's configuration as this client received it.

    Returns
    -------
    AdvertisedKeys
        Public keys and this client's config digest.

    Raises
    ------
    ReplayedRequest
        When this client already sent a masked input for (or refused) this (run_id, round).
    UnknownPeer
        When this client is not among the participants.
    """
    config = request.config
    _check_fresh(state, config)
    if state.node_id not in config.participants:
        raise UnknownPeer(f"client {state.node_id} is not in the participant list of the round")
    cipher, mask = crypto.generate_keypair(), crypto.generate_keypair()
    state.config, state.stage, state.aborted = config, Stage.ADVERTISE, False
    state.cipher_private, state.mask_private, state.self_seed = cipher.private, mask.private, b""
    state.peer_keys, state.advertised, state.held, state.share_senders = {}, (), {}, ()
    state.share_keys, state.identities, state.signed = {}, {}, ()
    keys = AdvertisedKeys(state.node_id, cipher.public, mask.public, config.digest())
    return keys if state.identity is None else client_auth.sign_keys(state, keys)


def _check_fresh(state: ClientState, config: SecAggConfig) -> None:
    """Refuse a spent, stale or foreign round, and a trust model unlike this client's."""
    for name, expected, got in (
        ("run", state.expected_run, config.run_id),
        ("round", state.expected_round, config.round),
    ):
        if expected is not None and got != expected:
            raise ReplayedRequest(
                f"the aggregation config names {name} {got}, but client {state.node_id} is in "
                f"{name} {expected}: a re-numbered or foreign round is refused"
            )
    if (config.run_id, config.round) in state.spent_rounds:
        raise ReplayedRequest(
            f"client {state.node_id} already answered or refused run "
            f"{config.run_id} round {config.round}; it will not restart it"
        )
    roster = state.roster
    if roster is None and config.authenticated:
        raise ConfigMismatch(
            f"the round requires a roster (digest {config.roster_digest.hex()[:16]}...), "
            f"client {state.node_id} has none"
        )
    if roster is not None and config.roster_digest != roster.digest():
        raise ConfigMismatch(
            "the round's roster digest is not the digest of this client's roster"
            + (
                " (the server asks for an unauthenticated round)"
                if not config.authenticated
                else ""
            )
        )


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
        or own.cipher_public != crypto.public_from_private(state.cipher_private)
        or own.mask_public != crypto.public_from_private(state.mask_private)
    ):
        raise AuthenticationFailure("the advertised key list misses or alters this client's keys")
    mismatched = [k.node_id for k in keys if k.config_digest != config.digest()]
    if mismatched:
        raise ConfigMismatch(
            f"clients {mismatched} received a different configuration or "
            "participant list than this client (config digests differ)"
        )
    if state.roster is not None:
        # The keys this client uses (its share holders') must be signed (or tagged) by their
        # roster identity. Other clients' names only serve to count consistency signatures,
        # which are checked against the roster themselves, by distinct name.
        holders = config.holders_of(state.node_id)
        used = [k for k in keys if k.node_id in holders and k.node_id != state.node_id]
        client_auth.check_peers(state, own, used, tags)
        state.identities = {k.node_id: k.identity for k in keys}
    publics = [k.cipher_public for k in keys] + [k.mask_public for k in keys]
    if len(set(publics)) != len(publics) or any(len(p) != 32 for p in publics):
        raise AuthenticationFailure("advertised public keys are repeated or not 32 bytes")
    if len(ids) < config.threshold:
        raise TooFewSurvivors(
            f"only {len(ids)} clients advertised keys, fewer than the threshold {config.threshold}"
        )


def client_share_keys(
    state: ClientState, request: ShareKeysRequest, tags: Sequence[bytes] = ()
) -> EncryptedShares:
    """Stage 2: check the advertised keys, then share ``b`` and ``s_sk`` with the neighbours.

    ``tags`` (optional, aligned with ``request.keys``) are the peers' HMAC tags addressed to
    this client (:mod:`fedkd.secagg.client_auth`); a key without a valid tag is checked by
    its signature instead.

    Returns
    -------
    EncryptedShares
        One AES-GCM ciphertext per neighbour that advertised keys.

    Raises
    ------
    RefusedRequest
        ``ConfigMismatch`` for differing config digests, ``TooFewSurvivors`` when fewer than
        ``threshold`` share holders remain, ``UnknownPeer``/``InconsistentLists`` for bad lists,
        ``AuthenticationFailure`` for invalid or altered keys.
    """
    with _refusals(state):
        _expect_stage(state, Stage.ADVERTISE, "share-keys")
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
        context = config.key_context()
        seed = os.urandom(32)
        xs = [config.share_x(v) for v in holders]
        seed_shares = shamir.split_secret(seed, threshold=config.threshold, xs=xs)
        key_shares = shamir.split_secret(state.mask_private, threshold=config.threshold, xs=xs)
        recipients, ciphertexts, share_keys = [], [], {}
        cipher_private = crypto.load_private(state.cipher_private)
        for holder, seed_share, key_share in zip(holders, seed_shares, key_shares, strict=True):
            if holder == state.node_id:
                state.held = {holder: HeldShares(seed_share, key_share)}
                continue
            secret = crypto.agree(cipher_private, by_id[holder].cipher_public)
            key = share_keys[holder] = crypto.derive_key(
                secret,
                label=crypto.SHARE_KEY_LABEL,
                context=context,
                first=state.node_id,
                second=holder,
            )
            plaintext = shamir.share_to_bytes(seed_share) + shamir.share_to_bytes(key_share)
            recipients.append(holder)
            ciphertexts.append(
                crypto.encrypt_share(
                    key, plaintext, context=context, sender=state.node_id, recipient=holder
                )
            )
        state.self_seed, state.share_keys = seed, share_keys
        state.peer_keys = {v: by_id[v] for v in holders if v != state.node_id}
        state.advertised = tuple(sorted(by_id))
        state.stage = Stage.SHARE
        shares = dict(zip(holders, zip(seed_shares, key_shares, strict=True), strict=True))
        return EncryptedShares(
            state.node_id,
            tuple(recipients),
            tuple(ciphertexts),
            self_mask_commitment(context, state.node_id, seed),
            _commitments(context, state.node_id, (*recipients, state.node_id), shares),
        )


def _commitments(
    context: bytes, owner: int, holders: tuple[int, ...], shares: dict[int, tuple[int, int]]
) -> tuple[bytes, ...]:
    out = []
    for holder in holders:
        seed_share, key_share = (shamir.share_to_bytes(x) for x in shares[holder])
        out.append(auth.share_commitment(context, owner, holder, auth.SEED_SHARE, seed_share))
        out.append(auth.share_commitment(context, owner, holder, auth.KEY_SHARE, key_share))
    return tuple(out)


def _open_shares(state: ClientState, request: MaskedInputRequest) -> dict[int, HeldShares]:
    config = state.config
    assert config is not None
    if len(set(request.senders)) != len(request.senders):
        raise InconsistentLists("the masked-input request lists a sender more than once")
    strangers = sorted(set(request.senders) - set(state.peer_keys))
    if strangers:
        raise UnknownPeer(f"shares from {strangers}, who are not neighbours that advertised keys")
    context = config.key_context()
    opened: dict[int, HeldShares] = {}
    for sender, sealed in zip(request.senders, request.ciphertexts, strict=True):
        key = state.share_keys[sender]
        plain = crypto.decrypt_share(
            key, sealed, context=context, sender=sender, recipient=state.node_id
        )
        width = shamir.SHARE_BYTES
        if len(plain) != 2 * width:
            raise AuthenticationFailure(f"the shares from client {sender} have the wrong size")
        try:
            opened[sender] = HeldShares(
                shamir.share_from_bytes(plain[:width]), shamir.share_from_bytes(plain[width:])
            )
        except ValueError as error:
            raise AuthenticationFailure(f"the shares from client {sender}: {error}") from None
    return opened


def client_masked_input(
    state: ClientState,
    request: MaskedInputRequest,
    values: np.ndarray,
    noise_rng: np.random.Generator | None = None,
) -> MaskedInput:
    """Stage 3: authenticate the received shares, then send the masked quantized input.

    Parameters
    ----------
    state : ClientState
        After :func:`client_share_keys`.
    request : MaskedInputRequest
        Ciphertexts addressed to this client by the neighbours that shared keys.
    values : np.ndarray
        Float input of length ``config.vector_length`` (e.g. ``concat([w * x, w])``).
    noise_rng : np.random.Generator | None
        Draws the distributed-DP noise share (``None``: OS entropy); a node seeds it from its
        own secret so a repeated release repeats its noise.

    Returns
    -------
    MaskedInput
        ``q(x) + PRG(b) + sum_v +-PRG(s_uv)`` modulo ``2**64``.

    Raises
    ------
    ValueError
        When ``values`` has the wrong length or non-finite entries (the round stays usable).
    RefusedRequest
        ``ReplayedRequest`` when a masked input was already sent for this round,
        ``AuthenticationFailure`` for a tampered ciphertext, ``TooFewSurvivors`` when fewer than
        ``threshold`` holders (this client included) shared keys.
    """
    with _refusals(state):
        if state.stage in (Stage.MASKED_INPUT, Stage.UNMASK):
            raise ReplayedRequest(
                f"client {state.node_id} already sent its masked input for "
                "this round; a second one would reveal its input"
            )
        _expect_stage(state, Stage.SHARE, "masked-input")
    config = state.config
    assert config is not None
    if np.shape(values) != (config.vector_length,):
        raise ValueError(
            f"input has shape {np.shape(values)}; the round expects ({config.vector_length},)"
        )
    quantized = config.quantizer.encode(values)
    # Distributed DP: this client's integer noise share joins its levels before any mask, so
    # no one (the server included) ever sees its input with less than its own share of noise.
    levels = add_noise_share(quantized.values, config.noise_variance, noise_rng)
    with _refusals(state):
        opened = _open_shares(state, request)
        senders = (state.node_id, *opened)
        if len(senders) < config.threshold:
            raise TooFewSurvivors(
                f"only {len(senders)} of this client's share holders shared "
                f"keys, fewer than the threshold {config.threshold}"
            )
        context = config.key_context()
        pair_seeds = {}
        mask_private = crypto.load_private(state.mask_private)
        for peer in opened:
            secret = crypto.agree(mask_private, state.peer_keys[peer].mask_public)
            pair_seeds[peer] = crypto.derive_key(
                secret,
                label=crypto.MASK_SEED_LABEL,
                context=context,
                first=state.node_id,
                second=peer,
            )
        masked = mask_vector(
            levels,
            node_id=state.node_id,
            self_seed=state.self_seed,
            pair_seeds=pair_seeds,
            expander=MaskExpander(config.vector_length),
        )
        reduce_words(masked, config.modulus_bits)  # Z_{2^64} -> Z_{2^k}: what the wire carries
        state.held.update(opened)
        state.share_senders = tuple(sorted(senders))
        state.clipped_fraction = quantized.clipped_fraction
        state.stage = Stage.MASKED_INPUT
        state.spent_rounds.add((config.run_id, config.round))
        return MaskedInput(state.node_id, masked)
