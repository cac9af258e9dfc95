"""Tests of fedkd.metrics against hand-computed values and invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedkd.metrics import (
    ReliabilityBins,
    accuracy,
    brier_score,
    entropy,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    softmax,
)


def test_accuracy_on_logits_and_probs() -> None:
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [5.0, 0.0, 9.0], [1.0, 0.0, 0.0]])
    labels = np.array([0, 1, 0, 2])
    assert accuracy(logits, labels) == 0.5
    assert accuracy(softmax(logits), labels) == 0.5


def test_softmax_values_and_stability() -> None:
    np.testing.assert_allclose(softmax(np.array([0.0, math.log(3.0)])), [0.25, 0.75])
    extreme = softmax(np.array([[1000.0, -1000.0, 1000.0]]))
    np.testing.assert_allclose(extreme, [[0.5, 0.0, 0.5]])
    logits = np.array([[1.0, 2.0, 3.0], [-4.0, 0.0, 4.0]])
    np.testing.assert_allclose(softmax(logits, temperature=2.0), softmax(logits / 2.0))
    np.testing.assert_allclose(softmax(logits + 100.0), softmax(logits))
    with pytest.raises(ValueError, match="temperature must be positive"):
        softmax(logits, temperature=0.0)


def test_perfect_calibration_has_zero_ece() -> None:
    # ten samples at confidence 0.8, eight of them right: accuracy equals confidence
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.0, abs=1e-12)


def test_ece_by_hand() -> None:
    # three right at 0.9 (gap 0.1) and one wrong at 0.6 (gap 0.6): 3/4*0.1 + 1/4*0.6
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    labels = np.array([0, 0, 1, 1])
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.225)
    # one bin: |accuracy - mean confidence| = |0.75 - 0.825|
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(0.075)


def test_reliability_bins_contents() -> None:
    probs = np.array([[0.5, 0.5], [0.7, 0.3], [0.2, 0.8], [1.0, 0.0]])
    labels = np.array([0, 1, 1, 0])
    bins = reliability_bins(probs, labels, n_bins=4)
    assert isinstance(bins, ReliabilityBins)
    np.testing.assert_allclose(bins.edges, [0.0, 0.25, 0.5, 0.75, 1.0])
    # right-closed bins: 0.5 falls in (0.25, 0.5], 1.0 in (0.75, 1]
    np.testing.assert_array_equal(bins.counts, [0, 1, 1, 2])
    assert bins.counts.dtype == np.int64
    assert np.isnan(bins.confidences[0]) and np.isnan(bins.accuracies[0])
    np.testing.assert_allclose(bins.confidences[1:], [0.5, 0.7, 0.9])
    np.testing.assert_allclose(bins.accuracies[1:], [1.0, 0.0, 1.0])
    expected = (1 * 0.5 + 1 * 0.7 + 2 * 0.1) / 4
    assert bins.expected_calibration_error == pytest.approx(expected)


def test_nll_by_hand_and_clamped() -> None:
    probs = np.array([[0.8, 0.2], [0.25, 0.75]])
    labels = np.array([0, 1])
    expected = -(math.log(0.8) + math.log(0.75)) / 2
    assert negative_log_likelihood(probs, labels) == pytest.approx(expected)
    zero = negative_log_likelihood(np.array([[1.0, 0.0]]), np.array([1]), eps=1e-6)
    assert zero == pytest.approx(-math.log(1e-6))


def test_brier_by_hand() -> None:
    eye = np.eye(3)
    labels = np.array([0, 1, 2])
    assert brier_score(eye, labels) == 0.0
    assert brier_score(eye, np.array([1, 2, 0])) == pytest.approx(2.0)
    assert brier_score(np.full((3, 4), 0.25), np.array([0, 1, 3])) == pytest.approx(0.75)
    assert brier_score(np.array([[0.7, 0.2, 0.1]]), np.array([0])) == pytest.approx(0.14)


def test_entropy_by_hand() -> None:
    probs = np.array([[0.2] * 5, [1, 0, 0, 0, 0], [0.5, 0.5, 0, 0, 0]])
    np.testing.assert_allclose(entropy(probs), [math.log(5), 0.0, math.log(2)])
    assert entropy(probs).shape == (3,)


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        (np.array([0.5, 0.5]), np.array([0]), "2-D array"),
        (np.ones((2, 1)), np.array([0, 0]), "2-D array"),
        (np.full((2, 2), 0.5), np.array([0]), r"shape \(2,\)"),
        (np.full((2, 2), 0.5), np.array([0, 2]), r"\[0, 2\)"),
        (np.full((2, 2), 0.5), np.array([0.0, 1.0]), "integers"),
        (np.array([[2.0, -1.0]]), np.array([0]), "non-negative"),
        (np.array([[0.6, 0.6]]), np.array([0]), "sum to 1"),
        (np.array([[np.nan, 0.5]]), np.array([0]), "NaN"),
    ],
)
def test_bad_input_is_named(probs: np.ndarray, labels: np.ndarray, message: str) -> None:
    for metric in (expected_calibration_error, negative_log_likelihood, brier_score):
        with pytest.raises(ValueError, match=message):
            metric(probs, labels)


def test_bad_bins_and_logits_for_accuracy() -> None:
    probs, labels = np.full((2, 2), 0.5), np.array([0, 1])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(probs, labels, n_bins=0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        accuracy(np.zeros((3, 4)), np.array([0, 1]))
    with pytest.raises(ValueError, match="sum to 1"):
        entropy(np.array([[3.0, 1.0]]))


@st.composite
def probs_and_labels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    n = draw(st.integers(1, 40))
    c = draw(st.integers(2, 8))
    logits = draw(arrays(np.float64, (n, c), elements=st.floats(-60, 60)))
    scale = draw(st.sampled_from([0.01, 1.0, 10.0]))
    labels = draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    return softmax(logits * scale), labels, c


@settings(max_examples=150, deadline=None)
@given(data=probs_and_labels(), n_bins=st.integers(1, 20))
def test_metric_ranges(data: tuple[np.ndarray, np.ndarray, int], n_bins: int) -> None:
    probs, labels, classes = data
    ece = expected_calibration_error(probs, labels, n_bins=n_bins)
    assert 0.0 <= ece <= 1.0
    bins = reliability_bins(probs, labels, n_bins=n_bins)
    assert bins.counts.sum() == len(labels)
    assert bins.expected_calibration_error == pytest.approx(ece)
    h = entropy(probs)
    assert np.all(h >= 0.0) and np.all(h <= math.log(classes) + 1e-9)
    assert 0.0 <= brier_score(probs, labels) <= 2.0 + 1e-12
    assert negative_log_likelihood(probs, labels) >= 0.0
    assert 0.0 <= accuracy(probs, labels) <= 1.0


@settings(max_examples=100, deadline=None)
@given(
    logits=arrays(np.float64, (6, 5), elements=st.floats(-1e4, 1e4)),
    temperature=st.floats(0.05, 20.0),
)
def test_softmax_rows_are_distributions(logits: np.ndarray, temperature: float) -> None:
    probs = softmax(logits, temperature=temperature)
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    top = logits.argmax(axis=1)  # softmax is monotone: the top logit keeps the top probability
    np.testing.assert_array_equal(probs[np.arange(len(top)), top], probs.max(axis=1))
