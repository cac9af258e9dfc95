"""Cryptographic primitives: X25519 key agreement, context-bound HKDF-SHA256, AES-256-GCM.

Every derived key binds the round's key context (run id, round, sorted participant list,
public-set digest, config digest; see :meth:`SecAggConfig.key_context`) and the pair of node
ids, so keys from another round, another configuration or another pair never coincide. Mask
seeds are symmetric in the pair (both clients derive the same one); share-encryption keys are
*directed* (:func:`derive_directed_key`: sender and recipient in order), so revealing the key
of one direction reveals nothing sent the other way. Shares are encrypted with AES-256-GCM
under a random 96-bit nonce, with the label, the key context, the sender, the recipient and
the owner's commitments to the shares as associated data.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedkd.secagg.errors import AuthenticationFailure

KEY_BYTES = 32
NONCE_BYTES = 12
SHARE_KEY_LABEL = b"fedkd-secagg/share-key/v1"
MASK_SEED_LABEL = b"fedkd-secagg/mask-seed/v1"
SHARE_AAD_LABEL = b"fedkd-secagg/share-aad/v2"
DIRECTED_SHARE_LABEL = b"fedkd-secagg/directed-share-key/v1"
_P = 2**255 - 19
# u-coordinates of the points of order 1, 2, 4 and 8 on Curve25519 and its twist, mod p
# (libsodium's blacklist, reduced): X25519 with any of them gives the all-zero secret.
SMALL_ORDER = frozenset(
    {
        0,
        1,
        _P - 1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)


@dataclass(frozen=True)
class KeyPair:
    """A raw X25519 key pair (32-byte private and public keys)."""

    private: bytes
    public: bytes


def generate_keypair() -> KeyPair:
    """Generate a fresh X25519 key pair from the operating system's CSPRNG."""
    return generate_loaded()[0]


def generate_loaded() -> tuple[KeyPair, X25519PrivateKey]:
    """A fresh key pair and its loaded private key (loading raw bytes costs a scalar
    multiplication, as much as a key agreement: keep the object where it is used again)."""
    key = X25519PrivateKey.generate()
    raw = KeyPair(private=key.private_bytes_raw(), public=key.public_key().public_bytes_raw())
    return raw, key


def public_from_private(private: bytes) -> bytes:
    """Raw X25519 public key of a raw private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def is_low_order(public: bytes) -> bool:
    """Whether ``public`` is not a usable X25519 key: not 32 bytes, or of small order.

    The top bit is ignored and the value reduced mod p, as X25519 does (RFC 7748), so the
    non-canonical encodings of the same points are caught too.
    """
    if len(public) != KEY_BYTES:
        return True
    return (int.from_bytes(public, "little") & ((1 << 255) - 1)) % _P in SMALL_ORDER


def load_private(private: bytes) -> X25519PrivateKey:
    """Parse a raw private key once, for many :func:`agree` calls."""
    return X25519PrivateKey.from_private_bytes(private)


def agree(private: bytes | X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519 shared secret of ``private`` (raw or loaded) and ``peer_public``.

    Raises
    ------
    AuthenticationFailure
        When the peer key is malformed or of low order (all-zero shared secret).
    """
    try:
        peer = X25519PublicKey.from_public_bytes(peer_public)
        key = load_private(private) if isinstance(private, bytes) else private
        return key.exchange(peer)
    except ValueError as error:
        raise AuthenticationFailure(f"invalid peer public key: {error}") from None


_NO_SALT = bytes(32)  # RFC 5869: an absent salt is HashLen zeros


def hkdf_sha256(ikm: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``ikm``, no salt, 32 bytes of output: one extract, one expand.

    The same bytes as ``cryptography``'s ``HKDF(SHA256(), 32, salt=None, info)`` (a test holds
    it to that), in two one-shot HMACs: this runs a few hundred times per client per round.
    """
    prk = hmac.digest(_NO_SALT, ikm, "sha256")
    return hmac.digest(prk, info + b"\x01", "sha256")


def _pair(low: int, high: int) -> bytes:
    return low.to_bytes(8, "big") + high.to_bytes(8, "big")


def derive_key(shared: bytes, *, label: bytes, context: bytes, first: int, second: int) -> bytes:
    """HKDF-SHA256 of an X25519 secret, bound to a label, the key context and a node pair.

    Parameters
    ----------
    shared : bytes
        Raw X25519 shared secret.
    label : bytes
        Purpose (:data:`SHARE_KEY_LABEL` or :data:`MASK_SEED_LABEL`).
    context : bytes
        :meth:`SecAggConfig.key_context` of the round.
    first, second : int
        The two node ids, in either order (the derivation sorts them).

    Returns
    -------
    bytes
        32 bytes of key material.
    """
    low, high = sorted((first, second))
    return hkdf_sha256(shared, label + context + _pair(low, high))


def derive_directed_key(
    shared: bytes, *, label: bytes, context: bytes, sender: int, recipient: int
) -> bytes:
    """HKDF-SHA256 like :func:`derive_key`, for one direction only: (a, b) and (b, a) differ."""
    return hkdf_sha256(shared, label + context + _pair(sender, recipient))


def _share_aad(context: bytes, sender: int, recipient: int, extra: bytes) -> bytes:
    return SHARE_AAD_LABEL + context + _pair(sender, recipient) + extra


def encrypt_share(
    key: bytes,
    plaintext: bytes,
    *,
    context: bytes,
    sender: int,
    recipient: int,
    extra: bytes = b"",
) -> bytes:
    """AES-256-GCM encryption of a share bundle from ``sender`` to ``recipient``.

    ``extra`` joins the associated data (the owner's commitments to the shares inside).

    Returns
    -------
    bytes
        ``nonce (12 bytes) || ciphertext || tag (16 bytes)``.
    """
    nonce = os.urandom(NONCE_BYTES)
    aad = _share_aad(context, sender, recipient, extra)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt_share(
    key: bytes,
    sealed: bytes,
    *,
    context: bytes,
    sender: int,
    recipient: int,
    extra: bytes = b"",
) -> bytes:
    """Decrypt and authenticate :func:`encrypt_share` output.

    Raises
    ------
    AuthenticationFailure
        When the ciphertext, the nonce, the sender/recipient, the round or the configuration
        differ from what was encrypted.
    """
    if len(sealed) < NONCE_BYTES + 16:
        raise AuthenticationFailure(
            f"share ciphertext from {sender} is too short ({len(sealed)} bytes)"
        )
    try:
        return AESGCM(key).decrypt(
            sealed[:NONCE_BYTES],
            sealed[NONCE_BYTES:],
            _share_aad(context, sender, recipient, extra),
        )
    except InvalidTag:
        raise AuthenticationFailure(
            f"the encrypted shares from client {sender} failed authentication (tampered, or "
            "encrypted for another round or configuration)"
        ) from None
