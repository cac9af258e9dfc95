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

from functools import lru_cache

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


@lru_cache(maxsize=64)
def _lane_plan(bits: int) -> tuple[tuple[int, int, int, int], ...]:
    """For each residue ``r`` of a word index mod 64: its lane, shift, and spill (if any).

    64 words of ``bits`` bits fill exactly ``bits`` 64-bit lanes, so word ``g * 64 + r``
    starts in lane ``g * bits + lane`` at bit ``shift``; ``spill`` is 1 when it runs into the
    next lane (never past the group's last lane). Each residue class is then one vectorised
    numpy operation over the groups.
    """
    plan = []
    for r in range(WORD_BITS):
        start = r * bits
        lane, shift = divmod(start, WORD_BITS)
        plan.append((r, lane, shift, int(shift + bits > WORD_BITS)))
    return tuple(plan)


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
    groups = -(-words.size // WORD_BITS)
    padded = np.zeros(groups * WORD_BITS, dtype=np.uint64)
    padded[: words.size] = words
    residues = np.ascontiguousarray(padded.reshape(groups, WORD_BITS).T)  # (64, groups)
    lanes = np.zeros((bits, groups), dtype=np.uint64)
    scratch = np.empty(groups, dtype=np.uint64)
    for r, lane, shift, spill in _lane_plan(bits):
        np.left_shift(residues[r], np.uint64(shift), out=scratch)
        np.bitwise_or(lanes[lane], scratch, out=lanes[lane])
        if spill:
            np.right_shift(residues[r], np.uint64(WORD_BITS - shift), out=scratch)
            np.bitwise_or(lanes[lane + 1], scratch, out=lanes[lane + 1])
    packed = np.ascontiguousarray(lanes.T).astype("<u8", copy=False).view(np.uint8).reshape(-1)
    return packed[: packed_size(words.size, bits)]


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
    groups = -(-length // WORD_BITS)
    raw = np.zeros(groups * bits * 8, dtype=np.uint8)
    raw[:expected] = packed
    lanes = np.ascontiguousarray(raw.view("<u8").astype(np.uint64).reshape(groups, bits).T)
    words = np.empty((WORD_BITS, groups), dtype=np.uint64)  # (64, groups): one row per residue
    scratch = np.empty(groups, dtype=np.uint64)
    mask = word_mask(bits)
    for r, lane, shift, spill in _lane_plan(bits):
        row = words[r]
        np.right_shift(lanes[lane], np.uint64(shift), out=row)
        if spill:
            np.left_shift(lanes[lane + 1], np.uint64(WORD_BITS - shift), out=scratch)
            np.bitwise_or(row, scratch, out=row)
        np.bitwise_and(row, mask, out=row)
    return np.ascontiguousarray(words.T).reshape(-1)[:length].copy()
