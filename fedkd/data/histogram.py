"""Per-partition label counts, how skewed they are, and their heat-map."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_ANNOTATED_CELLS = 400


def label_histogram(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Count the labels of each partition.

    Parameters
    ----------
    labels : np.ndarray
        1-D integer labels of the pool, each in ``[0, num_classes)``.
    parts : list of np.ndarray
        Index arrays into ``labels``, one per partition (as from :func:`partition`).
    num_classes : int
        Number of classes, >= 1.

    Returns
    -------
    np.ndarray
        int64 counts, ``(len(parts), num_classes)``.

    Raises
    ------
    ValueError
        If ``num_classes`` < 1, a label lies outside ``[0, num_classes)`` or an index is
        out of range.
    """
    labels = np.asarray(labels)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(
            f"labels must be a 1-D integer array; got shape {labels.shape}, dtype {labels.dtype}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}); got range [{labels.min()}, {labels.max()}]"
        )
    hist = np.zeros((len(parts), num_classes), dtype=np.int64)  # (parts, classes)
    for row, part in enumerate(parts):
        idx = np.asarray(part, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(labels)):
            raise ValueError(
                f"partition {row} holds indices outside [0, {len(labels)}): "
                f"range [{idx.min()}, {idx.max()}]"
            )
        hist[row] = np.bincount(labels[idx], minlength=num_classes)
    return hist


def label_tv(hist: np.ndarray) -> float:
    """Size-weighted total-variation distance of the partitions' label mixes from the pool's.

    ``sum_k n_k / N * 0.5 * || p_k - p ||_1`` with ``p_k`` partition ``k``'s label mix and ``p``
    the pool's: 0 for IID shards, towards 1 - 1/classes when each shard holds one class.

    Parameters
    ----------
    hist : np.ndarray
        Label counts ``(partitions, classes)``, as from :func:`label_histogram`.

    Returns
    -------
    float
        The distance, in ``[0, 1]``.
    """
    counts = np.asarray(hist, dtype=np.float64)  # (partitions, classes)
    sizes = counts.sum(axis=1)
    held = sizes > 0
    pool = counts.sum(axis=0) / sizes.sum()
    mixes = counts[held] / sizes[held, None]
    distances = 0.5 * np.abs(mixes - pool).sum(axis=1)
    return float(np.sum(sizes[held] / sizes.sum() * distances))


@dataclass(frozen=True)
class PartitionStats:
    """What a split looks like: shard sizes, classes per shard, label skew."""

    sizes: np.ndarray  # (partitions,) samples per shard
    classes: np.ndarray  # (partitions,) classes with at least one sample in the shard
    label_tv: float  # size-weighted label TV from the pool's mix (:func:`label_tv`)


def partition_stats(
    labels: np.ndarray, parts: list[np.ndarray], num_classes: int
) -> PartitionStats:
    """Shard sizes, classes per shard and the size-weighted label TV of a partition.

    Parameters are those of :func:`label_histogram`.
    """
    hist = label_histogram(labels, parts, num_classes)
    return PartitionStats(
        sizes=hist.sum(axis=1), classes=(hist > 0).sum(axis=1), label_tv=label_tv(hist)
    )


def plot_label_histogram(hist: np.ndarray, path: str | Path) -> Path:
    """Save a heat-map of per-partition label counts as a PNG.

    Rows are partitions, columns classes; cells show their counts when the grid has at
    most 400 cells. Drawn on matplotlib's Agg canvas, so the global backend is untouched.

    Parameters
    ----------
    hist : np.ndarray
        Counts ``(partitions, classes)``, as from :func:`label_histogram`.
    path : str or Path
        Output file; parent folders are created.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        If ``hist`` is not a non-empty 2-D array.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy import, used here only
    from matplotlib.figure import Figure

    counts = np.asarray(hist)
    if counts.ndim != 2 or counts.size == 0:
        raise ValueError(
            f"hist must be a non-empty (partitions, classes) array; got shape {counts.shape}"
        )
    num_parts, num_classes = counts.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    figure = Figure(figsize=(max(4.0, 0.5 * num_classes + 2), max(3.0, 0.3 * num_parts + 1.5)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest")
    figure.colorbar(image, ax=axes, label="samples")
    axes.set_xlabel("class")
    axes.set_ylabel("partition")
    axes.set_title(f"label counts per partition ({num_parts} x {num_classes})")
    if num_classes <= 30:
        axes.set_xticks(range(num_classes))
    if num_parts <= 40:
        axes.set_yticks(range(num_parts))
    if counts.size <= MAX_ANNOTATED_CELLS:
        threshold = counts.max() / 2
        for (row, col), value in np.ndenumerate(counts):
            colour = "black" if value > threshold else "white"
            axes.text(col, row, str(value), ha="center", va="center", fontsize=7, color=colour)
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    return path
