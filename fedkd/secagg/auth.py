"""What gets signed, tagged and committed, and the checks both sides run on it.

* :func:`keys_message` -- what a client signs when it advertises its round keys: its node id,
  its roster name, its public keys (the receive keys by their Merkle root) and the config
  digest (which binds the run, the round, the participants and the roster). A signed
  advertisement is useless in any other round.
* :func:`survivors_message` -- what a client signs in the consistency stage: who signs (its
  node id), which stage, and the survivor set of this round's configuration.
* :func:`endorsement_tag` -- the same statement as an HMAC for one recipient, keyed by the
  *directed* key the signer encrypted its shares to that recipient with, over a message that
  names signer and recipient in order: only those two can compute it, and the recipient's own
  tags (under the other direction's key, naming itself first) never verify as the signer's.
* :func:`ciphertexts_message` / :func:`ciphertext_leaf` -- what a client signs over its
  stage-2 ciphertexts (a Merkle root), so a recipient holding a bad one can prove who made it.
* :func:`possession_proof` -- an HMAC under keys agreed with the server's key of the round:
  the client holds the private halves of what it advertised (a copied key fails it).
* :func:`share_commitment` -- SHA-256 commitment to one Shamir share (shares are uniform field
  elements, so the commitment hides them); the server checks revealed shares against the
  owner's commitments and drops a holder that lies.
* :func:`check_advertised` -- the identity checks of one advertised key list (unsigned,
  foreign, forged or duplicated identities).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Iterable
from functools import lru_cache

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.crypto import agree, load_private
from fedkd.secagg.errors import SecAggError
from fedkd.secagg.identity import Roster
from fedkd.secagg.wire import AdvertisedKeys

_KEYS_LABEL = b"fedkd-secagg/advertised-keys/v2"
_SURVIVORS_LABEL = b"fedkd-secagg/survivors/v2"
_CONSISTENCY_STAGE = b"consistency"
_SHARE_LABEL = b"fedkd-secagg/share-commitment/v1"
_TAG_LABEL = b"fedkd-secagg/endorsement-tag/v2"
_TAG_KEY_LABEL = b"fedkd-secagg/endorsement-tag-key/v2"
_CIPHERTEXTS_LABEL = b"fedkd-secagg/ciphertexts/v1"
_CIPHERTEXT_LEAF = b"fedkd-secagg/ciphertext-leaf/v1"
_RECEIVE_LEAF = b"fedkd-secagg/receive-key-leaf/v1"
_POP_LABEL = b"fedkd-secagg/proof-of-possession/v1"
SEED_SHARE, KEY_SHARE = b"b", b"s"


def _ids(nodes: Iterable[int]) -> bytes:
    return b"".join(v.to_bytes(8, "big") for v in sorted(nodes))


def keys_message(keys: AdvertisedKeys) -> bytes:
    """The bytes a client signs to advertise ``keys`` (signature field excluded)."""
    name = keys.identity.encode("utf-8")
    return b"".join(
        (
            _KEYS_LABEL,
            keys.config_digest,
            keys.node_id.to_bytes(8, "big"),
            len(name).to_bytes(4, "big"),
            name,
            keys.cipher_public,
            keys.mask_public,
            keys.receive_root,
        )
    )


def survivors_message(config: SecAggConfig, signer: int, survivors: Iterable[int]) -> bytes:
    """The bytes client ``signer`` signs to certify the survivor set of ``config``'s round.

    The config digest binds the run, the round, the participants and the roster; the signer's
    node id and the stage name make a signature of one client unusable as another's, or in
    another stage.
    """
    head = _SURVIVORS_LABEL + config.digest() + _CONSISTENCY_STAGE
    return head + signer.to_bytes(8, "big") + _survivor_ids(tuple(survivors))


@lru_cache(maxsize=16)
def _survivors_digest(survivors: tuple[int, ...]) -> bytes:
    return hashlib.sha256(_survivor_ids(survivors)).digest()


@lru_cache(maxsize=16)
def _survivor_ids(survivors: tuple[int, ...]) -> bytes:
    """The set's size and sorted ids (one encoding per set, however many signers)."""
    members = sorted(set(survivors))
    return len(members).to_bytes(8, "big") + _ids(members)


