"""The per-node stores of one engine worker: state only for nodes that have some, in memory
while it is small, spilled to disk when it grows.

A worker serves a fixed share of a population that may run to a million nodes. Most of them
never take part, and most that do keep only a little between messages (their secure-
aggregation state; a FedMD client its model). :class:`SpillingStores` therefore holds a node's
envelopes only while it has any, keeps the most recently used nodes in memory up to a byte
budget, and writes the rest to one file per node in the worker's spill folder. A worker that
replaces a dead one, given the same folder, finds the spilled nodes there; what only its
predecessor's memory held is lost, as a device that lost its storage would lose it.
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

from fedkd.transport import Envelope

SPILL_TO = 0.75  # a spill brings memory down to this share of the budget (fewer, larger spills)


def _size(items: dict[str, Envelope]) -> int:
    return sum(envelope.nbytes() for envelope in items.values())


class SpillingStores:
    """Every node's :class:`~fedkd.fl.client.NodeStore` in one worker.

    Parameters
    ----------
    folder
        Where nodes are spilled (created if missing; one ``<node>.pkl`` per spilled node).
    budget
        Bytes of node state kept in memory before the least recently used nodes spill.
    """

    def __init__(self, folder: str | Path, budget: int) -> None:
        self.folder, self.budget = Path(folder), int(budget)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._memory: OrderedDict[int, dict[str, Envelope]] = OrderedDict()  # LRU first
        self._bytes: dict[int, int] = {}
        self.memory_bytes = 0  # sum of _bytes, kept as it changes
        self.spills = 0  # nodes written out so far

    def store(self, node: int) -> NodeView:
        """The store of ``node`` (creates nothing until something is put)."""
        return NodeView(self, node)

    def nodes_in_memory(self) -> int:
        return len(self._memory)

    def nodes_on_disk(self) -> int:
        return sum(1 for _ in self.folder.glob("*.pkl"))

    def _path(self, node: int) -> Path:
        return self.folder / f"{node}.pkl"

    def items(self, node: int) -> dict[str, Envelope] | None:
        """The node's envelopes (loaded back from disk if spilled), or ``None``: no state."""
        items = self._memory.get(node)
        if items is not None:
            self._memory.move_to_end(node)
            return items
        path = self._path(node)
        if not path.exists():
            return None
        with path.open("rb") as handle:  # our own file, written by _spill below
            items = pickle.load(handle)
        path.unlink()
        self.changed(node, items)
        return items

    def changed(self, node: int, items: dict[str, Envelope] | None) -> None:
        """Record the node's envelopes in memory (after a load, put or delete; forgotten once
        empty or ``None``)."""
        self.memory_bytes -= self._bytes.pop(node, 0)
        if items:
            self._memory[node] = items
            self._memory.move_to_end(node)
            self._bytes[node] = _size(items)
            self.memory_bytes += self._bytes[node]
        else:
            self._memory.pop(node, None)

    def settle(self) -> None:
        """Spill least recently used nodes while memory holds more than the budget."""
        if self.memory_bytes <= self.budget:
            return
        target = SPILL_TO * self.budget
        while self._memory and self.memory_bytes > target:
            node, items = next(iter(self._memory.items()))
            self.changed(node, None)
            self._spill(node, items)

    def _spill(self, node: int, items: dict[str, Envelope]) -> None:
        temporary = self._path(node).with_suffix(".tmp")
        with temporary.open("wb") as handle:
            pickle.dump(items, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, self._path(node))  # a crash mid-write leaves the old state
        self.spills += 1


class NodeView:
    """One node's :class:`~fedkd.fl.client.NodeStore` inside :class:`SpillingStores`
    (copies in and out, as a real store holds its own bytes)."""

    def __init__(self, stores: SpillingStores, node: int) -> None:
        self.stores, self.node = stores, node

    def get(self, key: str) -> Envelope | None:
        items = self.stores.items(self.node)
        value = None if items is None else items.get(key)
        return None if value is None else value.copy()

    def put(self, key: str, value: Envelope) -> None:
        items = self.stores.items(self.node) or {}
        items[key] = value.copy()
        self.stores.changed(self.node, items)

    def delete(self, key: str) -> None:
        items = self.stores.items(self.node)
        if items is not None and items.pop(key, None) is not None:
            self.stores.changed(self.node, items)
