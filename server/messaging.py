"""One message exchange with a set of nodes, and what it cost.

Every protocol phase is one call of :func:`exchange`: it builds one message per node, sends
them with a single ``grid.send_and_receive`` (one SuperLink round trip, which costs seconds
in a real deployment), and sorts the replies into answers and failures (error replies,
malformed content, time-outs), so a phase never crashes on a bad client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

log = logging.getLogger("fedkd.server")


def content_bytes(content: RecordDict) -> int:
    """Payload bytes of a message's records (arrays, configs, metrics)."""
    total = 0
    for record in content.values():
        if isinstance(record, (ArrayRecord, ConfigRecord, MetricRecord)):
            total += record.count_bytes()
    return total


@dataclass
class Exchange:
    """Outcome of one phase: replies by node, failures by node (with the reason)."""

    replies: dict[int, Message] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0
    seconds: float = 0.0


def exchange(
    grid: Grid,
    node_ids: Iterable[int],
    message_type: str,
    build: Callable[[int], RecordDict],
    *,
    timeout: float,
    group_id: str,
) -> Exchange:
    """Send ``build(node)`` to each node as ``message_type`` and collect the replies.

    Nodes that answer with an error, or not within ``timeout`` seconds, land in
    ``failures``; they are the round's dropouts for this phase.
    """
    start = time.perf_counter()
    result = Exchange()
    messages = []
    for node in node_ids:
        content = build(node)
        result.bytes_down += content_bytes(content)
        messages.append(
            Message(content=content, dst_node_id=node, message_type=message_type, group_id=group_id)
        )
    pending = {m.metadata.dst_node_id for m in messages}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        pending.discard(node)
        if reply.has_error():
            result.failures[node] = f"error reply: {reply.error.reason}"
            continue
        result.bytes_up += content_bytes(reply.content)
        result.replies[node] = reply
    for node in pending:
        result.failures[node] = f"no reply within {timeout:.0f} s"
    result.seconds = time.perf_counter() - start
    for node, reason in result.failures.items():
        log.warning("node %s dropped in %s: %s", node, message_type, reason)
    return result


def wait_for_nodes(grid: Grid, minimum: int, patience: float) -> list[int]:
    """Wait until at least ``minimum`` nodes are connected and the count settles.

    ``grid.get_node_ids()`` can return only part of the federation right after start, so
    wait for the count to stop growing (two polls a second apart) before sampling.
    """
    deadline = time.monotonic() + patience
    previous = -1
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum and len(nodes) == previous:
            return nodes
        if time.monotonic() > deadline:
            if len(nodes) >= minimum:
                return nodes
            raise RuntimeError(
                f"only {len(nodes)} node(s) connected after {patience:.0f} s; the run needs at "
                f"least {minimum} (run config 'min-clients'). Start more SuperNodes or raise "
                "'num-supernodes' in the federation config."
            )
        previous = len(nodes)
        time.sleep(1.0)
