"""Wire vocabulary: the stages and the message of each direction of each stage.

Every message converts to a flat field dictionary (:meth:`to_fields`; values ``int``, ``bytes``,
``str``, ``float``, ``list[int]``, ``list[bytes]`` -- what a Flower ``ConfigRecord`` holds -- and,
for :class:`MaskedInput` only, one ``uint64`` array for an ``ArrayRecord``) and to canonical bytes
(:meth:`to_bytes`, used to count traffic). ``from_fields``/``from_bytes`` invert them and check
the message kind.

Stage flow (server -> clients, clients -> server):

1. ADVERTISE: :class:`AdvertiseRequest` -> :class:`AdvertisedKeys`
2. SHARE: :class:`ShareKeysRequest` -> :class:`EncryptedShares`
3. MASKED_INPUT: :class:`MaskedInputRequest` -> :class:`MaskedInput`
3b. CONSISTENCY (rounds with a roster only): :class:`ConsistencyRequest` ->
    :class:`ConsistencyReply`
4. UNMASK: :class:`UnmaskRequest` -> :class:`UnmaskReply`
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from fedkd.secagg.codec import (
    Fields,
    FieldValue,
    decode_fields,
    encode_fields,
    get_array,
    get_bytes,
    get_bytes_list,
    get_int,
    get_ints,
    get_str,
)
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import WireFormatError


class Stage(enum.Enum):
    """The stages of a round, in protocol order (CONSISTENCY only in rounds with a roster)."""

    ADVERTISE = "advertise"
    SHARE = "share"
    MASKED_INPUT = "masked_input"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"


_M = TypeVar("_M", bound="_Message")


class _Message:
    """Shared (de)serialisation; subclasses define KIND, _body and _from_body."""

    KIND = ""

    def _body(self) -> Fields:
        raise TypeError("abstract")

    @classmethod
    def _from_body(cls: type[_M], fields: Mapping[str, FieldValue]) -> _M:
        raise TypeError("abstract")

    def to_fields(self) -> Fields:
        """Flat field dictionary including the ``message`` kind."""
        return {"message": self.KIND, **self._body()}

    @classmethod
    def from_fields(cls: type[_M], fields: Mapping[str, FieldValue]) -> _M:
        """Decode :meth:`to_fields` output, checking the message kind."""
        kind = fields.get("message")
        if kind != cls.KIND:
            raise WireFormatError(f"expected a {cls.KIND!r} message, got {kind!r}")
        return cls._from_body(fields)

    def to_bytes(self) -> bytes:
        """Canonical byte encoding."""
        return encode_fields(self.to_fields())

    @classmethod
    def from_bytes(cls: type[_M], data: bytes) -> _M:
        """Decode :meth:`to_bytes` output."""
        return cls.from_fields(decode_fields(data))


def _ints(fields: Mapping[str, FieldValue], key: str) -> tuple[int, ...]:
    return tuple(get_ints(fields, key))


def _bytes_list(fields: Mapping[str, FieldValue], key: str) -> tuple[bytes, ...]:
    return tuple(get_bytes_list(fields, key))


@dataclass(frozen=True)
class AdvertiseRequest(_Message):
    """Server -> client, stage 1: the round's public configuration."""

    config: SecAggConfig
    KIND = "advertise_request"

    def _body(self) -> Fields:
        return self.config.to_fields()

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> AdvertiseRequest:
        return cls(config=SecAggConfig.from_fields(fields))


@dataclass(frozen=True)
class AdvertisedKeys(_Message):
    """Client -> server, stage 1: two X25519 public keys and the client's config digest.

    With a roster, ``identity`` names the client's roster entry and ``signature`` is its
    Ed25519 signature of :func:`fedkd.secagg.auth.keys_message` (empty without a roster).
    """

    node_id: int
    cipher_public: bytes  # c_pk: encrypts shares
    mask_public: bytes  # s_pk: agrees pairwise mask seeds
    config_digest: bytes
    identity: str = ""
    signature: bytes = b""
    tag_names: tuple[str, ...] = ()  # roster members the keys are tagged for
    tags: tuple[bytes, ...] = ()  # HMAC tags, one per name (fedkd.secagg.client_auth)
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
        }

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> AdvertisedKeys:
        names, tags = _bytes_list(fields, "tag_names"), _bytes_list(fields, "tags")
        if len(names) != len(tags):
            raise WireFormatError("advertised_keys: tag names and tags differ in length")
        try:
            tag_names = tuple(n.decode("utf-8") for n in names)
        except UnicodeDecodeError:
            raise WireFormatError("advertised_keys: a tag name is not UTF-8") from None
        return cls(
            get_int(fields, "node_id"),
            get_bytes(fields, "cipher_public"),
            get_bytes(fields, "mask_public"),
            get_bytes(fields, "config_digest"),
            get_str(fields, "identity"),
            get_bytes(fields, "signature"),
            tag_names,
            tags,
        )

    def tag_for(self, name: str) -> bytes | None:
        """The tag addressed to roster member ``name``, if any."""
        for tag_name, tag in zip(self.tag_names, self.tags, strict=True):
            if tag_name == name:
                return tag
        return None


