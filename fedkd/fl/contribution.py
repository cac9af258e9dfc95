"""The contribution vector a client sends to the (secure) sum, and how the sum is read.

Layout, ``(P*C + C + len(STATS),)`` float64, every entry a sum over clients::

    w ⊙ f(logits)   (P*C)   the teacher rule's weighted terms (fedkd.distill.teacher)
    w               (C)     the per-class weights
    stats           (len(STATS))  what the server needs about the clients only as a mean
                            (the last, dp_clipped_sum, counts the vectors dp-clip cut:
                            fedkd.fl.privacy sets it; 0 without client-level DP)

Putting the statistics inside the summed vector means a secure run shows the server nothing
per client beyond participation.

Every entry lies in ``[-value_bound, value_bound]`` (:func:`value_bound`): weights are scaled
into ``[0, 1]``, probability rules give values in ``[0, 1]``, the logit rule values within the
logit clip, the statistics in ``[0, 1]``. The fixed-point range of secure aggregation is that
bound, so its quantisation bits buy precision instead of covering an unused range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedkd.data import DataSplit
from fedkd.distill import client_contribution, predict_logits
from fedkd.distill.teacher import get_teacher_rule
from fedkd.fl.config import FedConfig
from fedkd.fl.data import FederatedData
from fedkd.models import FeatureModel

ACCURACY_BINS = 100  # the clients' accuracy histogram: 1-point bins, summed like the rest
STATS = (
    "accuracy_sum",
    "accuracy_count",
    "train_loss_sum",
    "train_loss_count",
    "clipped_sum",
    "dp_clipped_sum",
    *(f"accuracy_bin_{i:02d}" for i in range(ACCURACY_BINS)),
)
_FIRST_BIN = STATS.index("accuracy_bin_00")
LOSS_SCALE = 10.0  # a train loss enters the sum divided by this, clipped to [0, 1]


def vector_length(split: DataSplit) -> int:
    """Length of a contribution: ``P * C`` weighted values, ``C`` weights, the client stats."""
    return len(split.public) * split.num_classes + split.num_classes + len(STATS)


def contribution_scale(config: FedConfig, data: FederatedData) -> float:
    """Common factor applied to every client's vector so weights stay within [0, 1].

    A client's per-class weight is at most its count (:func:`max_count`) times, with entropy
    weighting, its label entropy (at most ``ln C``); dividing by both bounds it by 1 and leaves
    every weighted mean unchanged.
    """
    scale = 1.0 / float(max_count(config, data))
    if config.teacher.entropy_weighting:
        scale /= max(math.log(data.split.num_classes), 1.0)
    return scale


def max_count(config: FedConfig, data: FederatedData) -> int:
    """Largest count a client's weights are made of: its shard (at most the private pool), or
    under DP-SGD its predicted labels on the public set (:func:`weight_counts`)."""
    return len(data.split.public if config.dp.client_dp_sgd else data.split.private)


def weight_counts(
    config: FedConfig, data: FederatedData, partition_id: int, logits: np.ndarray
) -> tuple[np.ndarray, int]:
    """The per-class counts ``(C,)`` and the sample count a client's teacher weights use.

    Normally its shard's label histogram and size. Under record-level DP (``client-dp-sgd``)
    both would enter the sum exactly -- one record added or removed moves them by one, in
    plain sight of the server, whatever epsilon DP-SGD promised -- so the counts are the DP
    model's own predicted labels on the public set (``logits``, ``(P, C)``) and the size is
    ``P``: computed from the model alone, they cost no privacy, and a model that learnt only
    its shard's classes still predicts mostly those, which is what class weighting needs.
    """
    if config.dp.client_dp_sgd:
        predicted = np.bincount(logits.argmax(axis=1), minlength=data.split.num_classes)
        return predicted.astype(np.int64), len(logits)
    return data.label_counts(partition_id), data.shard_size(partition_id)


def value_bound(config: FedConfig) -> float:
    """Largest magnitude of any entry of a contribution: 1, or the logit clip (logit rule)."""
    return 1.0 if get_teacher_rule(config.teacher.rule).unit_interval else config.secagg.clip


def stats_block(accuracy: float, train_loss: float, clipped: float) -> np.ndarray:
    """The client's statistics as summable entries (a NaN accuracy or loss counts as absent)."""
    has_accuracy, has_loss = bool(np.isfinite(accuracy)), bool(np.isfinite(train_loss))
    loss = min(float(train_loss) / LOSS_SCALE, 1.0) if has_loss else 0.0
    values = [
        accuracy if has_accuracy else 0.0,
        float(has_accuracy),
        loss,
        float(has_loss),
        clipped,
    ]
    block = np.array(values + [0.0] * (len(STATS) - len(values)))  # the rest: set by their owners
    if has_accuracy:  # one-hot: the sum is a histogram, so the server sees a spread, no one
        block[_FIRST_BIN + min(int(accuracy * ACCURACY_BINS), ACCURACY_BINS - 1)] = 1.0
    return block


