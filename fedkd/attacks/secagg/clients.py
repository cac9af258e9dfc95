"""Malicious clients: one node's replies rewritten as a client that wants to stop the round.

:class:`MaliciousClient` wraps the honest round's in-process transport and rewrites the replies
of one node (``bad``) with a *behaviour*: a function of what that node was asked, what it
honestly answered, what the others answered in the same exchange, and its own state (its
identity and round keys, so it can sign what it forges). :data:`BEHAVIOURS` are the ways of
issue 25 (item 3) to make a round fail; a round must instead drop ``bad`` and finish with the
others' exact sum.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import fedkd.secagg.auth as auth
import fedkd.secagg.crypto as crypto
import fedkd.secagg.merkle as merkle
import fedkd.secagg.protocol as protocol
from fedkd.secagg.accusation import ciphertext_tree
from fedkd.secagg.client_state import ClientState
from fedkd.secagg.identity import SIGNATURE_BYTES
from fedkd.secagg.wire import Accusations, AdvertisedKeys, ConsistencyReply, EncryptedShares
from fedkd.transport import Envelope, ExchangeResult, Transport

__all__ = [
    "BEHAVIOURS",
    "Forge",
    "MaliciousClient",
    "corrupt",
    "resign_keys",
    "resign_shares",
]


@dataclass
class Forge:
    """What a behaviour sees: the exchange, the bad node's honest reply and its state."""

    kind: str
    request: Envelope
    reply: Envelope
    replies: Mapping[int, Envelope]
    state: ClientState
    node: int


Behaviour = Callable[[Forge], Envelope | None]  # None: keep the honest reply


def with_payload(reply: Envelope, payload: bytes) -> Envelope:
    """``reply`` with another stage payload."""
    return Envelope(reply.kind, {**reply.fields, protocol.PAYLOAD: payload}, dict(reply.arrays))


def resign_keys(state: ClientState, keys: AdvertisedKeys) -> AdvertisedKeys:
    """``keys`` signed with the bad node's own (valid) identity, tags dropped."""
    assert state.identity is not None
    keys = dataclasses.replace(keys, tag_names=(), tags=(), pop=b"")
    return dataclasses.replace(keys, signature=state.identity.sign(auth.keys_message(keys)))


def resign_shares(state: ClientState, shares: EncryptedShares) -> EncryptedShares:
    """``shares`` with a valid signature of the bad node over what it now sends."""
    assert state.identity is not None and state.config is not None
    tree = ciphertext_tree(shares)
    message = auth.ciphertexts_message(state.config, shares.node_id, tree.root)
    paths = tuple(tree.path(i) for i in range(len(shares.recipients)))
    return dataclasses.replace(shares, signature=state.identity.sign(message), paths=paths)


def _keys(forge: Forge) -> AdvertisedKeys:
    return AdvertisedKeys.from_bytes(protocol.payload_of(forge.reply))


def _shares(forge: Forge) -> EncryptedShares:
    return EncryptedShares.from_bytes(protocol.payload_of(forge.reply))


SMALL_ORDER_POINT = (1).to_bytes(32, "little")  # order 4 on Curve25519's twist


def _low_order(field: str) -> Behaviour:
    def forge(f: Forge) -> Envelope | None:
        if f.kind != protocol.ADVERTISE:
            return None
        keys = dataclasses.replace(_keys(f), **{field: SMALL_ORDER_POINT})  # type: ignore[arg-type]
        return with_payload(f.reply, resign_keys(f.state, keys).to_bytes())

    return forge


def _low_order_receive(f: Forge) -> Envelope | None:
    if f.kind != protocol.ADVERTISE:
        return None
    keys = _keys(f)
    publics = (SMALL_ORDER_POINT, *keys.receive_publics[1:])
    assert f.state.config is not None
    order = f.state.config.neighbours_of(f.node)
    tree = merkle.Tree(
        [auth.receive_leaf(f.node, w, k) for w, k in zip(order, publics, strict=True)]
    )
    paths = tuple(tree.path(i) for i in range(len(order)))
    keys = dataclasses.replace(
        keys, receive_publics=publics, receive_root=tree.root, receive_paths=paths
    )
    return with_payload(f.reply, resign_keys(f.state, keys).to_bytes())


def _receive_key_off_root(f: Forge) -> Envelope | None:
    """One receive key swapped for another after the root was signed (its owner cannot
    decrypt that neighbour's shares; the neighbour reports it)."""
    if f.kind != protocol.ADVERTISE:
        return None
    keys = _keys(f)
    publics = (crypto.generate_keypair().public, *keys.receive_publics[1:])
    return with_payload(f.reply, dataclasses.replace(keys, receive_publics=publics).to_bytes())


def _false_receive_report(f: Forge) -> Envelope | None:
    """Reports an honest neighbour's receive key as off its root (and sends it nothing)."""
    if f.kind != protocol.SHARE_KEYS:
        return None
    shares = _shares(f)
    victim, keep = shares.recipients[0], range(1, len(shares.recipients))
    forged = dataclasses.replace(
        shares,
        recipients=tuple(shares.recipients[i] for i in keep),
        ciphertexts=tuple(shares.ciphertexts[i] for i in keep),
        share_commitments=shares.share_commitments[2:],
        paths=(),
        unverified=(victim,),
    )
    return with_payload(f.reply, resign_shares(f.state, forged).to_bytes())


def _copied_keys(f: Forge) -> Envelope | None:
    """Another node's cipher and mask keys, re-signed under the bad node's own identity."""
    if f.kind != protocol.ADVERTISE:
        return None
    victim = min(v for v in f.replies if v != f.node)
    theirs = AdvertisedKeys.from_bytes(protocol.payload_of(f.replies[victim]))
    keys = dataclasses.replace(
        _keys(f), cipher_public=theirs.cipher_public, mask_public=theirs.mask_public
    )
    return with_payload(f.reply, resign_keys(f.state, keys).to_bytes())


