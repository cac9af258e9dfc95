"""A client population that costs nothing until a client is sampled.

Cross-device studies simulate 10^5-10^6 clients, far more than any pool has disjoint shards
for. As pfl-research's artificial federated datasets do, a client's shard is *drawn* from a
central pool when it is needed, as a pure function of ``(seed, client id)``:

1. its size from a distribution (Poisson with the given mean, or a log-normal of that mean
   with ``sigma`` > 0 for the heavy tail real device populations have), at least one sample;
2. its label mix ``p ~ Dirichlet(alpha, ..., alpha)`` over the classes the pool holds;
3. its per-class counts ``~ Multinomial(size, p)``, then that many samples of each class
   drawn uniformly *with replacement* from the pool's members of that class.

Clients overlap (two clients may hold the same pool sample), as in pfl-research; nothing is
stored per client, so a population of 10^6 costs the pool's per-class index and no more.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

_SIZE, _MIX = 1, 2  # independent streams per client: the size never shifts the label draw


@dataclass(frozen=True)
class PopulationSpec:
    """How a population's shards are drawn.

    Parameters
    ----------
    size : int
        Number of clients; client ids are ``0 .. size - 1``.
    alpha : float
        Dirichlet concentration of each client's label mix (small: few classes per client).
    mean_size : float
        Mean number of samples per client.
    size_sigma : float
        0: sizes are Poisson(``mean_size``); > 0: log-normal with this sigma and that mean.
    seed : int
        With the client id, seeds every draw.
    """

    size: int
    alpha: float
    mean_size: float = 50.0
    size_sigma: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("size", self.size >= 1, ">= 1"),
            ("alpha", self.alpha > 0 and math.isfinite(self.alpha), "> 0"),
            ("mean_size", 1.0 <= self.mean_size < math.inf, ">= 1"),
            ("size_sigma", 0.0 <= self.size_sigma < math.inf, ">= 0"),
        )
        for name, ok, accepted in checks:
            if not ok:
                raise ValueError(f"population {name} = {getattr(self, name)!r}; must be {accepted}")


class Population:
    """Shards of ``spec.size`` clients drawn on demand from a pool's labels.

    Parameters
    ----------
    labels : np.ndarray
        The pool's integer labels ``(N,)``; shards are positions into this pool.
    spec : PopulationSpec
        Size, label skew and shard sizes of the population.
    num_classes : int
        Length of :meth:`label_counts` vectors (classes absent from the pool get 0).
    """

    def __init__(self, labels: np.ndarray, spec: PopulationSpec, num_classes: int) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError(f"a population needs a non-empty 1-D label pool, got {labels.shape}")
        self.spec, self.num_classes, self.pool_size = spec, num_classes, len(labels)
        self.classes = np.unique(labels)  # (K,) the classes present
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], self.classes, side="left")
        self._members = np.split(order, bounds[1:])  # per present class: pool positions

    def __len__(self) -> int:
        return self.spec.size

    def _check(self, client: int) -> None:
        if not 0 <= client < self.spec.size:
            raise ValueError(f"client {client} is outside the population 0..{self.spec.size - 1}")

    def shard_size(self, client: int) -> int:
        """How many samples ``client`` holds (>= 1, at most the pool's size)."""
        self._check(client)
        rng = np.random.default_rng([self.spec.seed, _SIZE, client])
        mean, sigma = self.spec.mean_size, self.spec.size_sigma
        if sigma > 0:  # log-normal with the requested mean: mu = ln(mean) - sigma^2 / 2
            drawn = rng.lognormal(math.log(mean) - sigma**2 / 2, sigma)
        else:
            drawn = rng.poisson(mean)
        return int(min(max(1, round(drawn)), self.pool_size))

    def label_mix(self, client: int) -> np.ndarray:
        """The client's class proportions ``(num_classes,)`` (zero for classes not in the pool)."""
        self._check(client)
        rng = np.random.default_rng([self.spec.seed, _MIX, client])
        mix = np.zeros(self.num_classes)
        mix[self.classes] = rng.dirichlet(np.full(len(self.classes), self.spec.alpha))
        return mix

    def label_counts(self, client: int) -> np.ndarray:
        """Per-class sample counts of the client's shard ``(num_classes,)``, int64."""
        return self._draw(client)[1]

    def shard(self, client: int) -> np.ndarray:
        """The client's shard: positions into the pool ``(shard_size,)``, grouped by class."""
        return self._draw(client)[0]

    @functools.lru_cache(maxsize=64)  # noqa: B019 -- a few clients per actor, freed with it
    def _draw(self, client: int) -> tuple[np.ndarray, np.ndarray]:
        size, mix = self.shard_size(client), self.label_mix(client)
        rng = np.random.default_rng([self.spec.seed, _MIX, client, size])
        counts = rng.multinomial(size, mix[self.classes])  # (K,)
        picks = [
            members[rng.integers(0, len(members), count)]
            for members, count in zip(self._members, counts, strict=True)
        ]
        full = np.zeros(self.num_classes, dtype=np.int64)
        full[self.classes] = counts
        return np.concatenate(picks).astype(np.int64), full