@dataclass(frozen=True)
class ClientStats:
    """Means over the clients whose contributions were summed."""

    accuracy_mean: float  # NaN when no client evaluated
    train_loss_mean: float  # NaN when no client reported one (DP-SGD clients do not)
    clipped_fraction: float
    # From the summed histogram, to its 1-point bins (bin midpoints); NaN when no client
    # evaluated. Under client-level DP the histogram is noised like everything else.
    accuracy_min: float = float("nan")
    accuracy_median: float = float("nan")
    accuracy_max: float = float("nan")


def _spread(counts: np.ndarray) -> tuple[float, float, float]:
    """(min, median, max) of the values a histogram of 1/len(counts)-wide bins counts."""
    whole = np.clip(np.rint(counts), 0, None)  # sums of one-hots, decoded within rounding
    total = int(whole.sum())
    if total == 0:
        return float("nan"), float("nan"), float("nan")
    present = np.flatnonzero(whole)
    middle = int(np.searchsorted(np.cumsum(whole), (total + 1) / 2))
    width = 1.0 / len(counts)
    return tuple(float((i + 0.5) * width) for i in (present[0], middle, present[-1]))  # type: ignore[return-value]


def split_sum(total: np.ndarray, count: int) -> tuple[np.ndarray, ClientStats]:
    """Separate a summed vector into the teacher part and the clients' mean statistics."""
    teacher, stats = total[: -len(STATS)], total[-len(STATS) :]
    accuracy_sum, accuracy_count, loss_sum, loss_count, clipped_sum = (float(v) for v in stats[:5])
    low, median, high = _spread(stats[_FIRST_BIN : _FIRST_BIN + ACCURACY_BINS])
    means = ClientStats(
        accuracy_sum / accuracy_count if accuracy_count >= 0.5 else float("nan"),
        LOSS_SCALE * loss_sum / loss_count if loss_count >= 0.5 else float("nan"),
        clipped_sum / max(count, 1),
        low,
        median,
        high,
    )
    return teacher, means


def teacher_contribution(
    config: FedConfig,
    data: FederatedData,
    partition_id: int,
    model: FeatureModel,
    *,
    device: str = "cpu",
) -> tuple[np.ndarray, float]:
    """A client's contribution vector to the teacher sum, and the share of logits clipped.

    Logits are clipped at ``±secagg-clip · T`` (the quantiser's range after the client's
    temperature), then turned into the rule's weighted terms and scaled into [0, 1] weights.
    """
    logits = predict_logits(model, data.split.public.x, device=device).astype(np.float64)
    bound = config.secagg.clip * config.teacher.temperature
    clipped = float(np.mean(np.abs(logits) > bound))
    counts, num_samples = weight_counts(config, data, partition_id, logits)
    contribution = client_contribution(
        np.clip(logits, -bound, bound),  # (public, classes)
        config=config.teacher,
        label_counts=counts,
        num_samples=num_samples,
    )
    return contribution.to_vector() * contribution_scale(config, data), clipped
