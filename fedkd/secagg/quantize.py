"""Fixed-point encoding of float vectors into Z_{2^k} and decoding of their sums.

A value ``x`` is clipped to ``[-clip, clip]`` and mapped to ``q = round((x + clip) * scale)`` with
``scale = (2**bits - 1) / (2 * clip)``, so ``0 <= q <= 2**bits - 1``. The server adds the ``q`` of
``m`` survivors modulo ``2**k`` (numpy ``uint64`` wraparound, then reduced); the sum is exact as
long as ``n * (2**bits - 1) + 2 * headroom < 2**k`` for the ``n`` participants, which
:func:`check_capacity` verifies before any client work. ``headroom`` is room (in levels) for
anything added on top of the levels, such as integer DP noise, which may push the sum below 0
or above ``n * (2**bits - 1)``: decoding is *centred* on the noiseless range's midpoint, so
such a sum still decodes exactly. :func:`modulus_bits_for` gives the smallest ``k``.
Decoding: ``sum = q_sum / scale - m * clip``; ``mean = sum / m``.
Rounding error: at most ``0.5 / scale`` per value and client, so ``m * 0.5 / scale`` per summed
coordinate (plus whatever clipping removed). Weighted means: aggregate ``concat([w * x, w])`` and
divide the two decoded sums.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from fedkd.secagg.errors import ConfigError

MODULUS_BITS = 64
MAX_BITS = 48  # float64 represents (x + clip) * scale exactly enough up to here
CLIP_WARNING_FRACTION = 0.01


def check_capacity(
    num_clients: int, bits: int, modulus_bits: int = MODULUS_BITS, headroom: int = 0
) -> None:
    """Check that the modular sum of ``num_clients`` quantized vectors cannot wrap around.

    Parameters
    ----------
    num_clients : int
        Number of clients whose values may be summed.
    bits : int
        Quantization bits per value.
    modulus_bits : int
        The sum is taken modulo ``2**modulus_bits`` (at most 64).
    headroom : int
        Levels the sum may stray outside ``[0, n * (2**bits - 1)]`` (e.g. a noise tail bound).

    Raises
    ------
    ConfigError
        When ``bits`` is outside ``[1, 48]``, ``modulus_bits`` outside ``[2, 64]``, or
        ``num_clients * (2**bits - 1) + 2 * headroom >= 2**modulus_bits``.
    """
    if not 1 <= bits <= MAX_BITS:
        raise ConfigError(f"bits={bits} is invalid; accepted: 1 <= bits <= {MAX_BITS}")
    if not 2 <= modulus_bits <= MODULUS_BITS:
        raise ConfigError(f"modulus_bits={modulus_bits} is invalid; accepted: 2..{MODULUS_BITS}")
    if headroom < 0:
        raise ConfigError(f"headroom={headroom} is invalid; accepted: >= 0 levels")
    if num_clients * (2**bits - 1) + 2 * headroom >= 2**modulus_bits:
        needed = modulus_bits_for(num_clients, bits, headroom, strict=False)
        fits = [
            b
            for b in range(bits, 0, -1)
            if num_clients * (2**b - 1) + 2 * headroom < 2**modulus_bits
        ]
        advice = f"use bits <= {fits[0]}" if fits else "use fewer clients or less headroom"
        raise ConfigError(
            f"the sum of {num_clients} clients at bits={bits} (headroom {headroom} levels) "
            f"overflows the 2^{modulus_bits} modulus (it needs {needed} bits); {advice}"
        )


def modulus_bits_for(num_clients: int, bits: int, headroom: int = 0, *, strict: bool = True) -> int:
    """Smallest ``k`` with ``num_clients * (2**bits - 1) + 2 * headroom < 2**k``.

    This is the width a masked word needs on the wire (``bits + ceil(log2 n)`` without
    headroom). With ``strict`` a width over 64 raises :class:`ConfigError`.
    """
    span = num_clients * (2**bits - 1) + 2 * max(headroom, 0)
    needed = max(2, span.bit_length())
    if strict and needed > MODULUS_BITS:
        raise ConfigError(
            f"the sum of {num_clients} clients at bits={bits} (headroom {headroom} levels) "
            f"needs {needed} > {MODULUS_BITS} modulus bits; use fewer bits"
        )
    return needed


@dataclass(frozen=True)
class QuantizedVector:
    """A quantized vector and the share of its entries that clipping changed."""

    values: np.ndarray  # (d,) uint64 in [0, 2**bits - 1]
    clipped_fraction: float


@dataclass(frozen=True)
class Quantizer:
    """Fixed-point codec with clipping range ``[-clip, clip]`` and ``bits`` bits per value."""

    clip: float
    bits: int

    def __post_init__(self) -> None:
        if not (np.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"clip={self.clip} is invalid; accepted: a finite value > 0")
        check_capacity(1, self.bits)

    @property
    def scale(self) -> float:
        """Quantization steps per unit of the input."""
        return (2**self.bits - 1) / (2.0 * self.clip)

    @property
    def max_level(self) -> int:
        """Largest quantized value, ``2**bits - 1``."""
        return int(2**self.bits - 1)

    def error_bound(self, count: int = 1) -> float:
        """Largest rounding error of a decoded sum of ``count`` clients (clipping excluded)."""
        return count * 0.5 / self.scale

    def encode(self, values: np.ndarray, *, warn: bool = True) -> QuantizedVector:
        """Clip and quantize a float vector.

        Parameters
        ----------
        values : np.ndarray
            1-D finite floats.
        warn : bool
            Warn when more than ``CLIP_WARNING_FRACTION`` of the entries were clipped.

        Returns
        -------
        QuantizedVector
            ``uint64`` levels and the fraction of clipped entries.
        """
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"expected a 1-D vector, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(
                "input contains NaN or infinite values; only finite floats are accepted"
            )
        levels = np.clip(x, -self.clip, self.clip)
        clipped = x.size - np.count_nonzero(levels == x)
        fraction = float(clipped / x.size) if x.size else 0.0
        if warn and fraction > CLIP_WARNING_FRACTION:
            warnings.warn(
                f"{fraction:.1%} of the values lie outside the clipping range "
                f"[-{self.clip}, {self.clip}] and were clipped; raise clip to keep them",
                stacklevel=2,
            )
        levels += self.clip  # in place: one temporary for the whole encoding
        levels *= self.scale
        np.rint(levels, out=levels)
        np.clip(levels, 0, self.max_level, out=levels)
        return QuantizedVector(values=levels.astype(np.uint64), clipped_fraction=fraction)

    def centred_levels(
        self, quantized_sum: np.ndarray, count: int, modulus_bits: int = MODULUS_BITS
    ) -> np.ndarray:
        """The sum of ``count`` clients' levels as signed float64, read modulo ``2**modulus_bits``.

        The residue is read as the representative closest to the noiseless range's midpoint
        ``count * max_level / 2``, so a sum that noise pushed a little below 0 or above
        ``count * max_level`` comes back exactly (within :func:`check_capacity`'s headroom).
        """
        q = np.asarray(quantized_sum, dtype=np.uint64)
        centre = (count * self.max_level) // 2
        shifted = np.subtract(q, np.uint64(centre % 2**MODULUS_BITS))  # wraps mod 2^64
        # Sign-extend the low ``modulus_bits`` bits: the residue nearest 0, exactly, in int64.
        spare = np.uint64(MODULUS_BITS - modulus_bits)
        signed = np.left_shift(shifted, spare).view(np.int64) >> spare.astype(np.int64)
        return signed.astype(np.float64) + float(centre)

    def decode_sum(
        self, quantized_sum: np.ndarray, count: int, modulus_bits: int = MODULUS_BITS
    ) -> np.ndarray:
        """Decode the modular sum of ``count`` clients' levels to the float sum of their inputs.

        Parameters
        ----------
        quantized_sum : np.ndarray
            ``uint64`` sum of ``count`` quantized vectors modulo ``2**modulus_bits``.
        count : int
            Number of clients in the sum.
        modulus_bits : int
            Width of the modulus the sum was taken in.

        Returns
        -------
        np.ndarray
            float64 sum of the (clipped) inputs, within :meth:`error_bound` of the truth.
        """
        return self.centred_levels(quantized_sum, count, modulus_bits) / self.scale - (
            count * self.clip
        )

    def decode_mean(
        self, quantized_sum: np.ndarray, count: int, modulus_bits: int = MODULUS_BITS
    ) -> np.ndarray:
        """Decode to the float mean of ``count`` clients' inputs."""
        if count < 1:
            raise ValueError(f"count must be >= 1 to take a mean, got {count}")
        return self.decode_sum(quantized_sum, count, modulus_bits) / count