def endorsement_tag(
    directed_key: bytes, config: SecAggConfig, sender: int, recipient: int, survivors: Iterable[int]
) -> bytes:
    """HMAC-SHA256 telling ``recipient`` that ``sender`` signed ``survivors`` in ``config``'s round.

    ``directed_key`` is the key ``sender`` encrypted its shares to ``recipient`` with (known to
    both, to nobody else, and different from the key of the other direction). The set enters
    by its SHA-256 (computed once per set, however many tags).
    """
    key = hashlib.sha256(_TAG_KEY_LABEL + directed_key).digest()
    names = sender.to_bytes(8, "big") + recipient.to_bytes(8, "big")
    digest = _survivors_digest(tuple(survivors))
    body = _TAG_LABEL + config.digest() + _CONSISTENCY_STAGE + names + digest
    return hmac.new(key, body, hashlib.sha256).digest()


def ciphertext_leaf(sender: int, recipient: int, ciphertext: bytes, commitments: bytes) -> bytes:
    """Leaf data of one stage-2 ciphertext in its sender's Merkle tree."""
    ids = sender.to_bytes(8, "big") + recipient.to_bytes(8, "big")
    return _CIPHERTEXT_LEAF + ids + hashlib.sha256(ciphertext).digest() + commitments


def ciphertexts_message(config: SecAggConfig, sender: int, root: bytes) -> bytes:
    """What ``sender`` signs over the root of its stage-2 ciphertexts."""
    return _CIPHERTEXTS_LABEL + config.digest() + sender.to_bytes(8, "big") + root


def receive_leaf(owner: int, neighbour: int, key: bytes) -> bytes:
    """Leaf data of ``owner``'s receive key for ``neighbour``."""
    return _RECEIVE_LEAF + owner.to_bytes(8, "big") + neighbour.to_bytes(8, "big") + key


def possession_proof(
    cipher_private: bytes | X25519PrivateKey,
    mask_private: bytes | X25519PrivateKey,
    server_key: bytes,
    message: bytes,
) -> bytes:
    """HMAC of ``message`` (:func:`keys_message`) under both private keys' secrets with the
    server's key of the round: only a holder of the two private keys can compute it."""
    secrets = agree(cipher_private, server_key) + agree(mask_private, server_key)
    return _possession_mac(secrets, message)


def _possession_mac(secrets: bytes, message: bytes) -> bytes:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_POP_LABEL).derive(secrets)
    return hmac.new(key, message, hashlib.sha256).digest()


def possesses(server_private: bytes, keys: AdvertisedKeys) -> bool:
    """Whether ``keys.pop`` proves possession of both advertised private keys."""
    try:
        loaded = load_private(server_private)
        secrets = agree(loaded, keys.cipher_public) + agree(loaded, keys.mask_public)
    except (ValueError, SecAggError):
        return False
    expected = _possession_mac(secrets, keys_message(keys))
    return hmac.compare_digest(expected, keys.pop)


def share_commitment(context: bytes, owner: int, holder: int, kind: bytes, share: bytes) -> bytes:
    """Commitment to the share ``holder`` holds of ``owner``'s secret ``kind`` (b or s)."""
    ids = owner.to_bytes(8, "big") + holder.to_bytes(8, "big")
    return hashlib.sha256(_SHARE_LABEL + context + ids + kind + share).digest()


def verify_keys(roster: Roster, keys: AdvertisedKeys) -> str | None:
    """Why ``keys`` fail authentication against ``roster`` (``None``: they are authentic)."""
    if not keys.identity:
        return f"client {keys.node_id} advertised keys without an identity"
    if keys.identity not in roster.keys:
        return (
            f"client {keys.node_id} claims identity {keys.identity!r}, which is not in the roster"
        )
    if not roster.verifies(keys.identity, keys_message(keys), keys.signature):
        return (
            f"the keys of client {keys.node_id} are not signed by the roster key of "
            f"{keys.identity!r} for this run, round and configuration"
        )
    return None


def check_advertised(
    roster: Roster, keys: Iterable[AdvertisedKeys], trusted: Collection[int] = ()
) -> dict[int, str]:
    """Clients of ``keys`` whose advertisement must be refused, with the reason.

    Unsigned, unknown or forged identities fail; of two nodes claiming one identity, the
    second (in list order) fails. Nodes in ``trusted`` were authenticated otherwise (a tag
    under a static pair key): their signature is not verified again.
    """
    refused: dict[int, str] = {}
    claimed: dict[str, int] = {}
    for entry in keys:
        reason = None if entry.node_id in trusted else verify_keys(roster, entry)
        if reason is None and entry.identity in claimed:
            first = claimed[entry.identity]
            reason = f"clients {first} and {entry.node_id} both claim identity {entry.identity!r}"
        if reason is not None:
            refused[entry.node_id] = reason
        else:
            claimed[entry.identity] = entry.node_id
    return refused
