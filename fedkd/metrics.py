"""Classification and calibration metrics on numpy arrays (numpy in, floats out)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROB_SUM_TOLERANCE = 1e-3  # rows of a probability matrix must sum to 1 within this


@dataclass(frozen=True, eq=False)
class ReliabilityBins:
    """Equal-width confidence bins of a reliability diagram.

    Bin ``i`` holds the samples whose confidence (top-class probability) lies in
    ``(edges[i], edges[i+1]]``; the first bin also holds confidence 0.

    Attributes
    ----------
    edges
        ``(n_bins + 1,)`` bin edges from 0 to 1.
    confidences
        ``(n_bins,)`` mean confidence per bin; NaN where the bin is empty.
    accuracies
        ``(n_bins,)`` fraction of correct top-class predictions per bin; NaN where empty.
    counts
        ``(n_bins,)`` int64 number of samples per bin.
    """

    edges: np.ndarray
    confidences: np.ndarray
    accuracies: np.ndarray
    counts: np.ndarray

    @property
    def expected_calibration_error(self) -> float:
        """Count-weighted mean of ``|accuracy - confidence|`` over the non-empty bins."""
        filled = self.counts > 0
        gaps = np.abs(self.accuracies[filled] - self.confidences[filled])
        return float(np.sum(gaps * self.counts[filled]) / np.sum(self.counts))


def _check_scores(scores: np.ndarray, what: str) -> np.ndarray:
    """Return ``scores`` as a finite float64 ``(N, C)`` array with ``N >= 1`` and ``C >= 2``."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 2:
        raise ValueError(
            f"{what} must be a 2-D array (samples, classes) with at least one sample and two "
            f"classes; got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return array


def _check_probs(probs: np.ndarray) -> np.ndarray:
    """Return ``probs`` as float64 ``(N, C)``, rows checked and renormalised to sum to 1."""
    array = _check_scores(probs, "probs")
    if np.any(array < 0):
        raise ValueError("probs must be non-negative (pass softmax(logits), not logits)")
    sums = array.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > PROB_SUM_TOLERANCE):
        worst = float(sums[np.argmax(np.abs(sums - 1.0))])
        raise ValueError(
            f"each row of probs must sum to 1 (within {PROB_SUM_TOLERANCE}); found a row summing "
            f"to {worst:.6g} (pass softmax(logits), not logits)"
        )
    return array / sums[:, None]  # removes rounding drift so bounds like H <= log C hold


def _check_labels(labels: np.ndarray, num_samples: int, num_classes: int) -> np.ndarray:
    """Return ``labels`` as int64 ``(N,)`` with values in ``[0, num_classes)``."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != num_samples:
        raise ValueError(
            f"labels must have shape ({num_samples},) to match the scores; got {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be integers; got dtype {array.dtype}")
    if array.min() < 0 or array.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}); got values from {array.min()} to {array.max()}"
        )
    return array.astype(np.int64)


def _check_probs_and_labels(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_check_probs` of ``probs``, then :func:`_check_labels` of ``labels`` against it."""
    p = _check_probs(probs)
    return p, _check_labels(labels, p.shape[0], p.shape[1])


def _check_n_bins(n_bins: int) -> None:
    """Raise ``ValueError`` unless ``n_bins`` is a positive int."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")


def accuracy(logits_or_probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose highest score is the label.

    Parameters
    ----------
    logits_or_probs
        ``(N, C)`` logits or probabilities.
    labels
        ``(N,)`` integer labels in ``[0, C)``.

    Returns
    -------
    float
        Accuracy in ``[0, 1]``.
    """
    scores = _check_scores(logits_or_probs, "logits_or_probs")
    targets = _check_labels(labels, scores.shape[0], scores.shape[1])
    return float(np.mean(scores.argmax(axis=1) == targets))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Numerically stable softmax of ``logits / temperature`` over the last axis.

    Parameters
    ----------
    logits
        Array ``(..., C)``.
    temperature
        Positive temperature; larger values flatten the distribution.

    Returns
    -------
    np.ndarray
        float64 probabilities of the same shape, each row summing to 1.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    if z.ndim < 1 or z.shape[-1] < 1:
        raise ValueError(f"logits must have a non-empty last (class) axis; got shape {z.shape}")
    z = z - z.max(axis=-1, keepdims=True)  # largest exponent is exp(0) = 1: no overflow
    exp = np.exp(z)
    return exp / exp.sum(axis=-1, keepdims=True)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> ReliabilityBins:
    """Bin samples by confidence into ``n_bins`` equal-width bins over ``[0, 1]``.

    Parameters
    ----------
    probs
        ``(N, C)`` probabilities (rows sum to 1).
    labels
        ``(N,)`` integer labels.
    n_bins
        Number of bins.

    Returns
    -------
    ReliabilityBins
        Edges, per-bin mean confidence and accuracy (NaN when empty) and counts.
    """
    _check_n_bins(n_bins)
    p, targets = _check_probs_and_labels(probs, labels)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == targets).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins (edges[i], edges[i+1]]; confidence 0 falls in bin 0
    index = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidences = np.bincount(index, weights=confidence, minlength=n_bins) / counts
        accuracies = np.bincount(index, weights=correct, minlength=n_bins) / counts
    return ReliabilityBins(
        edges=edges, confidences=confidences, accuracies=accuracies, counts=counts
    )


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins (Guo et al., 2017).

    Parameters
    ----------
    probs
        ``(N, C)`` probabilities.
    labels
        ``(N,)`` integer labels.
    n_bins
        Number of equal-width bins over ``[0, 1]``.

    Returns
    -------
    float
        ``sum_b (n_b / N) * |acc_b - conf_b|`` in ``[0, 1]``.
    """
    return reliability_bins(probs, labels, n_bins=n_bins).expected_calibration_error


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray, *, eps: float = 1e-12) -> float:
    """Mean negative log-probability of the true class, in nats.

    Parameters
    ----------
    probs
        ``(N, C)`` probabilities.
    labels
        ``(N,)`` integer labels.
    eps
        Probabilities are clamped to ``[eps, 1]`` so a zero gives ``-log(eps)``, not infinity.

    Returns
    -------
    float
        Mean NLL, ``>= 0``.
    """
    if not 0 < eps < 1:
        raise ValueError(f"eps must lie in (0, 1); got {eps}")
    p, targets = _check_probs_and_labels(probs, labels)
    true_class = np.clip(p[np.arange(p.shape[0]), targets], eps, 1.0)
    return float(-np.mean(np.log(true_class)))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: squared error to the one-hot label, summed over classes.

    Parameters
    ----------
    probs
        ``(N, C)`` probabilities.
    labels
        ``(N,)`` integer labels.

    Returns
    -------
    float
        Mean over samples of ``sum_c (p_c - onehot_c)^2``, in ``[0, 2]``.
    """
    p, targets = _check_probs_and_labels(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), targets] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy of each row, in nats (``0 log 0 = 0``).

    Parameters
    ----------
    probs
        ``(N, C)`` probabilities.

    Returns
    -------
    np.ndarray
        ``(N,)`` float64 entropies in ``[0, log C]``.
    """
    p = _check_probs(probs)
    log_p = np.log(np.where(p > 0, p, 1.0))  # log 1 = 0 where p = 0
    return np.maximum(-np.sum(p * log_p, axis=1), 0.0)
