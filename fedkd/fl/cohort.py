"""How many neighbours each client masks with: full SecAgg for small cohorts, SecAgg+ beyond.

Full SecAgg (Bonawitz et al., CCS 2017) costs every client one mask and one Shamir share per
other participant: O(n) per client, O(n^2) for the round. SecAgg+ (Bell et al., CCS 2020)
masks with k neighbours on a sparse graph, k = O(log n). ``secagg-neighbours = 0`` (auto)
picks full SecAgg below :data:`SECAGG_PLUS_FROM` clients and, from there, the smallest even k
for which, with ``t`` the round's threshold of the k + 1 share holders,

- **security**: no client has ``t - 1`` or more corrupt neighbours (with them, a malicious
  server can declare the rest of the neighbourhood dropped and unmask that one client):
  ``n * P[Binomial(k, gamma) >= t - 1] < 2^-sigma``;
- **correctness**: no neighbourhood loses more than ``k + 1 - t`` holders to dropouts (the
  round would fail): ``n * P[Binomial(k + 1, delta) > k + 1 - t] < 2^-eta``;

with Bell et al.'s headline setting, ``gamma = delta = 5%`` of the clients corrupt or
dropping out, ``sigma = 40`` and ``eta = 20`` bits. The union bound over the n clients is what
makes k grow like log n: 38 at n = 100, 44 at 1,000, 58 at 10^6 (threshold 0.66). The
bound assumes neighbours are placed at random, which the graph's hash ring does for a
cohort the server samples honestly; it says nothing about a server that picks the cohort.
"""

from __future__ import annotations

import functools
import math

from scipy.stats import binom

from fedkd.secagg import majority_threshold

SECAGG_PLUS_FROM = 100  # cohorts of this size and more default to SecAgg+ (docs/engines.md)
CORRUPT, DROPOUT = 0.05, 0.05  # gamma, delta: the fractions the default is sized for
SECURITY_BITS, CORRECTNESS_BITS = 40, 20  # sigma, eta


def threshold_for(neighbours: int, share: float) -> int:
    """Shares needed of the ``neighbours + 1`` holders: the configured share of them, never
    less than a strict majority (below that a server forging dropouts learns inputs)."""
    wanted = math.ceil(share * (neighbours + 1))
    return min(max(majority_threshold(neighbours), wanted), neighbours + 1)


@functools.lru_cache(maxsize=256)
def plus_neighbours(n: int, share: float) -> int:
    """The smallest even k meeting both bounds for a cohort of ``n`` (``n - 1``: none does)."""
    for k in range(2, n - 1, 2):
        t = threshold_for(k, share)
        insecure = n * binom.sf(t - 2, k, CORRUPT)  # P[corrupt neighbours >= t - 1]
        failing = n * binom.sf(k + 1 - t, k + 1, DROPOUT)  # P[dropped holders > k + 1 - t]
        if insecure < 2.0**-SECURITY_BITS and failing < 2.0**-CORRECTNESS_BITS:
            return k
    return n - 1


def round_neighbours(n: int, configured: int, share: float) -> int:
    """Neighbours per client in a round of ``n``: ``configured`` (capped at ``n - 1``: full
    SecAgg), or with 0 (auto) full SecAgg below :data:`SECAGG_PLUS_FROM`, else SecAgg+."""
    if configured > 0:
        return min(configured, n - 1)
    if n < SECAGG_PLUS_FROM:
        return n - 1
    return plus_neighbours(n, share)  # even (a Harary graph exists for any n), or n - 1
