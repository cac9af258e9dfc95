"""The base of every attack: a transport wrapper that records what the server saw."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import fedkd.secagg.protocol as protocol
from fedkd.attacks.secagg.leakage import Observation
from fedkd.secagg.errors import SecAggError
from fedkd.secagg.wire import (
    AdvertisedKeys,
    AdvertiseRequest,
    EncryptedShares,
    MaskedInputRequest,
    ShareKeysRequest,
    UnmaskReply,
    UnmaskRequest,
)
from fedkd.transport import Envelope, ExchangeResult, Transport


class Attack:
    """Base wrapper: records an :class:`Observation`; subclasses rewrite requests."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.observed = Observation()

    def nodes(self) -> Sequence[int]:
        """The wrapped transport's nodes."""
        return self.inner.nodes()

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        """Rewrite each request, deliver, record what went out and came back, then ``after``."""
        sent = {node: self.rewrite(node, message) for node, message in requests.items()}
        self.record_requests(sent)
        result = self.inner.exchange(sent, timeout=timeout, group=group)
        self.record_replies(sent, result)
        self.after(sent, result, timeout=timeout, group=group)
        return result

    # -- hooks ---------------------------------------------------------------------------
    def rewrite(self, node: int, message: Envelope) -> Envelope:
        """The request ``node`` actually receives (the honest one by default)."""
        return message

    def after(
        self, sent: Mapping[int, Envelope], result: ExchangeResult, *, timeout: float, group: str
    ) -> None:
        """Runs after each exchange (follow-up exchanges, rewriting replies)."""

    # -- recording -----------------------------------------------------------------------
    def record_requests(self, sent: Mapping[int, Envelope]) -> None:
        """Note the config, the keys each client was shown and the shares routed to it."""
        obs = self.observed
        for node, message in sent.items():
            try:
                riding = message.fields.get(protocol.RIDING)
                if isinstance(riding, bytes) and obs.config is None:  # stage 1 on a train message
                    obs.config = AdvertiseRequest.from_bytes(riding).config
                    continue
                payload = protocol.payload_of(message)
                if message.kind == protocol.ADVERTISE and obs.config is None:
                    obs.config = AdvertiseRequest.from_bytes(payload).config
                elif message.kind == protocol.SHARE_KEYS:
                    keys = ShareKeysRequest.from_bytes(payload).keys
                    obs.shown[node] = {k.node_id: k for k in keys if k.node_id != node}
                elif message.kind == protocol.MASKED_INPUT:
                    obs.routed[node] = MaskedInputRequest.from_bytes(payload).senders
            except (SecAggError, KeyError):
                continue

    def record_replies(self, sent: Mapping[int, Envelope], result: ExchangeResult) -> None:
        """Note every parseable reply: keys, encrypted shares, masked inputs, revealed shares."""
        obs = self.observed
        for node, reply in result.replies.items():
            try:
                if reply.kind == protocol.ADVERTISE or protocol.RIDING in sent[node].fields:
                    obs.advertised[node] = AdvertisedKeys.from_bytes(protocol.payload_of(reply))
                elif reply.kind == protocol.SHARE_KEYS:
                    obs.encrypted[node] = EncryptedShares.from_bytes(protocol.payload_of(reply))
                elif reply.kind == protocol.MASKED_INPUT:
                    if obs.config is not None:
                        masked = protocol.masked_reply(node, reply, obs.config)
                        obs.masked[node] = masked.masked
                        obs.accused[node] = frozenset(masked.accused)
                elif reply.kind == protocol.UNMASK:
                    obs.revealed[node] = UnmaskReply.from_bytes(protocol.payload_of(reply))
            except (SecAggError, KeyError, TypeError, ValueError):
                continue


def unmask_lists(message: Envelope) -> UnmaskRequest:
    """The unmask request an envelope carries."""
    return UnmaskRequest.from_bytes(protocol.payload_of(message))


def with_payload(message: Envelope, payload: bytes) -> Envelope:
    """``message`` with another stage payload."""
    return Envelope(message.kind, {**message.fields, protocol.PAYLOAD: payload})
