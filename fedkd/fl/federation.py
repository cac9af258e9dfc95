"""The state every round of a run shares: its transport, config, data, recorder and journal.

Apart from :mod:`fedkd.fl.rounds` so that the helpers the rounds call (:mod:`fedkd.fl.resume`)
can take a :class:`Federation` without importing the rounds that call them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedkd.data import DataSplit
from fedkd.fl.config import FedConfig
from fedkd.fl.history import RunRecorder
from fedkd.fl.journal import RoundJournal
from fedkd.secagg.identity import Roster
from fedkd.transport import Envelope, ExchangeResult, Transport

FIRST_ROUND_TIMEOUT, MIN_AUTO_TIMEOUT = 1800.0, 60.0  # seconds, for stage-timeout = 0 (auto)


@dataclass
class Federation:
    """What every round needs: the transport, the config, the data and the results folder."""

    transport: Transport
    config: FedConfig
    split: DataSplit
    recorder: RunRecorder
    run_id: int
    public_digest: bytes
    partitions: dict[int, int] = field(default_factory=dict)  # node -> partition id, learned
    last_train_seconds: float | None = None  # the previous train exchange, for auto deadlines
    roster: Roster | None = None  # secure aggregation's roster (None: curious-server mode)
    journal: RoundJournal | None = None  # the write-ahead round journal (None: not kept)
    known_nodes: set[int] = field(default_factory=set)  # the nodes seen in earlier rounds
    silent: set[int] = field(default_factory=set)  # nodes that did not answer last round

    def timeout(self, *, secagg: bool = False) -> float:
        """Seconds an exchange may take: ``stage-timeout``, or (0 = auto) a deadline from the
        measured work: generous for the first train exchange (warm-up epochs, start-up), then
        three times the last train exchange, never under a minute. The secure-aggregation
        stages after train (no training in them) take ``secagg-timeout`` when it is set: a
        node lost there then costs the round that long, not a training deadline."""
        if secagg and self.config.secagg_timeout > 0:
            return self.config.secagg_timeout
        if self.config.stage_timeout > 0:
            return self.config.stage_timeout
        if self.last_train_seconds is None:
            return FIRST_ROUND_TIMEOUT
        return max(MIN_AUTO_TIMEOUT, 3.0 * self.last_train_seconds)

    def exchange(self, requests: dict[int, Envelope], server_round: int) -> ExchangeResult:
        return self.transport.exchange(
            requests, timeout=self.timeout(), group=f"round-{server_round}"
        )

    def partition_of(self, node: int) -> int:
        """A node's partition id (learned from its replies; -1 when it never answered)."""
        return self.partitions.get(node, -1)