def _garbage_ciphertexts(share: float, signed: bool = True) -> Behaviour:
    """Well-formed ciphertexts of random bytes to a ``share`` of the recipients."""

    def forge(f: Forge) -> Envelope | None:
        if f.kind != protocol.SHARE_KEYS:
            return None
        shares = _shares(f)
        count = max(1, round(share * len(shares.recipients)))
        sealed = tuple(
            os.urandom(len(c)) if i < count else c for i, c in enumerate(shares.ciphertexts)
        )
        shares = dataclasses.replace(shares, ciphertexts=sealed)
        shares = (
            resign_shares(f.state, shares)
            if signed
            else dataclasses.replace(shares, signature=os.urandom(SIGNATURE_BYTES))
        )
        return with_payload(f.reply, shares.to_bytes())

    return forge


def _wrong_commitments(f: Forge) -> Envelope | None:
    """Shares encrypted and signed correctly, under commitments to other shares."""
    if f.kind != protocol.SHARE_KEYS:
        return None
    state, shares = f.state, _shares(f)
    assert state.config is not None
    context, me = state.config.key_context(), f.node
    commitments, sealed = list(shares.share_commitments), list(shares.ciphertexts)
    holder = shares.recipients[0]
    commitments[0] = os.urandom(32)  # the first recipient's self-mask share commitment
    key = state.share_keys[holder]
    plaintext = crypto.decrypt_share(
        key,
        sealed[0],
        context=context,
        sender=me,
        recipient=holder,
        extra=shares.commitments_for(0),
    )
    bound = commitments[0] + commitments[1]
    sealed[0] = crypto.encrypt_share(
        key, plaintext, context=context, sender=me, recipient=holder, extra=bound
    )
    forged = dataclasses.replace(
        shares, ciphertexts=tuple(sealed), share_commitments=tuple(commitments)
    )
    return with_payload(f.reply, resign_shares(state, forged).to_bytes())


def _lying_reporter(evidence: bool) -> Behaviour:
    """Reports an honest sender's good shares as bad (with a made-up key, or none)."""

    def forge(f: Forge) -> Envelope | None:
        if f.kind != protocol.MASKED_INPUT:
            return None
        victim = min(v for v in f.state.held if v != f.node)
        made_up = os.urandom(32) if evidence else b""
        fields = dict(f.reply.fields)
        fields[protocol.ACCUSED] = Accusations((victim,), (made_up,)).to_bytes()
        return Envelope(f.reply.kind, fields, dict(f.reply.arrays))

    return forge


def _garbage_consistency(f: Forge) -> Envelope | None:
    """A consistency signature and tags of random bytes."""
    if f.kind != protocol.CONSISTENCY:
        return None
    reply = ConsistencyReply.from_bytes(protocol.payload_of(f.reply))
    forged = dataclasses.replace(
        reply,
        signature=os.urandom(SIGNATURE_BYTES),
        tags=tuple(os.urandom(32) for _ in reply.tags),
    )
    return with_payload(f.reply, forged.to_bytes())


BEHAVIOURS: dict[str, Behaviour] = {
    "low-order cipher key": _low_order("cipher_public"),
    "low-order mask key": _low_order("mask_public"),
    "low-order receive key": _low_order_receive,
    "a receive key off its signed root": _receive_key_off_root,
    "reports a good receive key as bad": _false_receive_report,
    "another node's keys re-signed": _copied_keys,
    "garbage ciphertexts, signed": _garbage_ciphertexts(1.0),
    "garbage ciphertexts to a third, signed": _garbage_ciphertexts(0.34),
    "garbage ciphertexts to most, signed": _garbage_ciphertexts(0.7),
    "garbage ciphertexts, bad signature": _garbage_ciphertexts(1.0, signed=False),
    "shares unlike their commitments": _wrong_commitments,
    "reports good shares with a made-up key": _lying_reporter(True),
    "reports good shares without evidence": _lying_reporter(False),
    "garbage consistency signature and tags": _garbage_consistency,
}


class MaliciousClient:
    """Wraps the honest in-process transport; rewrites node ``bad``'s replies by ``behaviour``.

    ``state`` is the bad node's :class:`ClientState` (what it knows: its identity, its keys).
    """

    def __init__(
        self, inner: Transport, bad: int, behaviour: Behaviour, state: ClientState
    ) -> None:
        self.inner, self.bad, self.behaviour, self.state = inner, bad, behaviour, state

    def nodes(self) -> Sequence[int]:
        """The wrapped transport's nodes."""
        return self.inner.nodes()

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        """Deliver, then replace the bad node's reply with its forged one."""
        result = self.inner.exchange(requests, timeout=timeout, group=group)
        honest = result.replies.get(self.bad)
        if honest is not None:
            forge = Forge(
                honest.kind, requests[self.bad], honest, result.replies, self.state, self.bad
            )
            forged = self.behaviour(forge)
            if forged is not None:
                result.replies[self.bad] = forged
        return result


def corrupt(bad: int, behaviour: Behaviour) -> Callable[[Transport], Transport]:
    """The ``wrap`` of :func:`fedkd.secagg.driver.simulate` that makes node ``bad`` malicious."""

    def wrap(inner: Transport) -> Transport:
        node = getattr(inner, "handlers", {}).get(bad)
        state = getattr(node, "state", None)
        if not isinstance(state, ClientState):
            raise TypeError("corrupt() wraps the driver's in-process transport")
        return MaliciousClient(inner, bad, behaviour, state)

    return wrap
