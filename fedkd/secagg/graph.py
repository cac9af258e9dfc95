"""SecAgg+ neighbour graph (Bell et al., CCS 2020): each client masks with k neighbours.

The graph is a Harary graph H(k, n) laid on a pseudo-random ring order of the participants: each
client is joined to the ``k // 2`` clients on either side of it and, for odd ``k`` (which needs an
even ``n``), to the client diametrically opposite. The ring order sorts the participants by
SHA-256 of a public seed and their id, so every client computes the same graph from public data.
``k = n - 1`` is the complete graph, i.e. the original SecAgg of Bonawitz et al. (CCS 2017).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

from fedkd.secagg.errors import ConfigError

_LABEL = b"fedkd-secagg/graph/v1"


def check_degree(num_clients: int, neighbours: int) -> None:
    """Check that a k-regular Harary graph on ``num_clients`` nodes exists.

    Parameters
    ----------
    num_clients : int
        Number of participants ``n``.
    neighbours : int
        Degree ``k`` of every node.

    Raises
    ------
    ConfigError
        When ``k`` is outside ``[1, n - 1]`` or odd with odd ``n`` (and below ``n - 1``).
    """
    if not 1 <= neighbours <= num_clients - 1:
        raise ConfigError(
            f"neighbours={neighbours} is invalid for {num_clients} participants; accepted: "
            f"1 <= neighbours <= {num_clients - 1} (n - 1 is full SecAgg)"
        )
    if neighbours < num_clients - 1 and neighbours % 2 == 1 and num_clients % 2 == 1:
        raise ConfigError(
            f"neighbours={neighbours} is odd with an odd number of participants ({num_clients}); "
            f"no regular graph exists. Accepted: an even value, or {num_clients - 1} (full SecAgg)"
        )


def ring_key(seed: int, node: int) -> bytes:
    return hashlib.sha256(_LABEL + seed.to_bytes(8, "big") + node.to_bytes(8, "big")).digest()


@lru_cache(maxsize=64)
def _neighbour_table(
    participants: tuple[int, ...], neighbours: int, seed: int
) -> dict[int, tuple[int, ...]]:
    n = len(participants)
    check_degree(n, neighbours)
    if neighbours == n - 1:
        return {u: tuple(v for v in participants if v != u) for u in participants}
    ring = sorted(participants, key=lambda node: ring_key(seed, node))
    table: dict[int, tuple[int, ...]] = {}
    for position, node in enumerate(ring):
        offsets = [j for j in range(1, neighbours // 2 + 1)] + [
            -j for j in range(1, neighbours // 2 + 1)
        ]
        if neighbours % 2 == 1:
            offsets.append(n // 2)
        table[node] = tuple(sorted(ring[(position + off) % n] for off in offsets))
    return table


def neighbour_table(
    participants: Sequence[int], neighbours: int, seed: int = 0
) -> dict[int, tuple[int, ...]]:
    """Neighbours of every participant (sorted ids, the node itself excluded).

    Parameters
    ----------
    participants : Sequence[int]
        Participant ids (any order; the graph depends only on the set).
    neighbours : int
        Degree ``k``; ``len(participants) - 1`` gives the complete graph.
    seed : int
        Public seed of the ring order.

    Returns
    -------
    dict[int, tuple[int, ...]]
        ``node -> sorted neighbour ids``; the relation is symmetric.
    """
    return dict(_neighbour_table(tuple(sorted(participants)), neighbours, seed))


def share_holders(
    participants: Sequence[int], neighbours: int, node: int, seed: int = 0
) -> tuple[int, ...]:
    """Clients that hold Shamir shares of ``node``'s secrets: its neighbours and itself (sorted).

    Parameters
    ----------
    participants : Sequence[int]
        Participant ids.
    neighbours : int
        Degree ``k``.
    node : int
        The client whose share holders are wanted.
    seed : int
        Public seed of the ring order.

    Returns
    -------
    tuple[int, ...]
        ``k + 1`` sorted ids.
    """
    table = _neighbour_table(tuple(sorted(participants)), neighbours, seed)
    if node not in table:
        raise KeyError(f"node {node} is not a participant; participants: {sorted(table)}")
    return tuple(sorted((*table[node], node)))
