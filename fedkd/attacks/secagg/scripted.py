"""A scripted malicious server: the deviations of issue 9 that honest clients must refuse.

:class:`MaliciousServer` says which deviation to inject, :class:`MaliciousTransport` wraps the
honest round's transport and injects it; pass ``wrap=scripted(MaliciousServer(...))`` to
:func:`fedkd.secagg.driver.run_secagg`, which re-raises the first refusal.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import fedkd.secagg.protocol as protocol
from fedkd.secagg.wire import (
    AdvertisedKeys,
    AdvertiseRequest,
    MaskedInputRequest,
    UnmaskRequest,
)
from fedkd.transport import Envelope, ExchangeResult, Transport

__all__ = ["MaliciousServer", "MaliciousTransport", "scripted"]


@dataclass
class MaliciousServer:
    """Server deviations the driver can inject; honest clients must refuse each of them.

    ``replay_round`` re-sends the masked-input request to the first survivor after its masked
    input arrived. ``tamper_share_for`` has no effect when that client dropped before stage 3.
    """

    overlap_survivor_dropped: bool = False  # claims a survivor dropped to get both shares
    too_few_survivors: bool = False
    inconsistent_config_for: int | None = None  # send this client a different config
    replay_round: bool = False  # re-run masked input for the same round
    tamper_share_for: int | None = None  # flip a ciphertext byte for this recipient


class MaliciousTransport:
    """Wraps an honest server's transport and deviates as :class:`MaliciousServer` says."""

    def __init__(self, inner: Transport, behaviour: MaliciousServer) -> None:
        self.inner, self.bad = inner, behaviour
        self.honest_digest: bytes | None = None

    def nodes(self) -> Sequence[int]:
        return self.inner.nodes()

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        requests = {node: self._rewrite(node, message) for node, message in requests.items()}
        result = self.inner.exchange(requests, timeout=timeout, group=group)
        kinds = {m.kind for m in requests.values()}
        if protocol.MASKED_INPUT in kinds and self.bad.replay_round and result.replies:
            first = min(result.replies)
            self.inner.exchange({first: requests[first]}, timeout=timeout, group=group)
        if protocol.ADVERTISE in kinds and self.bad.inconsistent_config_for is not None:
            # The lying server hides the target's different digest from its own check.
            self._restore_digest(result)
        return result

    def _rewrite(self, node: int, message: Envelope) -> Envelope:
        bad, kind = self.bad, message.kind
        if kind == protocol.ADVERTISE and bad.inconsistent_config_for == node:
            honest = AdvertiseRequest.from_bytes(protocol.payload_of(message))
            config = honest.config
            self.honest_digest = config.digest()
            crafted = dataclasses.replace(
                config,
                public_set_digest=hashlib.sha256(b"crafted" + config.public_set_digest).digest(),
            )
            return protocol.stage_envelope(
                kind, AdvertiseRequest(crafted, honest.pop_key).to_bytes(), 0
            )
        if kind == protocol.MASKED_INPUT and bad.tamper_share_for == node:
            request = MaskedInputRequest.from_bytes(protocol.payload_of(message))
            if request.ciphertexts:
                first = bytearray(request.ciphertexts[0])
                first[-1] ^= 0x01
                request = dataclasses.replace(
                    request, ciphertexts=(bytes(first), *request.ciphertexts[1:])
                )
            return protocol.stage_envelope(kind, request.to_bytes(), 0)
        if kind == protocol.UNMASK and (bad.overlap_survivor_dropped or bad.too_few_survivors):
            unmask = UnmaskRequest.from_bytes(protocol.payload_of(message))
            survivors, dropped = unmask.survivors, unmask.dropped
            if bad.overlap_survivor_dropped:
                dropped = (*dropped, survivors[-1])
            if bad.too_few_survivors:
                cut = max(len(survivors) // 2, 1)
                survivors, dropped = survivors[:cut], (*dropped, *survivors[cut:])
            return protocol.stage_envelope(kind, UnmaskRequest(survivors, dropped).to_bytes(), 0)
        return message

    def _restore_digest(self, result: ExchangeResult) -> None:
        target = self.bad.inconsistent_config_for
        if target in result.replies and self.honest_digest is not None:
            keys = AdvertisedKeys.from_bytes(protocol.payload_of(result.replies[target]))
            keys = dataclasses.replace(keys, config_digest=self.honest_digest)
            result.replies[target] = protocol.stage_envelope(protocol.ADVERTISE, keys.to_bytes(), 0)


def scripted(behaviour: MaliciousServer) -> Callable[[Transport], Transport]:
    """The ``wrap`` argument that injects ``behaviour`` around the honest transport."""
    return lambda inner: MaliciousTransport(inner, behaviour)
