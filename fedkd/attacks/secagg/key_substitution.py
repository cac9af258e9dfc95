"""Key substitution: clients are shown the attacker's keys in place of their peers'.

The attacker replaces a peer's cipher and mask keys and its receive-key root in the list a
viewer gets, and the peer's receive key for the viewer (with a path to the fake root) in the
viewer's :class:`~fedkd.secagg.wire.ReceiveKeys`. The viewer then encrypts its shares for the
peer to a key the attacker holds, and opens the peer's shares with the attacker's cipher key:
the attacker decrypts what it can and re-encrypts it for the viewer. Signed keys (a roster)
make every viewer refuse the fake ones; without a roster the attack is real.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Collection, Mapping

import fedkd.secagg.auth as auth
import fedkd.secagg.crypto as crypto
import fedkd.secagg.merkle as merkle
import fedkd.secagg.protocol as protocol
import fedkd.secagg.shamir as shamir
from fedkd.attacks.secagg.base import Attack, with_payload
from fedkd.attacks.secagg.leakage import KEY, SEED
from fedkd.secagg.errors import SecAggError
from fedkd.secagg.wire import AdvertisedKeys, MaskedInputRequest, ReceiveKeys, ShareKeysRequest
from fedkd.transport import Envelope, ExchangeResult, Transport

__all__ = ["KeySubstitution"]


@dataclasses.dataclass(frozen=True)
class _Fake:
    """The attacker's keys shown to one viewer as one peer's."""

    cipher: crypto.KeyPair
    mask: crypto.KeyPair
    receive: crypto.KeyPair  # the peer's "receive key" for the viewer
    tree: merkle.Tree
    index: int  # the viewer's leaf in ``tree``


class KeySubstitution(Attack):
    """Show clients the attacker's keys in place of their peers' keys.

    ``pairs`` holds ``(viewer, peer)``: ``viewer`` is shown attacker keys as ``peer``'s. The
    default, for a ``target``, is the full isolation: the target sees attacker keys for every
    peer and every peer sees attacker keys for the target.
    """

    def __init__(
        self,
        inner: Transport,
        target: int | None = None,
        pairs: Collection[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__(inner)
        self.target = target
        self.pairs = None if pairs is None else {(int(u), int(v)) for u, v in pairs if u != v}
        self.fake: dict[tuple[int, int], _Fake] = {}

    def faked(self, viewer: int, peer: int) -> bool:
        """Whether ``viewer`` is shown attacker keys as ``peer``'s."""
        if self.pairs is not None:
            return (viewer, peer) in self.pairs
        return viewer != peer and self.target in (viewer, peer)

    def _make(self, viewer: int, peer: int) -> _Fake:
        pair = (viewer, peer)
        if pair not in self.fake:
            config = self.observed.config
            assert config is not None
            order = config.neighbours_of(peer)
            index = order.index(viewer) if viewer in order else 0
            cipher, mask, receive = (crypto.generate_keypair() for _ in range(3))
            leaves = [
                auth.receive_leaf(peer, w, receive.public if i == index else os.urandom(32))
                for i, w in enumerate(order)
            ]
            self.fake[pair] = _Fake(cipher, mask, receive, merkle.Tree(leaves), index)
            for made in (cipher, mask, receive):
                self.observed.attacker_keys[made.public] = made.private
        return self.fake[pair]

    def _fake_keys(self, viewer: int, keys: AdvertisedKeys) -> AdvertisedKeys:
        fake = self._make(viewer, keys.node_id)
        return dataclasses.replace(
            keys,
            cipher_public=fake.cipher.public,
            mask_public=fake.mask.public,
            receive_root=fake.tree.root,
        )

    def rewrite(self, node: int, message: Envelope) -> Envelope:
        if message.kind == protocol.SHARE_KEYS and self.observed.config is not None:
            request = ShareKeysRequest.from_bytes(protocol.payload_of(message))
            keys = tuple(
                self._fake_keys(node, k) if self.faked(node, k.node_id) else k for k in request.keys
            )
            rewritten = with_payload(message, ShareKeysRequest(keys).to_bytes())
            raw = message.fields.get(protocol.RECEIVE)
            if isinstance(raw, bytes) and raw:
                rewritten.fields[protocol.RECEIVE] = self._receive(node, raw)
            return rewritten
        if message.kind == protocol.MASKED_INPUT:
            return with_payload(message, self._reseal(node, message).to_bytes())
        return message

    def _receive(self, viewer: int, raw: bytes) -> bytes:
        routed = ReceiveKeys.from_bytes(raw)
        keys, paths = list(routed.keys), list(routed.paths)
        for i, holder in enumerate(routed.holders):
            if self.faked(viewer, holder):
                fake = self._make(viewer, holder)
                keys[i], paths[i] = fake.receive.public, fake.tree.path(fake.index)
        return ReceiveKeys(routed.holders, tuple(keys), tuple(paths)).to_bytes()

    def _key(self, sender: int, recipient: int, *, sealing: bool = False) -> bytes | None:
        """The directed key sender -> recipient as the sender used it (``sealing``: as the
        recipient will use it), when the attacker's keys stand in on that side."""
        config, obs = self.observed.config, self.observed
        if config is None or sender not in obs.advertised or recipient not in obs.advertised:
            return None
        if not sealing and (sender, recipient) in self.fake:  # sent to the attacker's key
            private = self.fake[(sender, recipient)].receive.private
            public = obs.advertised[sender].cipher_public
        elif sealing and (recipient, sender) in self.fake:  # opened with the attacker's key
            private = self.fake[(recipient, sender)].cipher.private
            order = config.neighbours_of(recipient)
            public = obs.advertised[recipient].receive_publics[order.index(sender)]
        else:
            return None
        return crypto.derive_directed_key(
            crypto.agree(private, public),
            label=crypto.DIRECTED_SHARE_LABEL,
            context=config.key_context(),
            sender=sender,
            recipient=recipient,
        )

    def _open(
        self, key: bytes, sealed: bytes, sender: int, recipient: int, bound: bytes
    ) -> bytes | None:
        config = self.observed.config
        assert config is not None
        try:
            return crypto.decrypt_share(
                key,
                sealed,
                context=config.key_context(),
                sender=sender,
                recipient=recipient,
                extra=bound,
            )
        except SecAggError:
            return None

    def after(
        self, sent: Mapping[int, Envelope], result: ExchangeResult, *, timeout: float, group: str
    ) -> None:
        if protocol.SHARE_KEYS not in {m.kind for m in sent.values()}:
            return
        width = shamir.SHARE_BYTES
        for sender, sealed in self.observed.encrypted.items():
            for i, (holder, ciphertext) in enumerate(
                zip(sealed.recipients, sealed.ciphertexts, strict=True)
            ):
                if (sender, holder) not in self.fake:
                    continue
                key = self._key(sender, holder)
                bound = sealed.commitments_for(i)
                plain = None if key is None else self._open(key, ciphertext, sender, holder, bound)
                if plain is None or len(plain) != 2 * width:
                    continue
                self.observed.steal(SEED, sender, holder, shamir.share_from_bytes(plain[:width]))
                self.observed.steal(KEY, sender, holder, shamir.share_from_bytes(plain[width:]))

    def _reseal(self, node: int, message: Envelope) -> MaskedInputRequest:
        """Re-encrypt for ``node`` what senders encrypted to attacker keys, where possible."""
        config = self.observed.config
        request = MaskedInputRequest.from_bytes(protocol.payload_of(message))
        if config is None:
            return request
        resealed = []
        for i, (sender, ciphertext) in enumerate(
            zip(request.senders, request.ciphertexts, strict=True)
        ):
            bound = request.commitments[i] if request.commitments else b""
            opened_with = self._key(sender, node)
            plain = (
                None
                if opened_with is None
                else self._open(opened_with, ciphertext, sender, node, bound)
            )
            sealed_with = self._key(sender, node, sealing=True)
            if plain is not None and sealed_with is not None:
                ciphertext = crypto.encrypt_share(
                    sealed_with,
                    plain,
                    context=config.key_context(),
                    sender=sender,
                    recipient=node,
                    extra=bound,
                )
            resealed.append(ciphertext)
        return dataclasses.replace(request, ciphertexts=tuple(resealed))
