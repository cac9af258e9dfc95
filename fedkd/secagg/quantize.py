"""Fixed-point encoding of float vectors into Z_{2^64} and decoding of their sums.

A value ``x`` is clipped to ``[-clip, clip]`` and mapped to ``q = round((x + clip) * scale)`` with
``scale = (2**bits - 1) / (2 * clip)``, so ``0 <= q <= 2**bits - 1``. The server adds the ``q`` of
``m`` survivors modulo ``2**64`` (numpy ``uint64`` wraparound); the sum is exact as long as
``n * (2**bits - 1) < 2**64`` for the ``n`` participants, which :func:`check_capacity` verifies
before any client work. Decoding: ``sum = q_sum / scale - m * clip``; ``mean = sum / m``.
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


def check_capacity(num_clients: int, bits: int) -> None:
    """Check that the modular sum of ``num_clients`` quantized vectors cannot wrap around.

    Parameters
    ----------
    num_clients : int
        Number of clients whose values may be summed.
    bits : int
        Quantization bits per value.

    Raises
    ------
    ConfigError
        When ``bits`` is outside ``[1, 48]`` or ``num_clients * (2**bits - 1) >= 2**64``.
    """
    if not 1 <= bits <= MAX_BITS:
        raise ConfigError(f"bits={bits} is invalid; accepted: 1 <= bits <= {MAX_BITS}")
    if num_clients * (2**bits - 1) >= 2**MODULUS_BITS:
        largest = MODULUS_BITS - int(num_clients - 1).bit_length()
        raise ConfigError(
            f"the sum of {num_clients} clients at bits={bits} overflows the 2^64 modulus; "
            f"use bits <= {min(largest, MAX_BITS)} for this many clients"
        )


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
        clipped = np.count_nonzero(np.abs(x) > self.clip)
        fraction = float(clipped / x.size) if x.size else 0.0
        if warn and fraction > CLIP_WARNING_FRACTION:
            warnings.warn(
                f"{fraction:.1%} of the values lie outside the clipping range "
                f"[-{self.clip}, {self.clip}] and were clipped; raise clip to keep them",
                stacklevel=2,
            )
        levels = np.rint((np.clip(x, -self.clip, self.clip) + self.clip) * self.scale)
        np.clip(levels, 0, self.max_level, out=levels)
        return QuantizedVector(values=levels.astype(np.uint64), clipped_fraction=fraction)

    def decode_sum(self, quantized_sum: np.ndarray, count: int) -> np.ndarray:
        """Decode the modular sum of ``count`` clients' levels to the float sum of their inputs.

        Parameters
        ----------
        quantized_sum : np.ndarray
            ``uint64`` exact sum of ``count`` quantized vectors.
        count : int
            Number of clients in the sum.

        Returns
        -------
        np.ndarray
            float64 sum of the (clipped) inputs, within :meth:`error_bound` of the truth.
        """
        q = np.asarray(quantized_sum, dtype=np.uint64)
        return q.astype(np.float64) / self.scale - count * self.clip

    def decode_mean(self, quantized_sum: np.ndarray, count: int) -> np.ndarray:
        """Decode to the float mean of ``count`` clients' inputs."""
        if count < 1:
            raise ValueError(f"count must be >= 1 to take a mean, got {count}")
        return self.decode_sum(quantized_sum, count) / count
