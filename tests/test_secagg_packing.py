"""Masked words packed to the modulus' width, and the centred decode of a modular sum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkd.secagg.driver import run_secagg
from fedkd.secagg.errors import ConfigError, WireFormatError
from fedkd.secagg.packing import pack_words, packed_size, reduce_words, unpack_words
from fedkd.secagg.quantize import Quantizer, check_capacity, modulus_bits_for


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 64), length=st.integers(1, 300), seed=st.integers(0, 2**32 - 1))
def test_pack_then_unpack_is_the_identity(bits: int, length: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    words = reduce_words(rng.integers(0, 2**64, size=length, dtype=np.uint64), bits)
    packed = pack_words(words, bits)
    assert packed.dtype == np.uint8 and packed.size == packed_size(length, bits)
    np.testing.assert_array_equal(unpack_words(packed, bits, length), words)
    # the wire format: word i at bits [i*k, (i+1)*k) of a little-endian bit string
    as_bits = np.unpackbits(
        words.astype("<u8").view(np.uint8).reshape(-1, 8), axis=1, bitorder="little"
    )
    reference = np.packbits(as_bits[:, :bits].reshape(-1), bitorder="little")
    np.testing.assert_array_equal(packed, reference)


def test_a_word_too_wide_for_the_modulus_is_refused() -> None:
    with pytest.raises(ValueError, match="does not fit in 8 bits"):
        pack_words(np.array([256], dtype=np.uint64), 8)


@pytest.mark.parametrize(
    "packed",
    [np.zeros(9, np.uint8), np.zeros(10, np.uint64), np.zeros((2, 5), np.uint8), b"x" * 10],
)
def test_a_wrong_size_or_type_on_the_wire_is_a_format_error(packed: object) -> None:
    with pytest.raises(WireFormatError, match="10 packed bytes"):
        unpack_words(packed, 20, 4)


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(1, 50),
    bits=st.integers(2, 24),
    noise=st.lists(st.integers(-1000, 1000), min_size=1, max_size=20),
    seed=st.integers(0, 2**32 - 1),
)
def test_centred_decode_recovers_a_sum_pushed_outside_its_range(
    count: int, bits: int, noise: list[int], seed: int
) -> None:
    """Integer noise may take a sum below 0 or above n*max: with headroom it still decodes."""
    quantizer = Quantizer(1.0, bits)
    rng = np.random.default_rng(seed)
    levels = rng.integers(0, quantizer.max_level + 1, size=(count, len(noise)), dtype=np.int64)
    exact = levels.sum(axis=0) + np.array(noise)
    width = modulus_bits_for(count, bits, headroom=1000)
    check_capacity(count, bits, width, headroom=1000)
    residue = reduce_words(exact.astype(np.int64).view(np.uint64).copy(), width)  # server view
    np.testing.assert_array_equal(quantizer.centred_levels(residue, count, width), exact)


def test_modulus_width_is_bits_plus_log2_clients() -> None:
    assert modulus_bits_for(20, 16) == 21 and modulus_bits_for(4, 16) == 18
    assert modulus_bits_for(1, 16) == 16 and modulus_bits_for(2**15, 48) == 63
    with pytest.raises(ConfigError, match="use bits <= 15"):
        check_capacity(20, 16, 20)
    with pytest.raises(ConfigError, match="needs 65"):
        modulus_bits_for(2**17, 48)


def test_the_secure_sum_over_packed_words_is_exact() -> None:
    rng = np.random.default_rng(3)
    inputs = [rng.uniform(-1, 1, size=257) for _ in range(7)]
    result = run_secagg(inputs, bits=12, clip=1.0)
    quantizer = Quantizer(1.0, 12)
    truth = np.sum([quantizer.encode(v).values.astype(np.float64) for v in inputs], axis=0)
    np.testing.assert_array_equal(result.quantized_sum.astype(np.float64), truth)
    wide = run_secagg(inputs, bits=48, clip=1.0)  # 51-bit words
    saved = wide.bytes_up_per_client - result.bytes_up_per_client
    assert abs(saved - (packed_size(257, 51) - packed_size(257, 15))) <= 16
