"""What gets signed and committed, and the checks both sides run on it.

* :func:`keys_message` -- what a client signs when it advertises its round keys: its node id,
  its roster name, both public keys and the config digest (which binds the run, the round, the
  participants and the roster). A signed advertisement is useless in any other round.
* :func:`survivors_message` -- what a client signs in the consistency stage: the survivor set
  of this round's configuration.
* :func:`survivors_tag` -- the same statement as an HMAC for one share holder, keyed by the
  pair's authenticated share key: cheap to check where an Ed25519 verification is not.
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

from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.identity import Roster
from fedkd.secagg.wire import AdvertisedKeys

_KEYS_LABEL = b"fedkd-secagg/advertised-keys/v1"
_SURVIVORS_LABEL = b"fedkd-secagg/survivors/v1"
_SHARE_LABEL = b"fedkd-secagg/share-commitment/v1"
_TAG_LABEL = b"fedkd-secagg/consistency-tag/v1"
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
        )
    )


def survivors_message(config: SecAggConfig, survivors: Iterable[int]) -> bytes:
    """The bytes a client signs to certify the survivor set of ``config``'s round."""
    members = sorted(set(survivors))
    return _SURVIVORS_LABEL + config.digest() + len(members).to_bytes(8, "big") + _ids(members)


def survivors_tag(share_key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of a :func:`survivors_message` for one share holder (key separated by label)."""
    key = hashlib.sha256(_TAG_LABEL + share_key).digest()
    return hmac.new(key, message, hashlib.sha256).digest()


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
