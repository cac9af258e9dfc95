"""Wire vocabulary: the message of each direction of each stage (base in :mod:`.message`).

Stage flow (server -> clients, clients -> server):

- 1, ADVERTISE: :class:`AdvertiseRequest` -> :class:`AdvertisedKeys`
- 2, SHARE: :class:`ShareKeysRequest` (+ :class:`ReceiveKeys` per client) ->
  :class:`EncryptedShares`
- 3, MASKED_INPUT: :class:`MaskedInputRequest` -> :class:`MaskedInput` (+ :class:`Accusations`)
- 3b, CONSISTENCY (rounds with a roster only): :class:`ConsistencyRequest` ->
  :class:`ConsistencyReply`
- 4, UNMASK: :class:`UnmaskRequest` -> :class:`UnmaskReply`

Stages 3 to 4 live in :mod:`fedkd.secagg.wire_unmask` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fedkd.secagg.codec import Fields, FieldValue, get_bytes, get_int, get_str
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import WireFormatError
from fedkd.secagg.message import Message, Stage, aligned, bytes_list, ints
from fedkd.secagg.wire_unmask import (
    Accusations,
    ConsistencyReply,
    ConsistencyRequest,
    MaskedInput,
    MaskedInputRequest,
    UnmaskReply,
    UnmaskRequest,
)

__all__ = [
    "Accusations",
    "AdvertiseRequest",
    "AdvertisedKeys",
    "ConsistencyReply",
    "ConsistencyRequest",
    "EncryptedShares",
    "MaskedInput",
    "MaskedInputRequest",
    "ReceiveKeys",
    "ShareKeysRequest",
    "Stage",
    "UnmaskReply",
    "UnmaskRequest",
]


def _names(fields: Mapping[str, FieldValue], key: str) -> tuple[str, ...]:
    try:
        return tuple(n.decode("utf-8") for n in bytes_list(fields, key))
    except UnicodeDecodeError:
        raise WireFormatError(f"{key}: a name is not UTF-8") from None


@dataclass(frozen=True)
class AdvertiseRequest(Message):
    """Server -> client, stage 1: the round's public configuration.

    ``pop_key`` is the server's X25519 key of this round for proofs of possession (empty: the
    server asks for none); it is not part of the configuration, every client may get its own.
    """

    config: SecAggConfig
    pop_key: bytes = b""
    KIND = "advertise_request"

    def _body(self) -> Fields:
        return {**self.config.to_fields(), "pop_key": self.pop_key}

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> AdvertiseRequest:
        return cls(config=SecAggConfig.from_fields(fields), pop_key=get_bytes(fields, "pop_key"))


@dataclass(frozen=True)
class AdvertisedKeys(Message):
    """Client -> server, stage 1: the client's public keys of the round and its config digest.

    ``cipher_public`` sends shares, ``mask_public`` agrees pairwise mask seeds, and
    ``receive_publics`` holds one key per neighbour (in ``config.neighbours_of`` order) under
    which that neighbour encrypts its shares to this client (one key per direction: revealing
    one, to prove a neighbour sent garbage, reveals nothing else). ``receive_root`` is the
    :mod:`~fedkd.secagg.merkle` root over them and ``receive_paths`` each key's path to it; the
    signature covers the root, and the server passes each neighbour only its own key and path.
    With a roster, ``identity`` names the client's roster entry and ``signature`` is its
    Ed25519 signature of
    :func:`fedkd.secagg.auth.keys_message`; ``tag_names``/``tags`` are HMAC tags of the same
    for roster members (:mod:`fedkd.secagg.client_auth`). ``pop`` proves to the server that the
    client holds the private halves (:func:`fedkd.secagg.auth.possession_proof`).
    """

    node_id: int
    cipher_public: bytes
    mask_public: bytes
    config_digest: bytes
    identity: str = ""
    signature: bytes = b""
    tag_names: tuple[str, ...] = ()
    tags: tuple[bytes, ...] = ()
    receive_root: bytes = b""
    receive_publics: tuple[bytes, ...] = ()
    pop: bytes = b""
    receive_paths: tuple[bytes, ...] = ()
    KIND = "advertised_keys"

    def _body(self) -> Fields:
        return {
            "node_id": self.node_id,
            "cipher_public": self.cipher_public,
            "mask_public": self.mask_public,
            "config_digest": self.config_digest,
            "identity": self.identity,
            "signature": self.signature,
            "tag_names": [n.encode("utf-8") for n in self.tag_names],
            "tags": list(self.tags),
            "receive_root": self.receive_root,
            "receive_publics": list(self.receive_publics),
            "pop": self.pop,
            "receive_paths": list(self.receive_paths),
        }

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> AdvertisedKeys:
        names, tags = _names(fields, "tag_names"), bytes_list(fields, "tags")
        aligned("advertised_keys tags", names, tags)
        return cls(
            get_int(fields, "node_id"),
            get_bytes(fields, "cipher_public"),
            get_bytes(fields, "mask_public"),
            get_bytes(fields, "config_digest"),
            get_str(fields, "identity"),
            get_bytes(fields, "signature"),
            names,
            tags,
            get_bytes(fields, "receive_root"),
            bytes_list(fields, "receive_publics"),
            get_bytes(fields, "pop"),
            bytes_list(fields, "receive_paths"),
        )

    def tag_for(self, name: str) -> bytes | None:
        """The tag addressed to roster member ``name``, if any."""
        for tag_name, tag in zip(self.tag_names, self.tags, strict=True):
            if tag_name == name:
                return tag
        return None


@dataclass(frozen=True)
class ShareKeysRequest(Message):
    """Server -> client, stage 2: the keys advertised by every client that answered stage 1.

    The same for every client: the encoding carries receive keys as roots only (each client
    gets its own keys in a :class:`ReceiveKeys`), no tags (a per-client field) and no proofs of
    possession (for the server only).
    """

    keys: tuple[AdvertisedKeys, ...]
    KIND = "share_keys_request"

    def _body(self) -> Fields:
        return {
            "node_ids": [k.node_id for k in self.keys],
            "cipher_publics": [k.cipher_public for k in self.keys],
            "mask_publics": [k.mask_public for k in self.keys],
            "config_digests": [k.config_digest for k in self.keys],
            "identities": [k.identity.encode("utf-8") for k in self.keys],
            "signatures": [k.signature for k in self.keys],
            "receive_roots": [k.receive_root for k in self.keys],
        }

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> ShareKeysRequest:
        ids = ints(fields, "node_ids")
        ciphers, masks = bytes_list(fields, "cipher_publics"), bytes_list(fields, "mask_publics")
        digests, signatures = bytes_list(fields, "config_digests"), bytes_list(fields, "signatures")
        names, roots = _names(fields, "identities"), bytes_list(fields, "receive_roots")
        aligned("share_keys_request", ids, ciphers, masks, digests, signatures, names, roots)
        rows = zip(ids, ciphers, masks, digests, names, signatures, roots, strict=True)
        return cls(
            tuple(
                AdvertisedKeys(v, c, m, d, identity=n, signature=s, receive_root=r)
                for v, c, m, d, n, s, r in rows
            )
        )


@dataclass(frozen=True)
class ReceiveKeys(Message):
    """Server -> one client, stage 2: each share holder's receive key for this client.

    ``keys[i]`` is ``holders[i]``'s receive key for this client and ``paths[i]`` its Merkle
    path to the root that holder signed.
    """

    holders: tuple[int, ...]
    keys: tuple[bytes, ...]
    paths: tuple[bytes, ...]
    KIND = "receive_keys"

    def _body(self) -> Fields:
        return {"holders": list(self.holders), "keys": list(self.keys), "paths": list(self.paths)}

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> ReceiveKeys:
        holders, keys = ints(fields, "holders"), bytes_list(fields, "keys")
        paths = bytes_list(fields, "paths")
        aligned("receive_keys", holders, keys, paths)
        return cls(holders, keys, paths)


@dataclass(frozen=True)
class EncryptedShares(Message):
    """Client -> server, stage 2: one AEAD ciphertext of (self-mask share, key share) per holder.

    ``self_mask_commitment`` is SHA-256 of the key context and the self-mask seed; the server
    checks reconstructed seeds against it. ``share_commitments`` holds, for each holder of
    ``holders`` (the recipients and the client itself), SHA-256 commitments to its self-mask
    share and to its key share, in that order: a holder that reveals a wrong share is caught
    and dropped (:func:`fedkd.secagg.auth.share_commitment`). With a roster, ``signature`` is
    the client's signature of the Merkle root over (recipient, ciphertext, commitments) and
    ``paths[i]`` the path of recipient ``i``'s leaf, so a recipient can prove a bad ciphertext
    came from this client (:mod:`fedkd.secagg.accusation`) and the server just relays.
    ``unverified`` reports the neighbours whose receive key for this client did not match the
    root they signed: it sent them nothing (the server checks the report).
    """

    node_id: int
    recipients: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]
    self_mask_commitment: bytes
    share_commitments: tuple[bytes, ...] = ()
    signature: bytes = b""
    paths: tuple[bytes, ...] = ()  # per recipient, its ciphertext's path to the signed root
    unverified: tuple[int, ...] = ()  # neighbours whose receive key did not check out
    KIND = "encrypted_shares"

    @property
    def holders(self) -> tuple[int, ...]:
        """The clients holding shares of this client's secrets, in commitment order."""
        return (*self.recipients, self.node_id)

    def commitments_for(self, index: int) -> bytes:
        """The two commitments (64 bytes) of holder ``index`` of :attr:`holders`."""
        return b"".join(self.share_commitments[2 * index : 2 * index + 2])

    def _body(self) -> Fields:
        return {
            "node_id": self.node_id,
            "recipients": list(self.recipients),
            "ciphertexts": list(self.ciphertexts),
            "self_mask_commitment": self.self_mask_commitment,
            "share_commitments": list(self.share_commitments),
            "signature": self.signature,
            "paths": list(self.paths),
            "unverified": list(self.unverified),
        }

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> EncryptedShares:
        recipients, ciphertexts = ints(fields, "recipients"), bytes_list(fields, "ciphertexts")
        aligned("encrypted_shares", recipients, ciphertexts)
        return cls(
            get_int(fields, "node_id"),
            recipients,
            ciphertexts,
            get_bytes(fields, "self_mask_commitment"),
            bytes_list(fields, "share_commitments"),
            get_bytes(fields, "signature"),
            bytes_list(fields, "paths"),
            ints(fields, "unverified"),
        )
