"""The one seam between fedkd's protocols and whatever carries their messages.

A round is a sequence of *exchanges*: the server sends one kind of message to a set of nodes
and collects, within a timeout, a reply or a failure from each. :class:`Transport` is that
and nothing more. ``server/grid_transport.py`` implements it over Flower's ``Grid`` (Ray
simulation or a real SuperLink); :class:`InProcessTransport` implements it over plain Python
callables, for tests, benchmarks and attack studies. A malicious server is a wrapper around
a transport (it rewrites what goes out or comes back), never a copy of the honest round.

Messages are :class:`Envelope` objects: a kind, small named fields (what a Flower
``ConfigRecord`` holds) and named numpy arrays (what an ``ArrayRecord`` holds).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

log = logging.getLogger("fedkd.transport")

Scalar = int | float | str | bool | bytes


@dataclass
class Envelope:
    """One message: its kind, scalar fields and named arrays."""

    kind: str
    fields: dict[str, Scalar] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def nbytes(self) -> int:
        """Payload size: array bytes plus field bytes (strings and bytes by length)."""
        total = sum(int(a.nbytes) for a in self.arrays.values())
        for value in self.fields.values():
            total += len(value) if isinstance(value, (bytes, str)) else 8
        return total

    def copy(self) -> Envelope:
        """A deep copy: what a real wire delivers (no aliasing between sender and receiver)."""
        return Envelope(self.kind, dict(self.fields), {k: a.copy() for k, a in self.arrays.items()})


@dataclass(frozen=True)
class Refusal:
    """A node's deliberate "no": a malformed (400) or refused (403) request, with the reason."""

    code: int
    reason: str


BAD_REQUEST = 400
REFUSED = 403


@dataclass
class ExchangeResult:
    """Outcome of one exchange: replies by node, failures by node (with the reason)."""

    replies: dict[int, Envelope] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0
    seconds: float = 0.0
    # The clients' compute on the exchange's critical path: the longest any one worker spent
    # in client code (in-process: all of it, one client after another; 0 where the transport
    # cannot see into its clients, as over Flower). seconds - client_seconds is carriage.
    client_seconds: float = 0.0

    def drop(self, node: int, reason: str) -> None:
        """Turn a reply that turned out unusable into a failure."""
        self.replies.pop(node, None)
        self.failures[node] = reason


class Transport(Protocol):
    """Sends one kind of message to a set of nodes, returns replies and failures."""

    def nodes(self) -> Sequence[int]:
        """The node ids currently connected (a ``range`` for a population drawn on demand:
        nothing in a round may walk it whole)."""
        ...

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        """Deliver ``requests[node]`` to each node; collect replies within ``timeout`` s.

        A node that answers with a :class:`Refusal`, an error, or not in time lands in
        ``failures``; implementations never raise because of what a node did.
        """
        ...


NO_REPLY = "no reply within"  # how every transport words a node's silence past the timeout


def no_reply(timeout: float) -> str:
    """The failure reason of a node that did not answer within ``timeout`` seconds."""
    return f"{NO_REPLY} {timeout:g} s"


def broadcast(nodes: list[int] | tuple[int, ...], message: Envelope) -> dict[int, Envelope]:
    """The same message for each node."""
    return {node: message for node in nodes}


def log_failures(result: ExchangeResult, what: str) -> None:
    """One line per failed node, at debug level: the federated round logs each fault once,
    with its round, stage and partition (``fedkd.fl.journal.log_fault``)."""
    for node, reason in sorted(result.failures.items()):
        log.debug("node %s failed %s: %s", node, what, reason)


Handler = Callable[[Envelope], "Envelope | Refusal"]


class InProcessTransport:
    """Delivers envelopes to Python callables, one per node, in this process.

    A handler that raises counts as a crashed node, one that returns a :class:`Refusal` as a
    refusing node, and one that takes longer than the exchange's timeout as a node whose
    reply came too late (it is discarded, as the SuperLink would). Per-kind client seconds
    are kept in :attr:`client_seconds` for benchmarks.
    """

    def __init__(self, handlers: Mapping[int, Handler]) -> None:
        self.handlers = dict(handlers)
        self.client_seconds: dict[str, list[float]] = defaultdict(list)

    def nodes(self) -> list[int]:
        return sorted(self.handlers)

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        del group
        start = time.perf_counter()
        result = ExchangeResult()
        for node, request in requests.items():
            result.bytes_down += request.nbytes()
            handler = self.handlers.get(node)
            if handler is None:
                result.failures[node] = "unknown node"
                continue
            began = time.perf_counter()
            try:
                reply = handler(request.copy())
            except Exception as crash:  # a crashing node is a dropout, never our crash
                result.failures[node] = f"crashed: {type(crash).__name__}: {crash}"
                continue
            elapsed = time.perf_counter() - began
            self.client_seconds[request.kind].append(elapsed)
            result.client_seconds += elapsed
            if isinstance(reply, Refusal):
                result.failures[node] = f"error reply ({reply.code}): {reply.reason}"
            elif elapsed > timeout:
                result.failures[node] = no_reply(timeout)
            else:
                result.bytes_up += reply.nbytes()
                result.replies[node] = reply.copy()
        result.seconds = time.perf_counter() - start
        return result
