"""The client's identity work: signing and tagging what it advertises, checking its peers.

A client signs its advertised round keys (Ed25519, for anyone holding the roster) and also
tags them for every other roster member with an HMAC under the static pair key the two derive
from their identities (:meth:`Identity.pair_key`, computed once and cached in the state). A
peer checks the tag addressed to it in microseconds and falls back to the signature when the
tag is missing or wrong, so tags only ever save work: they never accept what the signature
would refuse. The pair key is the same in both directions, so the tagged message names the
author and the recipient in order: a tag a client made for a peer never verifies as that
peer's tag for it (a reflected tag), nor as a tag for a third member.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Sequence

import fedkd.secagg.auth as auth
from fedkd.secagg.client_state import ClientState
from fedkd.secagg.errors import AuthenticationFailure
from fedkd.secagg.wire import AdvertisedKeys

_TAG_LABEL = b"fedkd-secagg/keys-tag/v2"
TAG_BYTES = 32


def keys_tag(pair_key: bytes, author: str, recipient: str, keys: AdvertisedKeys) -> bytes:
    """HMAC-SHA256 of :func:`fedkd.secagg.auth.keys_message` from ``author`` to ``recipient``
    (roster names) under their static pair key."""
    names = b"".join(
        len(raw).to_bytes(4, "big") + raw for raw in (author.encode(), recipient.encode())
    )
    message = _TAG_LABEL + names + auth.keys_message(keys)
    return hmac.new(pair_key, message, hashlib.sha256).digest()


def _pair_key(state: ClientState, peer: str) -> bytes:
    assert state.identity is not None and state.roster is not None
    key = state.pair_keys.get(peer)
    if key is None:
        key = state.pair_keys[peer] = state.identity.pair_key(state.roster, peer)
    return key


# Tags save each share holder an Ed25519 verification, but cost one tag (and, once, one X25519)
# per roster member, and travel to every participant: past this roster size the keys are
# checked by signature alone (10,000 members would mean 320 kB of tags per client per round).
TAG_ROSTER_LIMIT = 256


def sign_keys(state: ClientState, keys: AdvertisedKeys) -> AdvertisedKeys:
    """``keys`` with this client's identity, signature and a tag for every roster member
    (none past :data:`TAG_ROSTER_LIMIT` members)."""
    assert state.identity is not None and state.roster is not None
    named = dataclasses.replace(keys, identity=state.identity.name)
    large = len(state.roster.keys) > TAG_ROSTER_LIMIT
    peers = () if large else tuple(n for n in state.roster.keys if n != state.identity.name)
    return dataclasses.replace(
        named,
        signature=state.identity.sign(auth.keys_message(named)),
        tag_names=peers,
        tags=tuple(keys_tag(_pair_key(state, n), state.identity.name, n, named) for n in peers),
    )


def check_peers(
    state: ClientState,
    own: AdvertisedKeys,
    used: Sequence[AdvertisedKeys],
    tags: dict[int, bytes],
) -> None:
    """Refuse unless every key in ``used`` is authentic (tag, else signature) and unique.

    Raises
    ------
    AuthenticationFailure
        Naming the first client whose keys fail, or two clients claiming one identity.
    """
    roster, identity = state.roster, state.identity
    assert roster is not None and identity is not None
    if own.identity != identity.name:
        raise AuthenticationFailure(
            f"the advertised key list names this client {own.identity!r}, not {identity.name!r}"
        )
    tagged = {own.node_id}  # this client's own keys, already compared with its secrets
    for keys in used:
        tag = tags.get(keys.node_id)
        if (
            tag is not None
            and keys.identity in roster.keys
            and keys.identity != own.identity
            and hmac.compare_digest(
                keys_tag(_pair_key(state, keys.identity), keys.identity, identity.name, keys), tag
            )
        ):
            tagged.add(keys.node_id)
    refused = auth.check_advertised(roster, [own, *used], trusted=tagged)
    if refused:
        node, reason = min(refused.items())
        raise AuthenticationFailure(f"refused the advertised keys: {reason}")
