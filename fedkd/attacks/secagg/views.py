"""Survivor-list attacks: a server shows clients the lists it likes, certified as it can.

* :class:`ViewAttack` -- each client is shown the list :meth:`~ViewAttack.view` returns, in the
  consistency and unmask stages, with every signature collected on exactly that list;
* :class:`NeighbourhoodLie` -- SecAgg+: one consistent list whose dropped clients are exactly
  the target's neighbours (its self-mask seed and all its pairwise keys would come back);
* :class:`SplitViews` (with :func:`split_view_plan`) -- each client is shown its own list, so
  the server collects seeds of a small group and keys of everyone else;
* :class:`ReflectedCertificates` (with :func:`sparse_isolation_plan` on a SecAgg+ graph) --
  split views whose certificates are completed with each client's own signature and tags
  (issue 25, item 1), optionally with the shares reaching the target chosen too;
* :class:`ArbitraryServer` -- per-client survivor/dropped lists and key substitutions drawn
  freely (the property tests draw them with hypothesis).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import fedkd.secagg.protocol as protocol
from fedkd.attacks.secagg.base import Attack, unmask_lists, with_payload
from fedkd.attacks.secagg.key_substitution import KeySubstitution
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import SecAggError
from fedkd.secagg.graph import ring_key
from fedkd.secagg.wire import (
    ConsistencyReply,
    ConsistencyRequest,
    MaskedInputRequest,
    UnmaskRequest,
)
from fedkd.transport import Envelope, ExchangeResult, Transport

__all__ = [
    "ArbitraryServer",
    "NeighbourhoodLie",
    "ReflectedCertificates",
    "SplitViews",
    "ViewAttack",
    "sparse_isolation_plan",
    "split_view_plan",
]


class ViewAttack(Attack):
    """Shows each client the survivor list :meth:`view` returns (dropped: everyone else).

    With a roster the same list goes into the client's consistency request, and its unmask
    request relays every signature collected on exactly that list (the best a server can do).
    """

    drive_unmask = False  # run the unmask stage itself (see :meth:`after`)

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        # node -> (the list it signed, its signature, its tags by recipient)
        self.signed: dict[int, tuple[tuple[int, ...], bytes, dict[int, bytes]]] = {}

    def view(self, node: int, survivors: tuple[int, ...]) -> Collection[int]:
        """The survivors ``node`` is told about (the honest list by default)."""
        return survivors

    def _survivors(self, node: int, honest: tuple[int, ...], named: set[int]) -> tuple[int, ...]:
        return tuple(sorted(set(self.view(node, honest)) & named))

    def dropped_view(self, node: int, survivors: tuple[int, ...], named: set[int]) -> set[int]:
        """The dropped list ``node`` is told about (everyone named but not surviving)."""
        return named - set(survivors)

    def rewrite(self, node: int, message: Envelope) -> Envelope:
        if message.kind == protocol.CONSISTENCY:
            honest = ConsistencyRequest.from_bytes(protocol.payload_of(message)).survivors
            shown = ConsistencyRequest(self._survivors(node, honest, set(honest)))
            return with_payload(message, shown.to_bytes())
        if message.kind != protocol.UNMASK:
            return message
        request = unmask_lists(message)
        named = set(request.survivors) | set(request.dropped)
        survivors = self._survivors(node, request.survivors, named)
        same = sorted(w for w, (lst, _, _) in self.signed.items() if lst == survivors)
        signatures = {w: self.signed[w][1] for w in same}
        tags = {w: self.signed[w][2][node] for w in same if node in self.signed[w][2]}
        self.certify(node, survivors, signatures, tags)
        forged = UnmaskRequest(
            survivors,
            tuple(sorted(self.dropped_view(node, survivors, named))),
            tuple(sorted(signatures)),
            tuple(signatures[w] for w in sorted(signatures)),
            tuple(sorted(tags)),
            tuple(tags[w] for w in sorted(tags)),
        )
        return with_payload(message, forged.to_bytes())

    def certify(
        self,
        node: int,
        survivors: tuple[int, ...],
        signatures: dict[int, bytes],
        tags: dict[int, bytes],
    ) -> None:
        """Hook: change the certificate ``node`` receives (by signer) before it is sent."""

    def after(
        self, sent: Mapping[int, Envelope], result: ExchangeResult, *, timeout: float, group: str
    ) -> None:
        """With ``drive_unmask``, send the unmask requests right after the consistency stage.

        A server whose own round code checks the signatures (the federated round's, holding
        the roster) would stop there; the attacker does not need it to go on.
        """
        if not self.drive_unmask or protocol.CONSISTENCY not in {m.kind for m in sent.values()}:
            return
        honest = tuple(sorted(self.observed.masked))
        dropped = tuple(sorted(set(self.observed.encrypted) - set(honest)))
        stage = Envelope(
            protocol.UNMASK, {protocol.PAYLOAD: UnmaskRequest(honest, dropped).to_bytes()}
        )
        requests = {node: self.rewrite(node, stage) for node in result.replies}
        self.record_replies(requests, self.inner.exchange(requests, timeout=timeout, group=group))

    def record_replies(self, sent: Mapping[int, Envelope], result: ExchangeResult) -> None:
        super().record_replies(sent, result)
        for node, reply in result.replies.items():
            if reply.kind != protocol.CONSISTENCY or node not in sent:
                continue
            try:
                shown = ConsistencyRequest.from_bytes(protocol.payload_of(sent[node]))
                signed = ConsistencyReply.from_bytes(protocol.payload_of(reply))
            except (SecAggError, KeyError):
                continue
            tags = dict(zip(signed.recipients, signed.tags, strict=True))
            self.signed[node] = (tuple(sorted(shown.survivors)), signed.signature, tags)


class NeighbourhoodLie(ViewAttack):
    """Everyone is told the target's neighbours dropped (one consistent list)."""

    def __init__(self, inner: Transport, target: int) -> None:
        super().__init__(inner)
        self.target = target

    def view(self, node: int, survivors: tuple[int, ...]) -> Collection[int]:
        config = self.observed.config
        assert config is not None
        return set(survivors) - set(config.neighbours_of(self.target))


