"""Aggregation configuration shared by the server and every client of one round.

The configuration is public. Its SHA-256 :meth:`SecAggConfig.digest` is advertised by every client
and bound into key derivation and share encryption, so a server that shows different clients
different configurations (e.g. another participant list, to isolate one client) is detected.

Threshold rule. Each client's two secrets are Shamir-shared ``t``-of-``(k + 1)`` among itself and
its ``k`` neighbours, and an honest client reveals, for each peer, *either* its self-mask share
*or* its key share, never both, and answers one unmask request per round. A server that tells
different clients different dropout sets then collects ``h_b`` self-mask shares and ``h_s`` key
shares with ``h_b + h_s <= k + 1``; it can learn one client's input only if both reach ``t``, which
``2 t > k + 1`` rules out. This is the bound of Bonawitz et al., "Practical Secure Aggregation for
Privacy-Preserving Machine Learning" (CCS 2017), for an active server without corrupt clients
(with ``n_C`` colluding clients their active-model analysis needs ``2 t > n + n_C``), applied per
neighbourhood as in SecAgg+ (Bell et al., CCS 2020). Configurations with ``2 t <= k + 1`` are
refused.

``roster_digest`` says which trust model the round runs under: all zeros is the curious-server
mode (no identities; nothing stops a server that substitutes keys or invents participants), any
other value is the digest of the roster every client must hold (:mod:`fedkd.secagg.identity`);
then advertised keys are signed and a consistency stage certifies one survivor set per
neighbourhood: a client unmasks only when, for every client whose shares it holds, ``threshold``
of that client's ``k + 1`` share holders endorsed the set it signed. ``2 t > k + 1`` makes any
two such endorsements of one neighbourhood share an honest endorser, so two different
survivor sets are never both certified to holders of one client's shares
(:mod:`fedkd.secagg.client_unmask`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from fedkd.dp.plan import noise_headroom
from fedkd.secagg.codec import (
    Fields,
    FieldValue,
    encode_fields,
    get_bytes,
    get_float,
    get_int,
    get_ints,
)
from fedkd.secagg.errors import ConfigError
from fedkd.secagg.graph import check_degree, neighbour_table
from fedkd.secagg.identity import NO_ROSTER
from fedkd.secagg.quantize import Quantizer, check_capacity

_DIGEST_LABEL = b"fedkd-secagg/config/v1"
_CONTEXT_LABEL = b"fedkd-secagg/context/v1"
_MAX_ID = 2**64


def majority_threshold(neighbours: int) -> int:
    """Smallest safe threshold for ``k`` neighbours: a strict majority of the ``k + 1`` holders."""
    return (neighbours + 1) // 2 + 1


@dataclass(frozen=True)
class SecAggConfig:
    """Public parameters of one secure-aggregation round.

    Parameters
    ----------
    run_id, round : int
        Identify the round; a client answers a (run_id, round) at most once.
    participants : tuple[int, ...]
        Distinct node ids in ``[0, 2**64)``; stored sorted.
    threshold : int
        Shares needed to reconstruct a secret; ``2 * threshold > neighbours + 1``.
    neighbours : int
        SecAgg+ degree ``k``; ``len(participants) - 1`` is full SecAgg.
    clip : float
        Inputs are clipped to ``[-clip, clip]``.
    vector_length : int
        Length ``d`` of every input vector.
    bits : int
        Quantization bits per value.
    modulus_bits : int
        Every value lives in ``Z_{2^modulus_bits}`` and a masked word travels packed to this
        width; ``n * (2**bits - 1) < 2**modulus_bits`` is checked (see
        :func:`~fedkd.secagg.quantize.modulus_bits_for`).
    public_set_digest : bytes
        SHA-256 of the public dataset the inputs were computed on (32 bytes).
    graph_seed : int
        Public seed of the neighbour graph.
    roster_digest : bytes
        :meth:`Roster.digest` of the roster clients authenticate each other with (32 bytes);
        all zeros (the default) is the curious-server mode without identities.
    noise_variance : float
        Distributed DP: the variance (levels^2) of the integer Skellam noise every client adds
        to its quantised levels before masking (0: none). Public like the rest, so each client
        checks it against the minimum its own DP settings demand; the modulus must hold the
        summed noise's tail (:func:`fedkd.dp.plan.noise_headroom`) on top of the levels.
    """

    run_id: int
    round: int
    participants: tuple[int, ...]
    threshold: int
    neighbours: int
    clip: float
    vector_length: int
    bits: int = 32
    modulus_bits: int = 64
    public_set_digest: bytes = field(default=bytes(32))
    graph_seed: int = 0
    roster_digest: bytes = field(default=NO_ROSTER)
    noise_variance: float = 0.0

    def __post_init__(self) -> None:
        ids = tuple(sorted(int(p) for p in self.participants))
        object.__setattr__(self, "participants", ids)
        if len(set(ids)) != len(ids):
            raise ConfigError(f"participants contain duplicate ids: {list(ids)}")
        if len(ids) < 2:
            raise ConfigError(f"secure aggregation needs >= 2 participants, got {len(ids)}")
        if ids[0] < 0 or ids[-1] >= _MAX_ID:
            raise ConfigError("participant ids must lie in [0, 2**64)")
        for name in ("run_id", "round", "graph_seed"):
            value = getattr(self, name)
            if not 0 <= value < _MAX_ID:
                raise ConfigError(f"{name}={value} is invalid; accepted: 0 <= {name} < 2**64")
        check_degree(len(ids), self.neighbours)
        holders = self.neighbours + 1
        if not 1 <= self.threshold <= holders:
            raise ConfigError(
                f"threshold={self.threshold} is invalid; accepted: 1 <= threshold <= "
                f"neighbours + 1 = {holders}"
            )
        if 2 * self.threshold <= holders:
            raise ConfigError(
                f"threshold={self.threshold} is unsafe for {holders} share holders: a malicious "
                "server could collect both kinds of shares of one client (Bonawitz et al. 2017 "
                f"need a strict majority); use threshold >= {majority_threshold(self.neighbours)}"
            )
        if self.vector_length < 1:
            raise ConfigError(f"vector_length={self.vector_length} is invalid; accepted: >= 1")
        if len(self.public_set_digest) != 32:
            raise ConfigError("public_set_digest must be 32 bytes (a SHA-256 digest)")
        if len(self.roster_digest) != 32:
            raise ConfigError("roster_digest must be 32 bytes (a roster digest, or zeros)")
        Quantizer(self.clip, self.bits)
        if not (math.isfinite(self.noise_variance) and self.noise_variance >= 0):
            raise ConfigError(f"noise_variance={self.noise_variance} is invalid; accepted: >= 0")
        check_capacity(len(ids), self.bits, self.modulus_bits, self.noise_headroom)

    @property
    def noise_headroom(self) -> int:
        """Levels the summed distributed-DP noise of all participants may add on either side."""
        return noise_headroom(len(self.participants) * self.noise_variance)

    @property
    def num_clients(self) -> int:
        """Number of participants ``n``."""
        return len(self.participants)

    @property
    def authenticated(self) -> bool:
        """Whether clients authenticate each other with a roster (the malicious-server mode)."""
        return self.roster_digest != NO_ROSTER

    @property
    def quantizer(self) -> Quantizer:
        """The fixed-point codec of this round."""
        return Quantizer(self.clip, self.bits)

    @cached_property
    def _neighbour_table(self) -> dict[int, tuple[int, ...]]:
        return neighbour_table(self.participants, self.neighbours, self.graph_seed)

    @cached_property
    def _rank(self) -> dict[int, int]:
        return {node: rank for rank, node in enumerate(self.participants, start=1)}

    def neighbours_of(self, node: int) -> tuple[int, ...]:
        """Sorted neighbours of ``node`` in the SecAgg+ graph (all others for full SecAgg)."""
        try:
            return self._neighbour_table[node]
        except KeyError:
            raise KeyError(f"node {node} is not a participant of the round") from None

    def holders_of(self, node: int) -> frozenset[int]:
        """Clients holding shares of ``node``'s secrets: its neighbours and itself."""
        # One node's holders, not a table of all: each of n clients asks about its own
        # neighbourhood, and a table would cost every client O(n k) (1,000-client rounds).
        return frozenset((*self.neighbours_of(node), node))

    def share_x(self, node: int) -> int:
        """Shamir evaluation point of ``node``: its 1-based rank among the participants."""
        return self._rank[node]

    def to_fields(self) -> Fields:
        """Encode as a flat field dictionary (fits a Flower ConfigRecord)."""
        return {
            "run_id": self.run_id,
            "round": self.round,
            "participants": list(self.participants),
            "threshold": self.threshold,
            "neighbours": self.neighbours,
            "clip": float(self.clip),
            "vector_length": self.vector_length,
            "bits": self.bits,
            "modulus_bits": self.modulus_bits,
            "public_set_digest": self.public_set_digest,
            "graph_seed": self.graph_seed,
            "roster_digest": self.roster_digest,
            "noise_variance": float(self.noise_variance),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, FieldValue]) -> SecAggConfig:
        """Decode :meth:`to_fields` output (validates like the constructor)."""
        return cls(
            run_id=get_int(fields, "run_id"),
            round=get_int(fields, "round"),
            participants=tuple(get_ints(fields, "participants")),
            threshold=get_int(fields, "threshold"),
            neighbours=get_int(fields, "neighbours"),
            clip=get_float(fields, "clip"),
            vector_length=get_int(fields, "vector_length"),
            bits=get_int(fields, "bits"),
            modulus_bits=get_int(fields, "modulus_bits"),
            public_set_digest=get_bytes(fields, "public_set_digest"),
            graph_seed=get_int(fields, "graph_seed"),
            roster_digest=get_bytes(fields, "roster_digest"),
            noise_variance=get_float(fields, "noise_variance"),
        )

    def digest(self) -> bytes:
        """SHA-256 over the canonical encoding of every field (computed once)."""
        return self._digest

    @cached_property
    def _digest(self) -> bytes:
        return hashlib.sha256(_DIGEST_LABEL + encode_fields(self.to_fields())).digest()

    def key_context(self) -> bytes:
        """Bytes bound into every HKDF derivation and AEAD associated data of the round.

        Binds the run id, the round, the sorted participant list, the public-set digest and the
        config digest.
        """
        return self._key_context

    @cached_property
    def _key_context(self) -> bytes:
        participants = b"".join(p.to_bytes(8, "big") for p in self.participants)
        return b"".join(
            (
                _CONTEXT_LABEL,
                self.run_id.to_bytes(8, "big"),
                self.round.to_bytes(8, "big"),
                hashlib.sha256(participants).digest(),
                self.public_set_digest,
                self.digest(),
            )
        )
