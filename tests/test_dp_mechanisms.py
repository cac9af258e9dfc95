"""Client-level DP mechanisms: clipping, and noise of the promised variance (statistical tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedkd.dp.mechanisms import clip_l2, gaussian_noise, level_sensitivity, skellam_noise
from fedkd.dp.plan import NoisePlan, noise_headroom, realised_noise, share_variance

DRAWS = 200_000
# Relative std of a sample variance of DRAWS Gaussian draws: sqrt(2 / DRAWS) = 0.32%. A 2%
# tolerance is > 6 standard errors (a fixed seed makes it deterministic anyway), and a sigma
# off by 5% (variance off by 10%) fails it, as the tests check.
TOLERANCE = 0.02


def _variance_matches(samples: np.ndarray, variance: float) -> bool:
    return abs(float(np.var(samples)) / variance - 1.0) < TOLERANCE


@given(
    arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e3, 1e3)),
    st.floats(1e-3, 1e3),
)
@settings(max_examples=200, deadline=None)
def test_clip_l2_bounds_the_norm_and_keeps_short_vectors(vector: np.ndarray, clip: float) -> None:
    result = clip_l2(vector, clip)
    assert np.linalg.norm(result.vector) <= clip * (1 + 1e-12)
    assert result.clipped == (np.linalg.norm(vector) > clip)
    if not result.clipped:
        np.testing.assert_array_equal(result.vector, vector)
    else:  # same direction
        np.testing.assert_allclose(result.vector * result.norm / clip, vector, atol=1e-9)


def test_clip_l2_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        clip_l2(np.ones(3), 0.0)
    with pytest.raises(ValueError):
        clip_l2(np.array([1.0, np.nan]), 1.0)


@pytest.mark.parametrize("std", [0.01, 1.0, 37.5])
def test_gaussian_noise_has_the_promised_variance(std: float) -> None:
    noise = gaussian_noise(DRAWS, std, np.random.default_rng(1))
    assert abs(float(noise.mean())) < 5 * std / math.sqrt(DRAWS)
    assert _variance_matches(noise, std**2)
    assert not _variance_matches(noise * 1.05, std**2)  # a 5% wrong sigma fails this test


@pytest.mark.parametrize("variance", [3.0, 1e4, 2.5e9])
def test_skellam_noise_is_integer_with_the_promised_variance(variance: float) -> None:
    noise = skellam_noise(DRAWS, variance, np.random.default_rng(2))
    assert noise.dtype == np.int64
    assert abs(float(noise.mean())) < 5 * math.sqrt(variance / DRAWS)
    assert _variance_matches(noise, variance)
    assert not _variance_matches(noise * 1.05, variance)


def test_sums_of_skellam_shares_carry_the_summed_variance() -> None:
    rng = np.random.default_rng(3)
    shares = np.stack([skellam_noise(DRAWS, 500.0, rng) for _ in range(7)])
    assert _variance_matches(shares.sum(axis=0), 7 * 500.0)
    assert _variance_matches(shares[:4].sum(axis=0), 4 * 500.0)  # dropouts: fewer shares


def test_skellam_refuses_what_the_sampler_cannot_draw() -> None:
    with pytest.raises(ValueError, match="fewer quantisation bits"):
        skellam_noise(10, 1e30, np.random.default_rng(0))


def test_distributed_shares_reach_the_central_level_at_the_threshold() -> None:
    plan = NoisePlan("distributed", clip=0.5, noise_multiplier=2.0, sampling=1.0)
    scale, length, threshold = 1e4, 100, 7
    share = share_variance(plan, scale=scale, length=length, threshold=threshold)
    delta = level_sensitivity(scale, plan.clip, length)
    assert math.isclose(threshold * share, (plan.noise_multiplier * delta) ** 2)
    at_threshold = realised_noise(
        plan, threshold, share_variance_levels=share, scale=scale, length=length
    )
    assert math.isclose(at_threshold.noise_multiplier, plan.noise_multiplier)
    everyone = realised_noise(plan, 10, share_variance_levels=share, scale=scale, length=length)
    assert math.isclose(everyone.noise_multiplier, plan.noise_multiplier * math.sqrt(10 / 7))
    # In float units the std is the central std, inflated by the rounding sensitivity only.
    assert math.isclose(at_threshold.std, plan.std * delta / (scale * plan.clip))


def test_local_noise_adds_up_over_the_clients() -> None:
    plan = NoisePlan("local", clip=1.0, noise_multiplier=3.0, sampling=1.0)
    realised = realised_noise(plan, 16)
    assert realised.noise_multiplier == 3.0 and math.isclose(realised.std, 4 * 3.0)


def test_headroom_covers_the_tail() -> None:
    rng = np.random.default_rng(4)
    variance = 2e6
    noise = skellam_noise(DRAWS, variance, rng)
    assert np.abs(noise).max() < noise_headroom(variance)
    assert noise_headroom(0.0) == 0
