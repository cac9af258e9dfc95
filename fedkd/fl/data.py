"""The federation's data: one seeded split, the private pool cut into client partitions.

Every process (server, each simulated or real client) rebuilds the same split and partitions
from the run config alone, so no data travels. The result is cached per process: Ray reuses
its actors for many virtual clients, and rebuilding the Dirichlet partition of a 1,000-client
federation for every message would dominate the round. The cache holds read-only data only;
per-client state lives in Flower's ``context.state``.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from fedkd.data import ArrayDataset, DataSplit, load_split, partition
from fedkd.fl.config import FedConfig


@dataclass(frozen=True)
class FederatedData:
    """The split plus each partition's indexes into the private pool."""

    split: DataSplit
    parts: tuple[np.ndarray, ...]
    public_digest: bytes  # SHA-256 of the public inputs; bound into secure aggregation

    @property
    def num_partitions(self) -> int:
        return len(self.parts)

    def client_train(self, partition_id: int) -> ArrayDataset:
        """The private shard of one client."""
        if not 0 <= partition_id < len(self.parts):
            raise ValueError(
                f"partition-id {partition_id} is outside 0..{len(self.parts) - 1} "
                f"(num-partitions = {len(self.parts)})"
            )
        return self.split.private.subset(self.parts[partition_id])

    def label_counts(self, partition_id: int) -> np.ndarray:
        """Per-class sample counts of one client's shard, shape ``(classes,)``."""
        labels = self.split.private.y[self.parts[partition_id]]
        return np.bincount(labels, minlength=self.split.num_classes).astype(np.int64)


def public_digest(split: DataSplit) -> bytes:
    """SHA-256 of the public inputs: clients and server bind it into secure aggregation."""
    return hashlib.sha256(np.ascontiguousarray(split.public.x).tobytes()).digest()


SplitKey = tuple[str, str, int, float | int, float | int, float | int, int | None]


def _split_key(config: FedConfig) -> SplitKey:
    data, sizes = config.data, config.data.split_sizes()
    return (
        data.dataset,
        data.data_root,
        config.seed,
        sizes["private"],
        sizes["public"],
        sizes["test"],
        data.num_samples,
    )


@functools.lru_cache(maxsize=4)
def _split(key: SplitKey) -> DataSplit:
    dataset, data_root, seed, private, public, test, num_samples = key
    return load_split(
        dataset,
        seed=seed,
        private=private,
        public=public,
        test=test,
        data_root=data_root or None,
        num_samples=num_samples,
    )


@functools.lru_cache(maxsize=4)
def _cached(key: SplitKey, partitioner: str, alpha: float, num_partitions: int) -> FederatedData:
    split, dataset, seed = _split(key), key[0], key[2]
    if num_partitions > len(split.private):
        raise ValueError(
            f"{num_partitions} partitions but the private pool of '{dataset}' holds only "
            f"{len(split.private)} samples; use more data or fewer clients"
        )
    parts = partition(
        split.private.y, num_partitions=num_partitions, method=partitioner, alpha=alpha, seed=seed
    )
    return FederatedData(split=split, parts=tuple(parts), public_digest=public_digest(split))


def federated_data(config: FedConfig, num_partitions: int) -> FederatedData:
    """Load (once per process) the split and partitions a run config describes."""
    return _cached(_split_key(config), config.data.partitioner, config.data.alpha, num_partitions)


def load_run_split(config: FedConfig) -> DataSplit:
    """The split alone (server side, centralized baseline), loaded once per process: the
    preflight check, the run and its clients in one process share it (read-only)."""
    return _split(_split_key(config))
