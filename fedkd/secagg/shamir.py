"""Shamir t-of-n secret sharing of raw 32-byte secrets over the prime field GF(2**256 + 297).

``2**256 + 297`` is the smallest prime above ``2**256``, so every 32-byte secret is a field
element and a share fits in 33 bytes. Reconstruction interpolates at zero with Lagrange
coefficients cached per set of evaluation points: a server that reconstructs many secrets from the
same surviving clients computes the coefficients once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from functools import lru_cache

from fedkd.secagg.errors import ProtocolAbort

PRIME = 2**256 + 297
SECRET_BYTES = 32
SHARE_BYTES = 33


def split_secret(
    secret: bytes,
    *,
    threshold: int,
    xs: Sequence[int],
    randbelow: Callable[[int], int] = secrets.randbelow,
) -> list[int]:
    """Split a 32-byte secret into shares at the evaluation points ``xs``.

    Parameters
    ----------
    secret : bytes
        The 32-byte secret.
    threshold : int
        Any ``threshold`` shares reconstruct it; fewer reveal nothing.
    xs : Sequence[int]
        Distinct non-zero evaluation points in ``[1, PRIME)``.
    randbelow : Callable[[int], int]
        Source of the ``threshold - 1`` uniform coefficients in ``[0, PRIME)``; the default is the
        operating system's CSPRNG (tests substitute it to check the hiding property).

    Returns
    -------
    list[int]
        Share values ``f(x)`` aligned with ``xs``, where ``f`` is a random polynomial of degree
        ``threshold - 1`` with ``f(0) = secret``.
    """
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secrets must be {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold={threshold} is invalid for {len(xs)} shares")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("evaluation points must be distinct and in [1, PRIME)")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in xs:
        value = 0
        for coefficient in reversed(coefficients):  # Horner
            value = (value * x + coefficient) % PRIME
        shares.append(value)
    return shares


@lru_cache(maxsize=4096)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Lagrange coefficients ``l_i(0)`` for the distinct points ``xs`` (cached per point set).

    Parameters
    ----------
    xs : tuple[int, ...]
        Distinct non-zero evaluation points.

    Returns
    -------
    tuple[int, ...]
        ``l_i(0) = prod_{j != i} x_j / (x_j - x_i) mod PRIME``, aligned with ``xs``.
    """
    if len(set(xs)) != len(xs):
        raise ValueError(f"evaluation points must be distinct, got {xs}")
    coefficients = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        coefficients.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return tuple(coefficients)


def combine_shares(xs: Sequence[int], ys: Sequence[int]) -> bytes:
    """Reconstruct a 32-byte secret from exactly ``threshold`` shares.

    Parameters
    ----------
    xs, ys : Sequence[int]
        Evaluation points and share values.

    Returns
    -------
    bytes
        The secret.

    Raises
    ------
    ProtocolAbort
        When the interpolated value is not a 32-byte secret (inconsistent shares).
    """
    if len(xs) != len(ys) or not xs:
        raise ValueError(f"need equally many points and values, got {len(xs)} and {len(ys)}")
    coefficients = lagrange_at_zero(tuple(xs))
    value = sum(c * y for c, y in zip(coefficients, ys, strict=True)) % PRIME
    if value >= 2 ** (8 * SECRET_BYTES):
        raise ProtocolAbort("the shares are inconsistent: they interpolate to no 32-byte secret")
    return value.to_bytes(SECRET_BYTES, "big")


def consistent(xs: Sequence[int], ys: Sequence[int], threshold: int) -> bool:
    """Whether all points ``(xs[i], ys[i])`` lie on one polynomial of degree ``threshold - 1``.

    The first ``threshold`` points define it; every other one is checked against it (a dealer
    that handed out shares of no single secret fails).
    """
    base_x, base_y = list(xs[:threshold]), list(ys[:threshold])
    for x, y in zip(xs[threshold:], ys[threshold:], strict=True):
        value = 0
        for i, (xi, yi) in enumerate(zip(base_x, base_y, strict=True)):
            term = yi
            for j, xj in enumerate(base_x):
                if j != i:
                    term = term * (x - xj) % PRIME * pow(xi - xj, -1, PRIME) % PRIME
            value = (value + term) % PRIME
        if value != y % PRIME:
            return False
    return True


def share_to_bytes(value: int) -> bytes:
    """Fixed-width (33-byte) big-endian encoding of a share value."""
    return value.to_bytes(SHARE_BYTES, "big")


def share_from_bytes(data: bytes) -> int:
    """Decode :func:`share_to_bytes` output, checking its width and range."""
    if len(data) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise ValueError("share value is not a field element")
    return value
