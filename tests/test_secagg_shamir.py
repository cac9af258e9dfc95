"""Shamir sharing over GF(2**256 + 297): any t shares reconstruct, t - 1 shares hide the secret."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkd.secagg.errors import ProtocolAbort
from fedkd.secagg.shamir import (
    PRIME,
    combine_shares,
    lagrange_at_zero,
    share_from_bytes,
    share_to_bytes,
    split_secret,
)

SETTINGS = settings(max_examples=40, deadline=None)


def _is_probable_prime(n: int) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def test_field_is_prime_and_holds_every_32_byte_secret() -> None:
    assert PRIME > 2**256 and _is_probable_prime(PRIME)


@st.composite
def sharings(draw: st.DrawFn) -> tuple[bytes, int, list[int]]:
    n = draw(st.integers(1, 30))
    threshold = draw(st.integers(1, n))
    xs = draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n, unique=True))
    secret = draw(st.binary(min_size=32, max_size=32))
    return secret, threshold, xs


@SETTINGS
@given(sharings(), st.randoms(use_true_random=False))
def test_any_threshold_shares_reconstruct(case: tuple[bytes, int, list[int]], rng) -> None:  # type: ignore[no-untyped-def]
    secret, threshold, xs = case
    ys = split_secret(secret, threshold=threshold, xs=xs)
    chosen = rng.sample(range(len(xs)), threshold)
    assert combine_shares([xs[i] for i in chosen], [ys[i] for i in chosen]) == secret
    assert all(share_from_bytes(share_to_bytes(y)) == y for y in ys)


def _coefficients_through(points: list[tuple[int, int]]) -> list[int]:
    """Coefficients (constant first) of the polynomial of degree < len(points) through them."""
    size = len(points)
    result = [0] * size
    for i, (xi, yi) in enumerate(points):
        basis, denominator = [1], 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                basis = [
                    (a - xj * b) % PRIME for a, b in zip([0, *basis], [*basis, 0], strict=True)
                ]
                denominator = denominator * (xi - xj) % PRIME
        scale = yi * pow(denominator, -1, PRIME) % PRIME
        result = [(r + scale * b) % PRIME for r, b in zip(result, basis, strict=True)]
    return result


@SETTINGS
@given(sharings(), st.binary(min_size=32, max_size=32))
def test_fewer_than_threshold_shares_fit_every_secret(
    case: tuple[bytes, int, list[int]], other: bytes
) -> None:
    """Perfect hiding: the t - 1 shares of one secret are exactly what some draw of the random
    coefficients gives for any other secret, so they carry no information about it."""
    secret, threshold, xs = case
    if threshold < 2:
        return
    seen = xs[: threshold - 1]
    ys = split_secret(secret, threshold=threshold, xs=xs)
    target = [(0, int.from_bytes(other, "big")), *zip(seen, ys[: threshold - 1], strict=True)]
    coefficients = iter(_coefficients_through(target)[1:])

    def draw(bound: int) -> int:
        assert bound == PRIME  # coefficients must be uniform over the whole field
        return next(coefficients)

    forged = split_secret(other, threshold=threshold, xs=xs, randbelow=draw)
    assert forged[: threshold - 1] == ys[: threshold - 1]
    assert combine_shares(xs[:threshold], forged[:threshold]) == other


def test_lagrange_coefficients_cached_per_point_set() -> None:
    lagrange_at_zero.cache_clear()
    xs = [3, 5, 8, 13]
    for _ in range(10):
        secret = os.urandom(32)
        assert combine_shares(xs[:3], split_secret(secret, threshold=3, xs=xs)[:3]) == secret
    info = lagrange_at_zero.cache_info()
    assert info.misses == 1 and info.hits == 9


def test_inconsistent_shares_and_bad_arguments() -> None:
    secret = int.from_bytes(b"\x07" * 32, "big")
    ys = split_secret(b"\x07" * 32, threshold=3, xs=[1, 2, 3])
    weight = lagrange_at_zero((1, 2, 3))[2]
    shift = (2**256 - secret) * pow(weight, -1, PRIME) % PRIME  # moves f(0) to 2**256
    with pytest.raises(ProtocolAbort, match="inconsistent"):
        combine_shares([1, 2, 3], [ys[0], ys[1], (ys[2] + shift) % PRIME])
    with pytest.raises(ValueError, match="32 bytes"):
        split_secret(b"short", threshold=1, xs=[1])
    with pytest.raises(ValueError, match="distinct"):
        split_secret(b"\x00" * 32, threshold=2, xs=[1, 1])
    with pytest.raises(ValueError, match="33 bytes"):
        share_from_bytes(b"\x00" * 32)
