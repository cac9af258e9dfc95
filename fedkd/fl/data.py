"""The federation's data: one seeded split, the private pool cut into client partitions.

Every process (server, each simulated or real client) rebuilds the same split and partitions
from the run config alone, so no data travels. The result is cached per process: Ray reuses
its actors for many virtual clients, and rebuilding the Dirichlet partition of a 1,000-client
federation for every message would dominate the round. The cache holds read-only data only;
per-client state lives in Flower's ``context.state``.

With ``partitioner = population`` there are no partitions: each client's shard is drawn on
demand from the private pool (:mod:`fedkd.data.population`), so a federation of a million
clients costs what its sampled clients cost. An engine that has already loaded the data
(the Ray engine's actors, from Ray's object store) hands it over with :func:`install`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from fedkd.data import ArrayDataset, DataSplit, load_split, partition
from fedkd.data.population import Population, PopulationSpec
from fedkd.fl.config import FedConfig

POPULATION = "population"  # the partitioner that draws shards on demand


@dataclass(frozen=True)
class FederatedData:
    """The split plus each partition's indexes into the private pool (or, for a population
    drawn on demand, the :class:`~fedkd.data.population.Population` that draws them)."""

    split: DataSplit
    parts: tuple[np.ndarray, ...]
    public_digest: bytes  # SHA-256 of the public inputs; bound into secure aggregation
    population: Population | None = None  # set: shards drawn on demand, ``parts`` empty

    @property
    def num_partitions(self) -> int:
        return len(self.parts) if self.population is None else len(self.population)

    def _indexes(self, partition_id: int) -> np.ndarray:
        if not 0 <= partition_id < self.num_partitions:
            raise ValueError(
                f"partition-id {partition_id} is outside 0..{self.num_partitions - 1} "
                f"(num-partitions = {self.num_partitions})"
            )
        if self.population is not None:
            return self.population.shard(partition_id)
        return self.parts[partition_id]

    def client_train(self, partition_id: int) -> ArrayDataset:
        """The private shard of one client."""
        return self.split.private.subset(self._indexes(partition_id))

    def shard_size(self, partition_id: int) -> int:
        """How many samples one client holds."""
        return len(self._indexes(partition_id))

    def label_counts(self, partition_id: int) -> np.ndarray:
        """Per-class sample counts of one client's shard, shape ``(classes,)``."""
        labels = self.split.private.y[self._indexes(partition_id)]
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


PartsKey = tuple[SplitKey, str, float, int, float, float]
_INSTALLED: dict[PartsKey, FederatedData] = {}


def _parts_key(config: FedConfig, num_partitions: int) -> PartsKey:
    data = config.data
    shards = (data.shard_size, data.shard_size_sigma) if data.partitioner == POPULATION else (0, 0)
    return (_split_key(config), data.partitioner, data.alpha, num_partitions, *shards)


@functools.lru_cache(maxsize=4)
def _cached(key: PartsKey) -> FederatedData:
    split_key, partitioner, alpha, num_partitions, mean, sigma = key
    split, dataset, seed = _split(split_key), split_key[0], split_key[2]
    if partitioner == POPULATION:
        spec = PopulationSpec(num_partitions, alpha, mean, sigma, seed)
        population = Population(split.private.y, spec, split.num_classes)
        return FederatedData(split, (), public_digest(split), population)
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
    key = _parts_key(config, num_partitions)
    installed = _INSTALLED.get(key)
    return installed if installed is not None else _cached(key)


def install(config: FedConfig, num_partitions: int, data: FederatedData) -> None:
    """Serve ``data`` for this config in this process instead of loading it (an engine's
    worker that received the data from its driver; the data must be what the config loads)."""
    _INSTALLED.clear()  # one federation per worker process at a time
    _INSTALLED[_parts_key(config, num_partitions)] = data


def load_run_split(config: FedConfig) -> DataSplit:
    """The split alone (server side, centralized baseline), loaded once per process: the
    preflight check, the run and its clients in one process share it (read-only)."""
    return _split(_split_key(config))
