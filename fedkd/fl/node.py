"""What a node is to the library: who it is, its operator's settings, and its per-run store.

Per-node state that outlives one message (the persistent model, the secure-aggregation state,
the pending contribution) goes through a :class:`NodeStore`: Flower's ``context.state`` in
``clients/app.py``, a dict in :class:`MemoryStore`. That store lives as long as one run; what
a node must remember across runs (what it released, its privacy budget) is in its ledger
(:mod:`fedkd.fl.ledger`), under node config ``state-dir`` or ``$FEDKD_HOME/nodes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fedkd.fl import keys
from fedkd.transport import Envelope


class BadRequest(ValueError):
    """The server's message is malformed (missing field or array, wrong shape, NaN...)."""


class NodeStore(Protocol):
    """Per-node envelopes that survive between messages."""

    def get(self, key: str) -> Envelope | None: ...

    def put(self, key: str, value: Envelope) -> None: ...

    def delete(self, key: str) -> None: ...


class MemoryStore:
    """A :class:`NodeStore` in a dict (in-process federations, tests)."""

    def __init__(self) -> None:
        self.items: dict[str, Envelope] = {}

    def get(self, key: str) -> Envelope | None:
        value = self.items.get(key)
        return None if value is None else value.copy()

    def put(self, key: str, value: Envelope) -> None:
        self.items[key] = value.copy()

    def delete(self, key: str) -> None:
        self.items.pop(key, None)


def _flag(node_config: Mapping[str, Any], key: str) -> bool:
    return str(node_config.get(key, "false")).lower() in ("true", "1")


@dataclass(frozen=True)
class NodeInfo:
    """What a node knows about itself: identity and its operator's settings.

    ``deployed`` is true under a real SuperNode (set by the ClientApp adapter from the process
    Flower runs it in, never from anything the server sends): such a node refuses simulated
    identities, and the curious mode unless its operator allows it.
    """

    node_id: int
    run_id: int
    partition_id: int
    num_partitions: int
    node_config: Mapping[str, Any] = field(default_factory=dict)  # the operator's settings
    require_secagg: bool = False  # the operator's word: nothing in the clear, whatever the run
    public_set_digest: str = ""  # hex SHA-256 the operator pins ("" = trust the run config)
    deployed: bool = False

    @classmethod
    def from_node_config(
        cls, node_id: int, run_id: int, node_config: Mapping[str, Any], *, deployed: bool = False
    ) -> NodeInfo:
        """Read ``partition-id``, ``num-partitions`` and the operator's optional settings."""
        try:
            partition_id = int(node_config[keys.NODE_PARTITION_ID])
            num_partitions = int(node_config[keys.NODE_NUM_PARTITIONS])
        except KeyError as missing:
            raise BadRequest(
                f"node config lacks {missing}; start the SuperNode with --node-config "
                "'partition-id=<i> num-partitions=<n>'"
            ) from None
        return cls(
            node_id=node_id,
            run_id=run_id,
            partition_id=partition_id,
            num_partitions=num_partitions,
            node_config=dict(node_config),
            require_secagg=_flag(node_config, keys.NODE_REQUIRE_SECAGG),
            public_set_digest=str(node_config.get(keys.NODE_PUBLIC_DIGEST, "")).lower(),
            deployed=deployed,
        )

    @classmethod
    def simulated(
        cls, node_id: int, run_id: int, partition_id: int, num_partitions: int, **settings: Any
    ) -> NodeInfo:
        """An in-process node; ``settings`` are its node config (``state-dir``...)."""
        return cls(node_id, run_id, partition_id, num_partitions, node_config=dict(settings))