class SplitViews(ViewAttack):
    """Each client is told its own survivor list, ``views[node]``."""

    def __init__(self, inner: Transport, views: Mapping[int, Collection[int]]) -> None:
        super().__init__(inner)
        self.views = {node: frozenset(view) for node, view in views.items()}

    def view(self, node: int, survivors: tuple[int, ...]) -> Collection[int]:
        return self.views.get(node, survivors)


class ReflectedCertificates(SplitViews):
    """Split views whose certificates are completed with each client's own material.

    Every member of the list a client signed that did not sign that same list is "certified"
    with what the client itself sent: its own signature relabelled as the member's, and its own
    consistency tag addressed to the member, returned as the member's tag addressed to it. A tag
    keyed by a key both directions share, over a message that names neither sender nor
    recipient, verifies as the peer's (issue 25, item 1).

    ``routes[recipient]`` (optional) restricts whose encrypted shares reach ``recipient`` in the
    masked-input stage (a sparse isolation, see :func:`sparse_isolation_plan`); ``plan`` builds
    the views and routes from the round's configuration once the attacker has seen it.
    """

    def __init__(
        self,
        inner: Transport,
        views: Mapping[int, Collection[int]] | None = None,
        routes: Mapping[int, Collection[int]] | None = None,
        plan: Callable[[SecAggConfig], tuple[dict[int, set[int]], dict[int, set[int]]]]
        | None = None,
    ) -> None:
        super().__init__(inner, views or {})
        self.routes = {v: frozenset(s) for v, s in (routes or {}).items()}
        self.plan = plan

    def rewrite(self, node: int, message: Envelope) -> Envelope:
        config = self.observed.config
        if self.plan is not None and config is not None:
            views, routes = self.plan(config)
            self.views = {v: frozenset(s) for v, s in views.items()}
            self.routes = {v: frozenset(s) for v, s in routes.items()}
            self.plan = None
        if message.kind == protocol.MASKED_INPUT and node in self.routes:
            request = MaskedInputRequest.from_bytes(protocol.payload_of(message))
            kept = [i for i, v in enumerate(request.senders) if v in self.routes[node]]

            def keep(column: tuple[Any, ...]) -> tuple[Any, ...]:
                return tuple(column[i] for i in kept) if column else ()

            routed = MaskedInputRequest(
                *(
                    keep(c)
                    for c in (
                        request.senders,
                        request.ciphertexts,
                        request.commitments,
                        request.signatures,
                        request.paths,
                    )
                )
            )
            return with_payload(message, routed.to_bytes())
        return super().rewrite(node, message)

    def dropped_view(self, node: int, survivors: tuple[int, ...], named: set[int]) -> set[int]:
        """Everyone else named, except neighbours whose shares were kept from ``node``."""
        dropped = named - set(survivors)
        config = self.observed.config
        if node in self.routes and config is not None:
            dropped -= set(config.neighbours_of(node)) - self.routes[node]
        return dropped

    def certify(
        self,
        node: int,
        survivors: tuple[int, ...],
        signatures: dict[int, bytes],
        tags: dict[int, bytes],
    ) -> None:
        own = self.signed.get(node)
        if own is None or own[0] != survivors:
            return
        _, signature, own_tags = own
        for member in survivors:
            if member != node and member not in signatures:
                signatures[member] = signature
            if member != node and member not in tags and member in own_tags:
                tags[member] = own_tags[member]


