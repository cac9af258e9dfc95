"""Key substitution: clients are shown the attacker's keys in place of their peers'."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

from fedkd.secagg import crypto, protocol, shamir
from fedkd.secagg.attack_base import Attack, with_payload
from fedkd.secagg.errors import SecAggError
from fedkd.secagg.leakage import KEY, SEED
from fedkd.secagg.wire import AdvertisedKeys, MaskedInputRequest, ShareKeysRequest
from fedkd.transport import Envelope, ExchangeResult, Transport


class KeySubstitution(Attack):
    """Show clients the attacker's keys in place of their peers' keys.

    ``pairs`` holds ``(viewer, peer)``: ``viewer`` is shown attacker keys as ``peer``'s. The
    default, for a ``target``, is the full isolation: the target sees attacker keys for every
    peer and every peer sees attacker keys for the target. The attacker decrypts every share
    sent to one of its keys and re-encrypts what it can for the recipient, so the victims'
    share decryption succeeds.
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
        self.fake: dict[tuple[int, int], tuple[crypto.KeyPair, crypto.KeyPair]] = {}

    def faked(self, viewer: int, peer: int) -> bool:
        """Whether ``viewer`` is shown attacker keys as ``peer``'s."""
        if self.pairs is not None:
            return (viewer, peer) in self.pairs
        return viewer != peer and self.target in (viewer, peer)

    def _fake(self, viewer: int, keys: AdvertisedKeys) -> AdvertisedKeys:
        pair = (viewer, keys.node_id)
        if pair not in self.fake:
            self.fake[pair] = (crypto.generate_keypair(), crypto.generate_keypair())
            for made in self.fake[pair]:
                self.observed.attacker_keys[made.public] = made.private
        cipher, mask = self.fake[pair]
        return dataclasses.replace(keys, cipher_public=cipher.public, mask_public=mask.public)

    def rewrite(self, node: int, message: Envelope) -> Envelope:
        if message.kind == protocol.SHARE_KEYS:
            request = ShareKeysRequest.from_bytes(protocol.payload_of(message))
            keys = tuple(
                self._fake(node, k) if self.faked(node, k.node_id) else k for k in request.keys
            )
            return with_payload(message, ShareKeysRequest(keys).to_bytes())
        if message.kind == protocol.MASKED_INPUT:
            return with_payload(message, self._reseal(node, message).to_bytes())
        return message

    def _key(self, viewer: int, peer: int) -> bytes | None:
        """The share key ``viewer`` derived for ``peer`` when ``peer``'s keys were faked."""
        config, real = self.observed.config, self.observed.advertised.get(viewer)
        if (viewer, peer) not in self.fake or config is None or real is None:
            return None
        secret = crypto.agree(self.fake[(viewer, peer)][0].private, real.cipher_public)
        return crypto.derive_key(
            secret,
            label=crypto.SHARE_KEY_LABEL,
            context=config.key_context(),
            first=viewer,
            second=peer,
        )

    def _open(self, key: bytes, sealed: bytes, sender: int, recipient: int) -> bytes | None:
        config = self.observed.config
        assert config is not None
        try:
            return crypto.decrypt_share(
                key, sealed, context=config.key_context(), sender=sender, recipient=recipient
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
            for holder, ciphertext in zip(sealed.recipients, sealed.ciphertexts, strict=True):
                key = self._key(sender, holder)
                plain = None if key is None else self._open(key, ciphertext, sender, holder)
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
        for sender, ciphertext in zip(request.senders, request.ciphertexts, strict=True):
            opened_with, sealed_with = self._key(sender, node), self._key(node, sender)
            plain = (
                None if opened_with is None else self._open(opened_with, ciphertext, sender, node)
            )
            if plain is not None and sealed_with is not None:
                ciphertext = crypto.encrypt_share(
                    sealed_with, plain, context=config.key_context(), sender=sender, recipient=node
                )
            resealed.append(ciphertext)
        return MaskedInputRequest(request.senders, tuple(resealed))
