"""Wire messages of stages 3 to 4: masked input, accusations, consistency and unmask.

Re-exported by :mod:`fedkd.secagg.wire`, which documents the stage flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedkd.secagg.codec import Fields, FieldValue, get_array, get_bytes, get_int
from fedkd.secagg.errors import WireFormatError
from fedkd.secagg.message import Message, aligned, bytes_list, ints


@dataclass(frozen=True)
class MaskedInputRequest(Message):
    """Server -> client, stage 3: the ciphertexts other clients addressed to this client.

    Per sender (aligned with ``senders``): ``commitments[i]`` are the sender's two commitments
    to the shares inside (64 bytes, authenticated with the ciphertext); with a roster,
    ``signatures[i]`` is the sender's signature of its ciphertext root and ``paths[i]`` this
    ciphertext's Merkle path to it (the evidence for an accusation; empty without a roster).
    """

    senders: tuple[int, ...]
    ciphertexts: tuple[bytes, ...]
    commitments: tuple[bytes, ...] = ()
    signatures: tuple[bytes, ...] = ()
    paths: tuple[bytes, ...] = ()
    KIND = "masked_input_request"

    def _body(self) -> Fields:
        return {
            "senders": list(self.senders),
            "ciphertexts": list(self.ciphertexts),
            "commitments": list(self.commitments),
            "signatures": list(self.signatures),
            "paths": list(self.paths),
        }

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> MaskedInputRequest:
        columns = [ints(fields, "senders")] + [
            bytes_list(fields, key) for key in ("ciphertexts", "commitments", "signatures", "paths")
        ]
        aligned("masked_input_request", *(c for c in columns[:2]))
        for column in columns[2:]:
            if column:
                aligned("masked_input_request", columns[0], column)
        return cls(*columns)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Accusations(Message):
    """Client -> server, stage 3 (with the masked input): senders whose shares were bad.

    ``evidence[i]`` is this client's receive key for ``accused[i]`` (the private half: it
    opens that one direction only) when the sender's signature on its ciphertext verified,
    and empty when it did not (:mod:`fedkd.secagg.accusation` decides who lied).
    """

    accused: tuple[int, ...]
    evidence: tuple[bytes, ...]
    KIND = "accusations"

    def _body(self) -> Fields:
        return {"accused": list(self.accused), "evidence": list(self.evidence)}

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> Accusations:
        accused, evidence = ints(fields, "accused"), bytes_list(fields, "evidence")
        aligned("accusations", accused, evidence)
        if len(set(accused)) != len(accused):
            raise WireFormatError("accusations: a sender is accused twice")
        return cls(accused, evidence)


@dataclass(frozen=True, eq=False)
class MaskedInput(Message):
    """Client -> server, stage 3: the masked quantized input (``uint64``, length ``d``).

    ``accused``/``evidence``: the client's :class:`Accusations` (it masked with none of them).
    """

    node_id: int
    masked: np.ndarray
    accused: tuple[int, ...] = ()
    evidence: tuple[bytes, ...] = ()
    KIND = "masked_input"

    def _body(self) -> Fields:
        return {
            "node_id": self.node_id,
            "masked": self.masked,
            "accused": list(self.accused),
            "evidence": list(self.evidence),
        }

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> MaskedInput:
        masked = get_array(fields, "masked")
        if masked.dtype != np.uint64 or masked.ndim != 1:
            raise WireFormatError(
                f"masked input must be 1-D uint64, got {masked.dtype} {masked.shape}"
            )
        accused, evidence = ints(fields, "accused"), bytes_list(fields, "evidence")
        aligned("masked_input", accused, evidence)
        return cls(get_int(fields, "node_id"), masked, accused, evidence)


@dataclass(frozen=True)
class UnmaskRequest(Message):
    """Server -> client, stage 4: who sent a masked input (survivors) and who did not (dropped).

    With a roster, ``signers``/``signatures`` relay consistency-stage signatures of the
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
        signers, signatures = ints(fields, "signers"), bytes_list(fields, "signatures")
        taggers, tags = ints(fields, "taggers"), bytes_list(fields, "tags")
        aligned("unmask_request signatures", signers, signatures)
        aligned("unmask_request tags", taggers, tags)
        lists = ints(fields, "survivors"), ints(fields, "dropped")
        return cls(*lists, signers, signatures, taggers, tags)


@dataclass(frozen=True)
class ConsistencyRequest(Message):
    """Server -> client, stage 3b: the clients whose masked inputs the server holds."""

    survivors: tuple[int, ...]
    KIND = "consistency_request"

    def _body(self) -> Fields:
        return {"survivors": list(self.survivors)}

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> ConsistencyRequest:
        return cls(ints(fields, "survivors"))


@dataclass(frozen=True)
class ConsistencyReply(Message):
    """Client -> server, stage 3b: the client's signature of the survivor set.

    ``tags[i]`` says the same to ``recipients[i]`` only: an HMAC keyed by the direction
    this client -> recipient (the key it encrypted its shares to that recipient with), over a
    message naming both (:func:`fedkd.secagg.auth.endorsement_tag`). A recipient checks it in
    microseconds where a signature costs an Ed25519 verification; neither it nor the server
    can turn it into a tag of the recipient's, or of anyone else's.
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
        recipients, tags = ints(fields, "recipients"), bytes_list(fields, "tags")
        aligned("consistency_reply", recipients, tags)
        return cls(get_int(fields, "node_id"), get_bytes(fields, "signature"), recipients, tags)


@dataclass(frozen=True)
class UnmaskReply(Message):
    """Client -> server, stage 4: self-mask shares of survivors, key shares of dropped clients.

    ``pair_partners``/``pair_seeds``: for each dropped client this client masked with, the
    pairwise seed itself, so the server can remove that mask even when the dropped client's
    key cannot be rebuilt (a client that dealt bad shares and was dropped for it).
    """

    node_id: int
    self_mask_owners: tuple[int, ...]
    self_mask_shares: tuple[bytes, ...]
    key_owners: tuple[int, ...]
    key_shares: tuple[bytes, ...]
    pair_partners: tuple[int, ...] = ()
    pair_seeds: tuple[bytes, ...] = ()
    KIND = "unmask_reply"

    def _body(self) -> Fields:
        return {
            "node_id": self.node_id,
            "self_mask_owners": list(self.self_mask_owners),
            "self_mask_shares": list(self.self_mask_shares),
            "key_owners": list(self.key_owners),
            "key_shares": list(self.key_shares),
            "pair_partners": list(self.pair_partners),
            "pair_seeds": list(self.pair_seeds),
        }

    @classmethod
    def _from_body(cls, fields: Mapping[str, FieldValue]) -> UnmaskReply:
        reply = cls(
            get_int(fields, "node_id"),
            ints(fields, "self_mask_owners"),
            bytes_list(fields, "self_mask_shares"),
            ints(fields, "key_owners"),
            bytes_list(fields, "key_shares"),
            ints(fields, "pair_partners"),
            bytes_list(fields, "pair_seeds"),
        )
        aligned("unmask_reply seeds", reply.self_mask_owners, reply.self_mask_shares)
        aligned("unmask_reply keys", reply.key_owners, reply.key_shares)
        aligned("unmask_reply pairs", reply.pair_partners, reply.pair_seeds)
        return reply
