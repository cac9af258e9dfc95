"""Canonical, self-describing byte encoding of flat field dictionaries.

Used for the config digest (so every client hashes the same bytes), for message sizes, and for
persisting client state between messages. A field dictionary maps ``str`` keys to ``int``,
``float``, ``str``, ``bytes``, ``list[int]``, ``list[bytes]`` or a 1-D ``numpy.uint64`` array.
Keys are written in sorted order, so equal dictionaries encode to equal bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np

from fedkd.secagg.errors import WireFormatError

FieldValue = int | float | str | bytes | list[int] | list[bytes] | np.ndarray
Fields = dict[str, FieldValue]

_MAGIC = b"FKSA1"


def _pack_int(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8 or 1, "big", signed=True)
    return struct.pack(">I", len(raw)) + raw


def _pack_bytes(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _pack_value(value: FieldValue) -> bytes:
    if isinstance(value, bool):
        raise WireFormatError("bool fields are not supported; use int 0/1")
    if isinstance(value, int):
        return b"i" + _pack_int(value)
    if isinstance(value, float):
        return b"f" + struct.pack(">d", value)
    if isinstance(value, str):
        return b"s" + _pack_bytes(value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray)):
        return b"b" + _pack_bytes(bytes(value))
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint64 or value.ndim != 1:
            raise WireFormatError(f"arrays must be 1-D uint64, got {value.dtype} {value.shape}")
        return b"a" + _pack_bytes(value.astype("<u8", copy=False).tobytes())
    if isinstance(value, list):
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return b"I" + struct.pack(">I", len(value)) + b"".join(_pack_int(int(v)) for v in value)
        if all(isinstance(v, (bytes, bytearray)) for v in value):
            return (
                b"B"
                + struct.pack(">I", len(value))
                + b"".join(_pack_bytes(bytes(v)) for v in value)
            )
    raise WireFormatError(
        f"unsupported field value of type {type(value).__name__}; accepted: int, float, str, "
        "bytes, list[int], list[bytes], 1-D uint64 array"
    )


def encode_fields(fields: Mapping[str, FieldValue]) -> bytes:
    """Encode a field dictionary canonically (sorted keys, typed, length-prefixed).

    Parameters
    ----------
    fields : Mapping[str, FieldValue]
        The fields to encode.

    Returns
    -------
    bytes
        The canonical encoding; equal dictionaries give equal bytes.
    """
    parts = [_MAGIC, struct.pack(">I", len(fields))]
    for key in sorted(fields):
        parts.append(_pack_bytes(key.encode("utf-8")))
        parts.append(_pack_value(fields[key]))
    return b"".join(parts)


_U32 = struct.Struct(">I")


class _Reader:
    """Reads length-prefixed values off one ``bytes`` object (lists in one tight loop each)."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise WireFormatError("truncated message")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise WireFormatError("truncated message")
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def int_(self) -> int:
        return int.from_bytes(self.take(self.u32()), "big", signed=True)

    def bytes_(self) -> bytes:
        return self.take(self.u32())

    def chunks(self, count: int) -> list[bytes]:
        """``count`` length-prefixed byte strings."""
        data, pos, end, unpack = self.data, self.pos, len(self.data), _U32.unpack_from
        out = []
        for _ in range(count):
            if pos + 4 > end:
                raise WireFormatError("truncated message")
            (size,) = unpack(data, pos)
            pos += 4
            if pos + size > end:
                raise WireFormatError("truncated message")
            out.append(data[pos : pos + size])
            pos += size
        self.pos = pos
        return out


def _read_value(reader: _Reader) -> FieldValue:
    tag = reader.take(1)
    if tag == b"i":
        return reader.int_()
    if tag == b"f":
        return float(struct.unpack(">d", reader.take(8))[0])
    if tag == b"s":
        return reader.bytes_().decode("utf-8")
    if tag == b"b":
        return reader.bytes_()
    if tag == b"a":
        return np.frombuffer(reader.bytes_(), dtype="<u8").astype(np.uint64)
    if tag == b"I":
        return [int.from_bytes(raw, "big", signed=True) for raw in reader.chunks(reader.u32())]
    if tag == b"B":
        return reader.chunks(reader.u32())
    raise WireFormatError(f"unknown field tag {tag!r}")


def decode_fields(data: bytes) -> Fields:
    """Decode bytes written by :func:`encode_fields`.

    Parameters
    ----------
    data : bytes
        An encoding produced by :func:`encode_fields`.

    Returns
    -------
    dict[str, FieldValue]
        The decoded fields.
    """
    reader = _Reader(data)
    if reader.take(len(_MAGIC)) != _MAGIC:
        raise WireFormatError("not a fedkd secagg encoding (bad magic)")
    fields: Fields = {}
    for _ in range(reader.u32()):
        key = reader.bytes_().decode("utf-8")
        fields[key] = _read_value(reader)
    if reader.pos != len(reader.data):
        raise WireFormatError("trailing bytes after the last field")
    return fields


def _get(fields: Mapping[str, FieldValue], key: str) -> FieldValue:
    try:
        return fields[key]
    except KeyError:
        raise WireFormatError(f"missing field {key!r}; present: {sorted(fields)}") from None


def _wrong(key: str, wanted: str, value: object) -> WireFormatError:
    return WireFormatError(f"field {key!r} must be {wanted}, got {type(value).__name__}")


def get_int(fields: Mapping[str, FieldValue], key: str) -> int:
    """Read an ``int`` field (``WireFormatError`` when missing or of another type)."""
    value = _get(fields, key)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _wrong(key, "an int", value)
    return int(value)


def get_float(fields: Mapping[str, FieldValue], key: str) -> float:
    """Read a ``float`` field (ints accepted)."""
    value = _get(fields, key)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise _wrong(key, "a float", value)
    return float(value)


def get_str(fields: Mapping[str, FieldValue], key: str) -> str:
    """Read a ``str`` field."""
    value = _get(fields, key)
    if not isinstance(value, str):
        raise _wrong(key, "a str", value)
    return value


def get_bytes(fields: Mapping[str, FieldValue], key: str) -> bytes:
    """Read a ``bytes`` field."""
    value = _get(fields, key)
    if not isinstance(value, (bytes, bytearray)):
        raise _wrong(key, "bytes", value)
    return bytes(value)


def get_ints(fields: Mapping[str, FieldValue], key: str) -> list[int]:
    """Read a ``list[int]`` field."""
    value = _get(fields, key)
    if not isinstance(value, list) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ):
        raise _wrong(key, "a list of ints", value)
    return [int(v) for v in value]


def get_bytes_list(fields: Mapping[str, FieldValue], key: str) -> list[bytes]:
    """Read a ``list[bytes]`` field."""
    value = _get(fields, key)
    if not isinstance(value, list) or not all(isinstance(v, (bytes, bytearray)) for v in value):
        raise _wrong(key, "a list of bytes", value)
    return [bytes(v) for v in value]


def get_array(fields: Mapping[str, FieldValue], key: str) -> np.ndarray:
    """Read a 1-D ``uint64`` array field."""
    value = _get(fields, key)
    if not isinstance(value, np.ndarray) or value.dtype != np.uint64 or value.ndim != 1:
        raise _wrong(key, "a 1-D uint64 array", value)
    return value
