"""Partitioning a labelled pool among clients with flwr-datasets partitioners.

The pool's labels go into an in-memory ``datasets.Dataset`` with a ``"label"`` column and
an ``"index"`` column holding each row's position in the pool; rows are put in a seeded
random order first (the IID partitioner takes contiguous blocks, the others split each
class in row order), and each partition's ``"index"`` column is the index array returned.

Coverage guarantees:

* ``"iid"``, ``"dirichlet"`` and ``"dirichlet-balanced"``: every pool index lands in exactly
  one partition, and no Dirichlet partition is empty (see :func:`dirichlet_min_partition_sizes`).

``"dirichlet"`` is the split the literature calls "Dirichlet(alpha) label skew" (Hsu et al.
2019; FedDF; NIID-Bench): each class is divided among the clients in proportions drawn from
Dirichlet(alpha), and the whole draw is repeated until every client holds a minimum number of
samples (flwr-datasets' ``DirichletPartitioner`` without self-balancing). ``"dirichlet-balanced"``
adds flwr-datasets' self-balancing (a client already above the mean size gets no more of the
later classes): more equal shard sizes, but a more skewed split at the same alpha (label TV
0.76 against 0.67 at alpha = 0.1; docs/datasets.md).
* ``"shard"``: the label-sorted pool is cut into shards of ``floor(N / (P * k))`` samples
  (``k = shards_per_partition``, the last shard holds the remainder) and *all* shards are
  dealt out, so every index lands in exactly one partition; each partition gets ``k`` or
  more shards (more when the shards come out small, e.g. ``N < 2 * P * k``).
* ``"pathological"``: each partition gets exactly ``classes_per_partition`` classes
  (the first chosen as ``partition_id % num_classes``, the rest at random), and each
  class is split evenly among the partitions that hold it. Every index lands in at most
  one partition; in exactly one when every class is held by some partition, which is
  guaranteed when ``num_partitions >= number of classes present``. Otherwise the samples
  of unheld classes are left out and a warning names those classes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

PARTITION_METHODS = ("iid", "dirichlet", "dirichlet-balanced", "shard", "pathological")
DIRICHLET_METHODS = ("dirichlet", "dirichlet-balanced")
DIRICHLET_MIN_PARTITION_SIZE = 10
# Fresh partitioners (seeds derived from the run's) tried per minimum size; each resamples up
# to 11 times itself. At 100 clients over 6,000 samples and alpha = 0.1 a minimum of 2 holds in
# one try of three, a minimum of 5 in none of 550: the minimum then falls to the next size.
DIRICHLET_SEEDS_PER_SIZE = 5
_LABEL = "label"
_INDEX = "index"


def dirichlet_min_partition_sizes(pool_size: int, num_partitions: int) -> list[int]:
    """Minimum partition sizes the Dirichlet partitioner is asked for, in the order tried.

    The first is ``min(10, max(1, pool_size // (4 * num_partitions)))``: 10 samples for a
    large pool (NIID-Bench's minimum), less for a small one. When strong skew (small
    ``alpha``) with many partitions makes every resampling fail, half of that and finally 1
    are tried, so no partition is ever empty.

    Parameters
    ----------
    pool_size : int
        Number of samples in the pool.
    num_partitions : int
        Number of partitions.

    Returns
    -------
    list of int
        Decreasing minimum sizes, ending with 1.
    """
    preferred = min(DIRICHLET_MIN_PARTITION_SIZE, max(1, pool_size // (4 * num_partitions)))
    return sorted({preferred, max(1, preferred // 2), 1}, reverse=True)


def _iid(num_partitions: int, **_: Any) -> Any:
    from flwr_datasets.partitioner import IidPartitioner

    return IidPartitioner(num_partitions=num_partitions)


def _dirichlet(
    num_partitions: int,
    *,
    alpha: float,
    seed: int,
    min_partition_size: int,
    self_balancing: bool,
    **_: Any,
) -> Any:
    from flwr_datasets.partitioner import DirichletPartitioner

    return DirichletPartitioner(
        num_partitions=num_partitions,
        partition_by=_LABEL,
        alpha=float(alpha),
        min_partition_size=min_partition_size,
        self_balancing=self_balancing,
        shuffle=True,
        seed=seed,
    )


def _shard(
    num_partitions: int, *, shards_per_partition: int, seed: int, pool_size: int, **_: Any
) -> Any:
    from flwr_datasets.partitioner import ShardPartitioner

    return ShardPartitioner(
        num_partitions=num_partitions,
        partition_by=_LABEL,
        shard_size=pool_size // (num_partitions * shards_per_partition),
        keep_incomplete_shard=True,
        shuffle=True,
        seed=seed,
    )


def _pathological(num_partitions: int, *, classes_per_partition: int, seed: int, **_: Any) -> Any:
    from flwr_datasets.partitioner import PathologicalPartitioner

    return PathologicalPartitioner(
        num_partitions=num_partitions,
        partition_by=_LABEL,
        num_classes_per_partition=classes_per_partition,
        class_assignment_mode="first-deterministic",
        shuffle=True,
        seed=seed,
    )


_FACTORIES: dict[str, Callable[..., Any]] = {
    "iid": _iid,
    "dirichlet": _dirichlet,
    "dirichlet-balanced": _dirichlet,
    "shard": _shard,
    "pathological": _pathological,
}


def _check_arguments(
    labels: np.ndarray,
    *,
    num_partitions: int,
    method: str,
    alpha: float,
    shards_per_partition: int,
    classes_per_partition: int,
) -> None:
    if method not in _FACTORIES:
        raise ValueError(f"unknown partition method {method!r}; choose one of {PARTITION_METHODS}")
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(
            f"labels must be a 1-D integer array; got shape {labels.shape}, dtype {labels.dtype}"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0; got min {labels.min()}")
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, (int, np.integer)):
        raise ValueError(f"num_partitions must be an int; got {num_partitions!r}")
    if not 1 <= num_partitions <= len(labels):
        raise ValueError(
            f"num_partitions must lie in [1, pool size {len(labels)}]; got {num_partitions}"
        )
    if method in DIRICHLET_METHODS and not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0; got {alpha}")
    if method == "shard":
        if shards_per_partition < 1:
            raise ValueError(f"shards_per_partition must be >= 1; got {shards_per_partition}")
        needed = num_partitions * shards_per_partition
        if needed > len(labels):
            raise ValueError(
                f"shard partitioning needs num_partitions * shards_per_partition = {needed} "
                f"shards of at least one sample, but the pool holds {len(labels)} samples"
            )
    if method == "pathological":
        present = len(np.unique(labels))
        if not 1 <= classes_per_partition <= present:
            raise ValueError(
                f"classes_per_partition must lie in [1, {present}] (classes present in the "
                f"pool); got {classes_per_partition}"
            )


def partition(
    labels: np.ndarray,
    *,
    num_partitions: int,
    method: str = "dirichlet",
    alpha: float = 0.5,
    seed: int = 0,
    shards_per_partition: int = 2,
    classes_per_partition: int = 2,
) -> list[np.ndarray]:
    """Split a pool among ``num_partitions`` clients with a flwr-datasets partitioner.

    See the module docstring for what each method guarantees about coverage.

    Parameters
    ----------
    labels : np.ndarray
        1-D integer labels of the pool (e.g. ``split.private.y``).
    num_partitions : int
        Number of partitions (clients), in ``[1, len(labels)]``.
    method : str
        ``"iid"``, ``"dirichlet"`` (per-class Dirichlet(alpha) proportions over the clients,
        resampled until every client has a minimum size: the literature's label skew),
        ``"dirichlet-balanced"`` (the same with flwr-datasets' self-balancing), ``"shard"``
        (label-sorted shards, McMahan et al.) or ``"pathological"``
        (``classes_per_partition`` classes per client).
    alpha : float
        Dirichlet concentration (> 0); smaller means stronger label skew.
    seed : int
        Seed of the row order and of the partitioner; equal seeds give equal partitions.
    shards_per_partition : int
        Shards per partition for ``"shard"``.
    classes_per_partition : int
        Classes per partition for ``"pathological"``.

    Returns
    -------
    list of np.ndarray
        One int64 array of pool indices per partition, each non-empty, in random order.

    Raises
    ------
    ValueError
        If the method is unknown, an argument is out of range, or the partitioner cannot
        build the partitions (Dirichlet: a partition stays empty at minimum size 1).

    Warns
    -----
    UserWarning
        When a Dirichlet split lowered its minimum size, or samples were left in no partition.
    """
    labels = np.asarray(labels)
    _check_arguments(
        labels,
        num_partitions=num_partitions,
        method=method,
        alpha=alpha,
        shards_per_partition=shards_per_partition,
        classes_per_partition=classes_per_partition,
    )
    options: dict[str, Any] = dict(
        alpha=alpha, seed=seed, pool_size=len(labels), shards_per_partition=shards_per_partition
    )
    options["classes_per_partition"] = classes_per_partition
    parts = _partition_pool(labels, int(num_partitions), method, options, seed=seed)
    _warn_if_uncovered(labels, parts, method)
    return parts


def _partition_pool(
    labels: np.ndarray, num_partitions: int, method: str, options: dict[str, Any], *, seed: int
) -> list[np.ndarray]:
    """Run ``method``'s flwr-datasets partitioner over the pool's rows in a seeded order."""
    # flwr-datasets pulls in Hugging Face datasets (~2 s): import on first use only.
    from datasets import Dataset

    order = np.random.default_rng(seed).permutation(len(labels))
    pool = Dataset.from_dict({_LABEL: labels[order].tolist(), _INDEX: order.tolist()})
    if method in DIRICHLET_METHODS:
        options["self_balancing"] = method == "dirichlet-balanced"
        parts = _dirichlet_parts(pool, num_partitions, options)
    else:
        try:
            partitioner = _FACTORIES[method](num_partitions, **options)
            parts = _load_parts(partitioner, pool, num_partitions)
        except ValueError as err:
            raise ValueError(
                f"{method} partitioning of {len(labels)} samples into {num_partitions} "
                f"partitions failed: {err}"
            ) from err
    return parts


def _load_parts(partitioner: Any, pool: Any, num_partitions: int) -> list[np.ndarray]:
    partitioner.dataset = pool
    with warnings.catch_warnings():
        # The Dirichlet partitioner warns on every resampling and the pathological one
        # about unused classes; callers check the outcome and report it instead.
        warnings.simplefilter("ignore", UserWarning)
        # pyarrow >= 25 deprecates an option that datasets' sort (shard method) still uses.
        warnings.filterwarnings(
            "ignore", message="Specifying null_placement", category=FutureWarning
        )
        return [
            np.asarray(partitioner.load_partition(i)[_INDEX], dtype=np.int64)
            for i in range(num_partitions)
        ]


def _dirichlet_draws(seed: int) -> list[int]:
    """The partitioner seeds tried at each minimum size: the run's seed, then seeds derived
    from it (so ``seed`` alone still decides the split)."""
    derived = (
        int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        for k in range(1, DIRICHLET_SEEDS_PER_SIZE)
    )
    return [seed, *derived]


def _dirichlet_parts(pool: Any, num_partitions: int, options: dict[str, Any]) -> list[np.ndarray]:
    sizes = dirichlet_min_partition_sizes(len(pool), num_partitions)
    for min_size in sizes:
        parts = None
        for seed in _dirichlet_draws(options["seed"]):
            settings = {**options, "seed": seed}
            partitioner = _dirichlet(num_partitions, min_partition_size=min_size, **settings)
            try:
                parts = _load_parts(partitioner, pool, num_partitions)
                break
            except ValueError:  # still under min_size after the partitioner's resamplings
                continue
        if parts is None:
            continue
        if min_size < sizes[0]:
            warnings.warn(
                f"Dirichlet(alpha={options['alpha']}) partitioning of {len(pool)} samples "
                f"into {num_partitions} partitions could not give every partition "
                f"{sizes[0]} samples; smallest partition: {min(map(len, parts))} samples",
                UserWarning,
                stacklevel=3,
            )
        return parts
    raise ValueError(
        f"Dirichlet(alpha={options['alpha']}) partitioning of {len(pool)} samples into "
        f"{num_partitions} partitions left some partition empty in every attempt; "
        f"use a larger alpha or fewer partitions"
    )


def _warn_if_uncovered(labels: np.ndarray, parts: list[np.ndarray], method: str) -> None:
    covered = np.zeros(len(labels), dtype=bool)
    for part in parts:
        covered[part] = True
    if covered.all():
        return
    left_out = np.unique(labels[~covered]).tolist()
    warnings.warn(
        f"{method} partitioning left {int((~covered).sum())} of {len(labels)} samples "
        f"(classes {left_out}) in no partition; use num_partitions >= the number of classes "
        f"to cover every class",
        UserWarning,
        stacklevel=3,
    )