@dataclass(frozen=True)
class ShareKeysRequest(_Message):
    """Server -> client, stage 2: the keys advertised by every client that answered stage 1."""

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
        }

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> ShareKeysRequest:
        columns = (
            _ints(fields, "node_ids"),
            _bytes_list(fields, "cipher_publics"),
            _bytes_list(fields, "mask_publics"),
            _bytes_list(fields, "config_digests"),
        )
        names, signatures = _bytes_list(fields, "identities"), _bytes_list(fields, "signatures")
        if len({len(c) for c in (*columns, names, signatures)}) != 1:
            raise WireFormatError("share_keys_request columns have different lengths")
        try:
            identities = tuple(name.decode("utf-8") for name in names)
        except UnicodeDecodeError:
            raise WireFormatError("share_keys_request: an identity is not UTF-8") from None
        rows = zip(*columns, identities, signatures, strict=True)
        return cls(keys=tuple(AdvertisedKeys(*row) for row in rows))


@dataclass(frozen=True)
class EncryptedShares(_Message):
    """Client -> server, stage 2: one AEAD ciphertext of (self-mask share, key share) per holder.

    ``self_mask_commitment`` is SHA-256 of the key context and the self-mask seed; the server
    checks reconstructed seeds against it. ``share_commitments`` holds, for each holder of
    ``holders`` (the recipients and the client itself), SHA-256 commitments to its self-mask
    share and to its key share, in that order: a holder that reveals a wrong share is caught
    and dropped (:func:`fedkd.secagg.auth.share_commitment`).
    """

    node_id: int
    recipients: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]
    self_mask_commitment: bytes
    share_commitments: tuple[bytes, ...] = ()
    KIND = "encrypted_shares"

    @property
    def holders(self) -> tuple[int, ...]:
        """The clients holding shares of this client's secrets, in commitment order."""
        return (*self.recipients, self.node_id)

    def _body(self) -> Fields:
        return {
            "node_id": self.node_id,
            "recipients": list(self.recipients),
            "ciphertexts": list(self.ciphertexts),
            "self_mask_commitment": self.self_mask_commitment,
            "share_commitments": list(self.share_commitments),
        }

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> EncryptedShares:
        recipients, ciphertexts = _ints(fields, "recipients"), _bytes_list(fields, "ciphertexts")
        if len(recipients) != len(ciphertexts):
            raise WireFormatError("encrypted_shares: recipients and ciphertexts differ in length")
        return cls(
            get_int(fields, "node_id"),
            recipients,
            ciphertexts,
            get_bytes(fields, "self_mask_commitment"),
            _bytes_list(fields, "share_commitments"),
        )


@dataclass(frozen=True)
class MaskedInputRequest(_Message):
    """Server -> client, stage 3: the ciphertexts other clients addressed to this client."""

    senders: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]
    KIND = "masked_input_request"

    def _body(self) -> Fields:
        return {"senders": list(self.senders), "ciphertexts": list(self.ciphertexts)}

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> MaskedInputRequest:
        senders, ciphertexts = _ints(fields, "senders"), _bytes_list(fields, "ciphertexts")
        if len(senders) != len(ciphertexts):
            raise WireFormatError("masked_input_request: senders and ciphertexts differ in length")
        return cls(senders, ciphertexts)


