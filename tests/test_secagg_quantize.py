"""Fixed-point encoding: error bound, modulus capacity, clipping report."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedkd.secagg.errors import ConfigError
from fedkd.secagg.quantize import Quantizer, check_capacity

SETTINGS = settings(max_examples=50, deadline=None)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(
    st.floats(1e-3, 1e4),
    st.integers(2, 48),
    st.lists(hnp.arrays(np.float64, 12, elements=finite), min_size=1, max_size=20),
)
def test_decoded_sum_within_error_bound(clip: float, bits: int, vectors: list[np.ndarray]) -> None:
    quantizer = Quantizer(clip, bits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        encoded = [quantizer.encode(v) for v in vectors]
    total = np.zeros(12, dtype=np.uint64)
    for e in encoded:
        assert e.values.dtype == np.uint64 and int(e.values.max()) <= quantizer.max_level
        total += e.values
    truth = np.sum([np.clip(v, -clip, clip) for v in vectors], axis=0)
    decoded = quantizer.decode_sum(total, len(vectors))
    slack = 1e-12 * len(vectors) * clip * 4  # float64 rounding of the decode itself
    assert np.all(np.abs(decoded - truth) <= quantizer.error_bound(len(vectors)) + slack)
    np.testing.assert_allclose(quantizer.decode_mean(total, len(vectors)), decoded / len(vectors))


def test_capacity_checked_before_any_work() -> None:
    check_capacity(2**16, 48)
    with pytest.raises(ConfigError, match="use bits <= 47"):
        check_capacity(2**16 + 1, 48)
    with pytest.raises(ConfigError, match="1 <= bits <= 48"):
        Quantizer(1.0, 60)


def test_clipping_reported_and_warned() -> None:
    quantizer = Quantizer(1.0, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = quantizer.encode(np.array([0.5] * 200 + [3.0]))  # 0.5% clipped: no warning
    assert quiet.clipped_fraction == pytest.approx(1 / 201)
    with pytest.warns(UserWarning, match="25.0% of the values .* were clipped"):
        loud = quantizer.encode(np.array([0.0, 0.5, -2.0, 0.1]))
    assert loud.clipped_fraction == 0.25
    assert quantizer.decode_sum(loud.values, 1)[2] == pytest.approx(-1.0)


def test_bad_inputs_rejected() -> None:
    quantizer = Quantizer(1.0, 16)
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantizer.encode(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="1-D"):
        quantizer.encode(np.zeros((2, 2)))
    with pytest.raises(ConfigError, match="finite value > 0"):
        Quantizer(0.0, 16)