def sparse_isolation_plan(
    config: SecAggConfig, target: int, quorum: int | None = None
) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """Views and routes that isolate ``target``'s input on a SecAgg+ graph (even ``k``).

    ``target`` gets the shares of only ``t - 1`` of its neighbours (``R``, the farthest on the
    ring) and its own shares reach only the others (``A``); ``target`` is shown a list without
    ``A`` (so ``R`` survive, and it reveals its self-mask share), every holder of an ``R``
    member's key a list without ``R`` (so they reveal ``R``'s mask keys, and ``A`` reveals
    ``target``'s self-mask shares). The remaining clients are split between the two lists so
    that each list gathers ``quorum`` signers (reflected certificates supply the rest).
    """
    neighbours = list(config.neighbours_of(target))
    ring = sorted(config.participants, key=lambda v: ring_key(config.graph_seed, v))
    position = {v: i for i, v in enumerate(ring)}
    n = len(ring)

    def distance(v: int) -> int:
        gap = abs(position[v] - position[target])
        return min(gap, n - gap)

    far = set(sorted(neighbours, key=distance, reverse=True)[: config.threshold - 1])
    near = set(neighbours) - far
    everyone = set(config.participants)
    core = {w for y in far for w in config.neighbours_of(y)} | near
    core -= {target} | far
    others = sorted(everyone - core - far - {target}, key=distance)
    # default: the global quorum of b3fdd78's certificates, a strict majority of everyone
    needed = max(config.threshold, config.num_clients // 2 + 1) if quorum is None else quorum
    to_target = others[: max(needed - 1 - len(far), 0)]
    without_near, without_far = everyone - near, everyone - far
    views: dict[int, set[int]] = {target: without_near}
    views.update({v: without_near for v in to_target})
    views.update({v: without_far for v in everyone - set(views)})
    routes = {target: far} | {y: everyone - {target} for y in far}
    return views, routes


def split_view_plan(n: int, threshold: int, group: Collection[int]) -> dict[int, set[int]] | None:
    """Views that release the sum of ``group`` (fewer than ``threshold`` clients) in full SecAgg.

    The clients outside ``group`` are cut into blocks of ``threshold - len(group)``; view ``i``
    is ``group`` plus block ``i``, shown to block ``i`` and to some members of ``group``. Every
    view has ``threshold`` survivors, so no client sees too few; each outsider is dropped in
    enough views that ``threshold`` clients reveal its key. ``None`` when no plan exists.
    """
    inside = sorted(set(group))
    outside = [v for v in range(n) if v not in set(inside)]
    pad = threshold - len(inside)
    if not inside or pad <= 0 or pad > len(outside):
        return None
    blocks = [outside[i : i + pad] for i in range(0, len(outside), pad)]
    if len(blocks[-1]) < pad:
        blocks[-1] = outside[-pad:]
    views = [set(inside) | set(block) for block in blocks]
    assignment = {v: i for i, block in enumerate(blocks) for v in block}
    load = [sum(1 for v in assignment.values() if v == i) for i in range(len(blocks))]
    for member in inside:
        i = min(range(len(blocks)), key=lambda j: load[j])
        assignment[member], load[i] = i, load[i] + 1
    if max(load) > n - threshold:
        return None
    return {v: views[i] for v, i in assignment.items()}


class ArbitraryServer(ViewAttack, KeySubstitution):
    """Any survivor/dropped lists per client and any key substitutions, as drawn by a caller.

    ``survivors[node]`` and ``dropped[node]`` are the lists ``node`` is shown in the
    consistency and unmask stages (missing: the honest ones); ``pairs`` as in
    :class:`KeySubstitution`.
    """

    def __init__(
        self,
        inner: Transport,
        survivors: Mapping[int, Collection[int]],
        dropped: Mapping[int, Collection[int]],
        pairs: Collection[tuple[int, int]] = (),
    ) -> None:
        ViewAttack.__init__(self, inner)
        KeySubstitution.__init__(self, inner, pairs=pairs)
        self.shown_survivors = {v: frozenset(s) for v, s in survivors.items()}
        self.shown_dropped = {v: frozenset(s) for v, s in dropped.items()}

    def view(self, node: int, survivors: tuple[int, ...]) -> Collection[int]:
        return self.shown_survivors.get(node, survivors)

    def dropped_view(self, node: int, survivors: tuple[int, ...], named: set[int]) -> set[int]:
        default = named - set(survivors)
        return set(self.shown_dropped.get(node, default))

    def rewrite(self, node: int, message: Envelope) -> Envelope:
        if message.kind in (protocol.CONSISTENCY, protocol.UNMASK):
            return ViewAttack.rewrite(self, node, message)
        return KeySubstitution.rewrite(self, node, message)
