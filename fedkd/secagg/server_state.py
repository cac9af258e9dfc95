"""What the server keeps about one round, and the result it ends with."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import ConfigError
from fedkd.secagg.identity import Roster
from fedkd.secagg.wire import AdvertisedKeys, EncryptedShares


@dataclass
class ServerState:
    """What the server knows about one round.

    Attributes
    ----------
    config : SecAggConfig
        The round's configuration.
    roster : Roster | None
        The roster (public), when the server has it: it then drops clients whose keys or
        signatures fail before relaying them (without it, the clients still refuse them).
    advertised : dict[int, AdvertisedKeys]
        Stage-1 answers (the set U1).
    shares : dict[int, EncryptedShares]
        Stage-2 answers (the set U2).
    masked_sum : np.ndarray | None
        Running ``uint64`` sum of the masked inputs received (stage 3).
    survivors : tuple[int, ...]
        Clients whose masked input arrived (U3).
    dropped : tuple[int, ...]
        Clients of U2 whose masked input did not arrive.
    signatures : dict[int, bytes]
        Consistency-stage signatures of the survivor set, by signer.
    tags : dict[int, dict[int, bytes]]
        Consistency-stage HMAC tags, ``recipient -> {signer: tag}`` (relayed, not checkable
        by the server).
    pop_private : bytes
        The server's X25519 key of the round for proofs of possession (empty: none asked).
    routed : dict[int, frozenset[int]]
        Stage 3: the senders whose ciphertexts were routed to each client.
    accused : dict[int, frozenset[int]]
        Stage 3: the senders each surviving client reported (and masked with none of).
    pair_seeds : dict[tuple[int, int], bytes]
        Stage 4: ``(survivor, dropped) -> pairwise seed`` revealed by the survivor.
    self_mask_shares, key_shares : dict[int, dict[int, int]]
        Shares received in stage 4: ``owner -> {holder: share}``.
    rejected : dict[int, str]
        Clients the server dropped for what they sent, with the reason (never an abort).
    liars : set[int]
        Holders caught revealing a share unlike its owner's commitment.
    unmasked : set[int]
        Survivors whose unmask reply was recorded.
    """

    config: SecAggConfig
    roster: Roster | None = None
    advertised: dict[int, AdvertisedKeys] = field(default_factory=dict)
    shares: dict[int, EncryptedShares] = field(default_factory=dict)
    masked_sum: np.ndarray | None = None
    survivors: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    signatures: dict[int, bytes] = field(default_factory=dict)
    tags: dict[int, dict[int, bytes]] = field(default_factory=dict)
    pop_private: bytes = b""
    routed: dict[int, frozenset[int]] = field(default_factory=dict)
    accused: dict[int, frozenset[int]] = field(default_factory=dict)
    pair_seeds: dict[tuple[int, int], bytes] = field(default_factory=dict)
    self_mask_shares: dict[int, dict[int, int]] = field(default_factory=dict)
    key_shares: dict[int, dict[int, int]] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    liars: set[int] = field(default_factory=set)
    unmasked: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.roster is not None and self.roster.digest() != self.config.roster_digest:
            raise ConfigError(
                "the server's roster is not the one the round's config names (roster digest)"
            )

    def reject(self, node: int, reason: str) -> None:
        """Drop ``node`` for this round because of what it sent (first reason kept)."""
        self.rejected.setdefault(node, reason)

    def partners(self, owner: int) -> list[int]:
        """Survivors that masked with ``owner``: its shares reached them and opened (O(k))."""
        sent = self.shares.get(owner)
        if sent is None:
            return []
        alive = self._alive()
        return [
            v
            for v in sent.recipients
            if v in alive
            and owner in self.routed.get(v, ())
            and owner not in self.accused.get(v, ())
        ]

    def _alive(self) -> frozenset[int]:
        cached = self.__dict__.get("_alive_cache")
        if cached is None or cached[0] != self.survivors:
            cached = self.__dict__["_alive_cache"] = (self.survivors, frozenset(self.survivors))
        return cached[1]


@dataclass(frozen=True)
class AggregateResult:
    """Outcome of a round: the exact modular sum and its decoding."""

    quantized_sum: np.ndarray  # (d,) uint64
    total: np.ndarray  # (d,) float64 sum of the survivors' clipped inputs
    mean: np.ndarray  # (d,) float64
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
