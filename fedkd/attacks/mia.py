"""Membership-inference scoring: the loss threshold and LiRA (Carlini et al., S&P 2022).

Scores are "higher means member". LiRA works on the logit-scaled confidence of the true
class, ``phi = log p_y - log(1 - p_y)``, which is close to Gaussian over models trained
with and without a sample. Online LiRA compares the target's ``phi`` with Gaussians fitted
to shadow models that did (IN) and did not (OUT) train on the sample; offline LiRA uses the
OUT Gaussian alone (a one-sided test). With few shadows a global variance is more stable
than per-sample ones (Carlini et al., §VI.B); both are used here as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from fedkd.data import ArrayDataset
from fedkd.distill import predict_logits


def confidences(model: torch.nn.Module, data: ArrayDataset, device: str) -> np.ndarray:
    """``phi = log p_y - log(1 - p_y)`` of ``model`` on every sample of ``data``, ``(N,)``."""
    logits = predict_logits(model, data.x, device=device).astype(np.float64)
    true = logits[np.arange(len(data)), data.y]
    others = logits.copy()
    others[np.arange(len(data)), data.y] = -np.inf
    top = others.max(axis=1, keepdims=True)
    log_rest = top[:, 0] + np.log(np.exp(others - top).sum(axis=1))
    return true - log_rest


def log_likelihood_of_true(model: torch.nn.Module, data: ArrayDataset, device: str) -> np.ndarray:
    """``log p_y`` (minus the cross-entropy loss): the loss-threshold attack's score."""
    logits = predict_logits(model, data.x, device=device).astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return logits[np.arange(len(data)), data.y] - log_norm


def lira(
    target: np.ndarray, shadows: np.ndarray, inside: np.ndarray, *, online: bool
) -> np.ndarray:
    """LiRA scores of ``target`` ``(N,)`` from shadow confidences ``(S, N)`` and IN masks.

    Raises
    ------
    ValueError
        When shapes disagree or a sample has no OUT shadow (or no IN one, online).
    """
    if shadows.shape != inside.shape or shadows.shape[1:] != target.shape:
        raise ValueError(
            f"shadows {shadows.shape}, IN mask {inside.shape} and target {target.shape} disagree"
        )
    outside = ~inside
    if not outside.any(axis=0).all() or (online and not inside.any(axis=0).all()):
        raise ValueError("every sample needs OUT shadows (and IN shadows for online LiRA)")
    mu_out = _masked_mean(shadows, outside)
    sd_out = _global_sd(shadows, outside, mu_out)
    if not online:
        return (target - mu_out) / sd_out  # one-sided: how far above the OUT models
    mu_in = _masked_mean(shadows, inside)
    sd_in = _global_sd(shadows, inside, mu_in)
    return _log_gauss(target, mu_in, sd_in) - _log_gauss(target, mu_out, sd_out)


def _log_gauss(x: np.ndarray, mu: np.ndarray, sd: float) -> np.ndarray:
    return np.asarray(-0.5 * ((x - mu) / sd) ** 2 - np.log(sd))


def _global_sd(values: np.ndarray, mask: np.ndarray, mu: np.ndarray) -> float:
    residual = (values - mu[None, :])[mask]
    return max(float(np.std(residual)), 1e-6)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (values * mask).sum(axis=0) / np.clip(mask.sum(axis=0), 1, None)


@dataclass(frozen=True)
class Roc:
    """An attack's ROC and its summary figures."""

    auc: float
    tpr_at_1: float  # TPR at FPR <= 1%
    tpr_at_01: float  # TPR at FPR <= 0.1%
    balanced_accuracy: float  # best threshold
    fpr: np.ndarray
    tpr: np.ndarray
    negatives: int  # non-members scored (0.1% FPR needs >= 1,000 to mean anything)

    def summary(self) -> dict[str, float]:
        return {
            "auc": self.auc,
            "tpr_at_1pct_fpr": self.tpr_at_1,
            "tpr_at_0.1pct_fpr": self.tpr_at_01,
            "balanced_accuracy": self.balanced_accuracy,
            "non_members": float(self.negatives),
        }


def roc(scores: np.ndarray, members: np.ndarray) -> Roc:
    """ROC of membership ``scores`` against the truth ``members`` (bool)."""
    labels = np.asarray(members, dtype=bool)
    if labels.all() or not labels.any():
        raise ValueError("membership truth needs both members and non-members")
    fpr, tpr, _ = roc_curve(labels, scores)

    def at(limit: float) -> float:
        return float(tpr[fpr <= limit].max()) if np.any(fpr <= limit) else 0.0

    return Roc(
        auc=float(roc_auc_score(labels, scores)),
        tpr_at_1=at(0.01),
        tpr_at_01=at(0.001),
        balanced_accuracy=float(np.max(0.5 * (tpr + 1 - fpr))),
        fpr=fpr,
        tpr=tpr,
        negatives=int((~labels).sum()),
    )


def label_matched(
    member_labels: np.ndarray, pool_labels: np.ndarray, rng: np.random.Generator, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indexes of up to ``limit`` members and as many non-members with the same labels.

    Matching keeps a client's label prior out of a membership score: against a model
    trained on skewed labels, unmatched non-members would be "detected" by their class alone.
    """
    free = {
        int(c): list(rng.permutation(np.flatnonzero(pool_labels == c)))
        for c in np.unique(pool_labels)
    }
    members: list[int] = []
    outsiders: list[int] = []
    for i in rng.permutation(len(member_labels)):
        stock = free.get(int(member_labels[i]), [])
        if stock and len(members) < limit:
            members.append(int(i))
            outsiders.append(int(stock.pop()))
    return np.array(members, dtype=np.int64), np.array(outsiders, dtype=np.int64)
