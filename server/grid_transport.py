"""The library's :class:`~fedkd.transport.Transport` over Flower's ``Grid``.

One exchange is one push of every request and a poll for the replies (one SuperLink round trip,
which costs seconds in a deployment). Replies are sorted into answers and failures -- error
replies, content that does not decode, a push the SuperLink refused, silence past the timeout --
so no client can crash the ServerApp.

The poll is ours rather than ``grid.send_and_receive``: the deployment grid (``HttpGrid``) sleeps
3 s between its pulls, so every exchange there rounded up to a multiple of 3 s, five times a
secure round. Ours starts at :data:`FIRST_POLL` and backs off to :data:`LAST_POLL`, so a quick
stage ends within a few hundredths of a second of its last reply; a long training stage costs
the SuperLink ten small pulls a second.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from clients import codec
from fedkd.transport import Envelope, ExchangeResult, no_reply

FIRST_POLL = 0.02  # seconds before the first pull after the push
LAST_POLL = 0.1  # the longest wait between two pulls (Flower's in-memory grid waits 0.1 s too)


def content_bytes(content: RecordDict) -> int:
    """Payload bytes of a message's records (arrays, configs, metrics)."""
    return sum(
        record.count_bytes()
        for record in content.values()
        if isinstance(record, ArrayRecord | ConfigRecord | MetricRecord)
    )


class GridTransport:
    """Exchanges envelopes with SuperNodes through a Flower ``Grid``."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid

    def nodes(self) -> list[int]:
        return sorted(self.grid.get_node_ids())

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        start = time.perf_counter()
        result = ExchangeResult()
        messages, kinds = [], {}
        for node, envelope in requests.items():
            content = codec.encode(envelope)
            result.bytes_down += content_bytes(content)
            kinds[node] = envelope.kind
            messages.append(
                Message(
                    content=content,
                    dst_node_id=node,
                    message_type=codec.message_type(envelope.kind),
                    group_id=group,
                )
            )
        pending = set(kinds)
        asked: dict[str, int] = {}  # message id -> the node it went to
        for message, message_id in zip(messages, self.grid.push_messages(messages), strict=True):
            node = message.metadata.dst_node_id
            if message_id:
                asked[message_id] = node
            else:
                pending.discard(node)
                result.failures[node] = "the SuperLink did not accept the request"
        for reply in self._poll(asked, start + timeout):
            node = reply.metadata.src_node_id
            if node not in pending or asked.get(reply.metadata.reply_to_message_id) != node:
                continue  # a reply from a node we did not ask, to another request, or a second
            pending.discard(node)
            if reply.has_error():
                result.failures[node] = f"error reply ({reply.error.code}): {reply.error.reason}"
                continue
            try:
                result.replies[node] = codec.decode(kinds[node], reply.content)
            except (ValueError, TypeError, KeyError) as problem:
                result.failures[node] = f"undecodable reply: {problem}"
                continue
            result.bytes_up += content_bytes(reply.content)
        for node in pending:
            result.failures[node] = no_reply(timeout)
        result.seconds = time.perf_counter() - start
        return result

    def _poll(self, asked: Mapping[str, int], deadline: float) -> list[Message]:
        """Pull replies to ``asked`` until all came or ``deadline`` (``perf_counter``) passed."""
        waiting, replies, pause = set(asked), [], FIRST_POLL
        while waiting:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            time.sleep(min(pause, remaining))
            pulled = list(self.grid.pull_messages(waiting))
            replies.extend(pulled)
            waiting.difference_update(reply.metadata.reply_to_message_id for reply in pulled)
            pause = min(2 * pause, LAST_POLL)
        return replies


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
