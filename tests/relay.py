"""Transport wrappers for tests: a server (or a network) between the round and its clients.

:class:`Relay` hands every exchange to the transport it wraps; a test's wrapper subclasses it
and overrides :meth:`Relay.exchange` to drop, rewrite, replay or record messages on the way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fedkd.transport import Envelope, ExchangeResult, Transport


class Relay:
    """Passes each exchange through to ``inner`` unchanged."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    def nodes(self) -> Sequence[int]:
        return self.inner.nodes()

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        return self.inner.exchange(requests, timeout=timeout, group=group)


class Eavesdropper(Relay):
    """Keeps every reply the server receives, in :attr:`seen`."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.seen: list[Envelope] = []

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        result = self.inner.exchange(requests, timeout=timeout, group=group)
        self.seen.extend(result.replies.values())
        return result
