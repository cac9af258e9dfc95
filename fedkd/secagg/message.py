"""The stages of a round and the base every wire message shares (:mod:`fedkd.secagg.wire`).

Every message converts to a flat field dictionary (:meth:`Message.to_fields`; values ``int``,
``bytes``, ``str``, ``float``, ``list[int]``, ``list[bytes]`` -- what a Flower ``ConfigRecord``
holds -- and, for the masked input only, one ``uint64`` array) and to canonical bytes
(:meth:`Message.to_bytes`, used to count traffic). ``from_fields``/``from_bytes`` invert them and
check the message kind.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from fedkd.secagg.codec import (
    Fields,
    FieldValue,
    decode_fields,
    encode_fields,
    get_bytes_list,
    get_ints,
)
from fedkd.secagg.errors import WireFormatError


class Stage(enum.Enum):
    """The stages of a round, in protocol order (CONSISTENCY only in rounds with a roster).

    Their values are the stages' one name everywhere: envelope kinds
    (:mod:`fedkd.secagg.protocol`), timings, and the ``fault-stage`` run-config key.
    """

    ADVERTISE = "advertise"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    CONSISTENCY = "consistency"
    UNMASK = "unmask"

    @classmethod
    def _missing_(cls, value: object) -> Stage | None:
        # A client state stored before the stage took the protocol's name.
        return cls.SHARE_KEYS if value == "share" else None


_M = TypeVar("_M", bound="Message")


class Message:
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


def ints(fields: Mapping[str, FieldValue], key: str) -> tuple[int, ...]:
    """An int-list field as a tuple."""
    return tuple(get_ints(fields, key))


def bytes_list(fields: Mapping[str, FieldValue], key: str) -> tuple[bytes, ...]:
    """A bytes-list field as a tuple."""
    return tuple(get_bytes_list(fields, key))


def aligned(kind: str, *columns: tuple[object, ...]) -> None:
    """Refuse columns of one message that should be aligned but differ in length."""
    if len({len(column) for column in columns}) > 1:
        raise WireFormatError(f"{kind}: aligned columns differ in length")