@dataclass(frozen=True, eq=False)
class MaskedInput(_Message):
    """Client -> server, stage 3: the masked quantized input (``uint64``, length ``d``)."""

    node_id: int
    masked: np.ndarray
    KIND = "masked_input"

    def _body(self) -> Fields:
        return {"node_id": self.node_id, "masked": self.masked}

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> MaskedInput:
        masked = get_array(fields, "masked")
        if masked.dtype != np.uint64 or masked.ndim != 1:
            raise WireFormatError(
                f"masked input must be 1-D uint64, got {masked.dtype} {masked.shape}"
            )
        return cls(get_int(fields, "node_id"), masked)


@dataclass(frozen=True)
class UnmaskRequest(_Message):
    """Server -> client, stage 4: who sent a masked input (survivors) and who did not (dropped).

    With a roster, ``signers``/``signatures`` relay the consistency-stage signatures of the
    survivor set, and ``taggers``/``tags`` the tags addressed to this client (empty without
    a roster).
    """

    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    signers: tuple[int, ...] = ()
    signatures: tuple[bytes, ...] = ()
    taggers: tuple[int, ...] = ()
    tags: tuple[bytes, ...] = ()
    KIND = "unmask_request"

    def _body(self) -> Fields:
        return {
            "survivors": list(self.survivors),
            "dropped": list(self.dropped),
            "signers": list(self.signers),
            "signatures": list(self.signatures),
            "taggers": list(self.taggers),
            "tags": list(self.tags),
        }

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> UnmaskRequest:
        signers, signatures = _ints(fields, "signers"), _bytes_list(fields, "signatures")
        taggers, tags = _ints(fields, "taggers"), _bytes_list(fields, "tags")
        if len(signers) != len(signatures) or len(taggers) != len(tags):
            raise WireFormatError("unmask_request: signers/taggers and their values differ")
        lists = _ints(fields, "survivors"), _ints(fields, "dropped")
        return cls(*lists, signers, signatures, taggers, tags)


@dataclass(frozen=True)
class ConsistencyRequest(_Message):
    """Server -> client, stage 3b: the clients whose masked inputs the server holds."""

    survivors: tuple[int, ...]
    KIND = "consistency_request"

    def _body(self) -> Fields:
        return {"survivors": list(self.survivors)}

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> ConsistencyRequest:
        return cls(_ints(fields, "survivors"))


@dataclass(frozen=True)
class ConsistencyReply(_Message):
    """Client -> server, stage 3b: the client's signature of the survivor set.

    ``tags[i]`` is an HMAC of the same set for ``recipients[i]``, keyed by the pairwise share
    key the two derived in stage 2 (authenticated by the signed keys): a share holder checks a
    tag in microseconds where a signature costs an Ed25519 verification.
    """

    node_id: int
    signature: bytes
    recipients: tuple[int, ...] = ()
    tags: tuple[bytes, ...] = ()
    KIND = "consistency_reply"

    def _body(self) -> Fields:
        return {
            "node_id": self.node_id,
            "signature": self.signature,
            "recipients": list(self.recipients),
            "tags": list(self.tags),
        }

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> ConsistencyReply:
        recipients, tags = _ints(fields, "recipients"), _bytes_list(fields, "tags")
        if len(recipients) != len(tags):
            raise WireFormatError("consistency_reply: recipients and tags differ in length")
        return cls(get_int(fields, "node_id"), get_bytes(fields, "signature"), recipients, tags)


@dataclass(frozen=True)
class UnmaskReply(_Message):
    """Client -> server, stage 4: self-mask shares of survivors, key shares of dropped clients."""

    node_id: int
    self_mask_owners: tuple[int, ...]
    self_mask_shares: tuple[bytes, ...]
    key_owners: tuple[int, ...]
    key_shares: tuple[bytes, ...]
    KIND = "unmask_reply"

    def _body(self) -> Fields:
        return {
            "node_id": self.node_id,
            "self_mask_owners": list(self.self_mask_owners),
            "self_mask_shares": list(self.self_mask_shares),
            "key_owners": list(self.key_owners),
            "key_shares": list(self.key_shares),
        }

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> UnmaskReply:
        reply = cls(
            get_int(fields, "node_id"),
            _ints(fields, "self_mask_owners"),
            _bytes_list(fields, "self_mask_shares"),
            _ints(fields, "key_owners"),
            _bytes_list(fields, "key_shares"),
        )
        if len(reply.self_mask_owners) != len(reply.self_mask_shares) or len(
            reply.key_owners
        ) != len(reply.key_shares):
            raise WireFormatError("unmask_reply: owners and shares differ in length")
        return reply
