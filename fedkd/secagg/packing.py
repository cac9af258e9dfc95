"""Masked words on the wire, packed to the modulus' width instead of 64 bits each.

Every secure-aggregation value lives in ``Z_{2^k}`` with ``k = SecAggConfig.modulus_bits``
(the quantisation bits plus room for the sum of ``n`` clients, plus any noise headroom). The
arithmetic stays in numpy's wrapping ``uint64`` -- reducing modulo ``2^k`` commutes with it
because ``2^k`` divides ``2^64`` -- and only the wire carries ``k`` bits per word: a client
sends ``ceil(d * k / 8)`` bytes instead of ``8 * d``. With 16 quantisation bits and 20
clients that is 21 bits a word, a third of the unpacked size.

Bit order is little-endian within each word and across the byte string (word ``i`` occupies
bits ``[i*k, (i+1)*k)``), so the format does not depend on the host.
"""

from __future__ import annotations

import numpy as np

from fedkd.secagg.errors import WireFormatError

WORD_BITS = 64


def word_mask(bits: int) -> np.uint64:
    """``2^bits - 1`` as a ``uint64`` (all ones for 64 bits)."""
    if not 1 <= bits <= WORD_BITS:
        raise ValueError(f"modulus bits must lie in [1, 64], got {bits}")
    return np.uint64((1 << bits) - 1)


def reduce_words(values: np.ndarray, bits: int) -> np.ndarray:
    """``values mod 2^bits`` in place (``uint64``); returns ``values``."""
    np.bitwise_and(values, word_mask(bits), out=values)
    return values


def packed_size(length: int, bits: int) -> int:
    """Bytes that ``length`` words of ``bits`` bits take on the wire."""
    return (length * bits + 7) // 8


def pack_words(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack ``uint64`` words, each already below ``2^bits``, into a ``uint8`` byte string.

    Raises
    ------
    ValueError
        When a word does not fit in ``bits`` bits (packing would silently change it).
    """
    words = np.ascontiguousarray(values, dtype="<u8")
    if words.ndim != 1:
        raise ValueError(f"expected a 1-D vector of words, got shape {words.shape}")
    if bits < WORD_BITS and words.size and int(words.max()) >> bits:
        raise ValueError(f"a word does not fit in {bits} bits; reduce it modulo 2^{bits} first")
    if bits == WORD_BITS:
        return words.view(np.uint8).copy()
    as_bits = np.unpackbits(words.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    return np.packbits(as_bits[:, :bits].reshape(-1), bitorder="little")


def unpack_words(packed: object, bits: int, length: int) -> np.ndarray:
    """Invert :func:`pack_words`: ``length`` words below ``2^bits`` as ``uint64``.

    Raises
    ------
    WireFormatError
        When ``packed`` is not a 1-D ``uint8`` array of exactly ``packed_size(length, bits)``
        bytes (a wrong-length or wrong-type masked input from a client or a relay).
    """
    expected = packed_size(length, bits)
    if (
        not isinstance(packed, np.ndarray)
        or packed.dtype != np.uint8
        or packed.shape != (expected,)
    ):
        what = (
            f"{packed.dtype} {packed.shape}"
            if isinstance(packed, np.ndarray)
            else type(packed).__name__
        )
        raise WireFormatError(
            f"a masked input must be {expected} packed bytes ({length} words of {bits} bits), "
            f"got {what}"
        )
    if bits == WORD_BITS:
        return packed.view("<u8").astype(np.uint64)
    as_bits = np.unpackbits(packed, bitorder="little", count=length * bits).reshape(length, bits)
    full = np.zeros((length, WORD_BITS), dtype=np.uint8)
    full[:, :bits] = as_bits
    words = np.packbits(full, axis=1, bitorder="little").view("<u8").reshape(length)
    return words.astype(np.uint64)
