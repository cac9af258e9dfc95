"""A malicious server's attacks on secure aggregation, as wrappers around the honest transport.

Each attack is a :class:`~fedkd.transport.Transport` that wraps the transport of the honest
round (:func:`fedkd.secagg.protocol.secure_sum` runs unchanged on top of it): it rewrites what
the server sends, records what comes back in an :class:`~fedkd.secagg.leakage.Observation`,
and :func:`~fedkd.secagg.leakage.assess` then says which sums the attacker can compute. The
attacks of issue 9 (and of the attack study, issue 10):

* :class:`NeighbourhoodLie` -- SecAgg+: one consistent unmask request whose dropped list is
  exactly the target's neighbours (its self-mask seed and all its pairwise keys come back);
* :class:`SplitViews` (with :func:`split_view_plan`) -- each client is shown its own survivor
  list, so the server collects seeds of a small group and keys of everyone else;
* :class:`KeySubstitution` -- the target is shown the attacker's keys in place of every peer's,
  and every peer the attacker's keys in place of the target's;
* :class:`ReplayUnderFreshRound` -- after the round, the same clients are asked again under a
  fresh round id without the target; the difference of the two sums is the target's input;
* :class:`ArbitraryServer` -- per-client survivor/dropped lists and key substitutions drawn
  freely (the property tests draw them with hypothesis).

:func:`run_attack` simulates one round under an attack and assesses the leak; the attack study
(issue 10) runs these against fedkd with a roster, fedkd without one, and Flower's SecAgg+.
The base wrapper is in :mod:`fedkd.secagg.attack_base`, key substitution in
:mod:`fedkd.secagg.key_substitution`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np

from fedkd.secagg import protocol
from fedkd.secagg.attack_base import Attack, unmask_lists, with_payload
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.driver import Simulation, simulate
from fedkd.secagg.errors import SecAggError
from fedkd.secagg.key_substitution import KeySubstitution
from fedkd.secagg.leakage import Leak, assess, recover_sum
from fedkd.secagg.server import ServerState
from fedkd.secagg.wire import (
    ConsistencyReply,
    ConsistencyRequest,
    UnmaskRequest,
)
from fedkd.transport import Envelope, ExchangeResult, Transport

__all__ = [
    "ArbitraryServer",
    "Attack",
    "AttackRun",
    "KeySubstitution",
    "NeighbourhoodLie",
    "ReplayUnderFreshRound",
    "SplitViews",
    "ViewAttack",
    "run_attack",
    "split_view_plan",
]


class ViewAttack(Attack):
    """Shows each client the survivor list :meth:`view` returns (dropped: everyone else).

    With a roster the same list goes into the client's consistency request, and its unmask
    request relays every signature collected on exactly that list (the best a server can do).
    """

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
        taggers = tuple(w for w in same if node in self.signed[w][2])
        forged = UnmaskRequest(
            survivors,
            tuple(sorted(self.dropped_view(node, survivors, named))),
            tuple(same),
            tuple(self.signed[w][1] for w in same),
            taggers,
            tuple(self.signed[w][2][node] for w in taggers),
        )
        return with_payload(message, forged.to_bytes())

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


class ReplayUnderFreshRound(Attack):
    """After the honest round, re-run it under ``round + offset`` without the target."""

    def __init__(self, inner: Transport, target: int, offset: int = 1000) -> None:
        super().__init__(inner)
        self.target, self.offset = target, offset
        self.replayed: protocol.SecureOutcome | None = None
        self._busy = False

    def fresh_config(self, config: SecAggConfig) -> SecAggConfig:
        """The honest config under a fresh round id, without the target."""
        rest = tuple(v for v in config.participants if v != self.target)
        k = min(config.neighbours, len(rest) - 1)
        threshold = min(config.threshold, k + 1)
        return dataclasses.replace(
            config,
            round=config.round + self.offset,
            participants=rest,
            neighbours=k,
            threshold=threshold,
        )

    def after(
        self, sent: Mapping[int, Envelope], result: ExchangeResult, *, timeout: float, group: str
    ) -> None:
        config = self.observed.config
        if self._busy or config is None or protocol.UNMASK not in {m.kind for m in sent.values()}:
            return
        self._busy = True
        try:
            state = ServerState(self.fresh_config(config))
            self.replayed = protocol.secure_sum(self.inner, state, timeout=timeout, group=group)
        finally:
            self._busy = False


@dataclasses.dataclass
class AttackRun:
    """One simulated round under an attack: the simulation, the attack, what leaked."""

    sim: Simulation
    attack: Attack
    leak: Leak

    def recovered(self, group: tuple[int, ...] | None = None) -> np.ndarray:
        """The exact quantized sum of ``group`` (default: the smallest releasable group)."""
        chosen = self.leak.smallest if group is None else group
        if chosen is None:
            raise ValueError("the attack released no sum")
        return recover_sum(self.attack.observed, chosen)


def run_attack(
    inputs: Sequence[np.ndarray], make: Callable[[Transport], Attack], **options: Any
) -> AttackRun:
    """Simulate one round (:func:`fedkd.secagg.driver.simulate`) under the attack ``make`` builds.

    ``options`` go to :func:`~fedkd.secagg.driver.simulate` (threshold, neighbours, ...).
    """
    made: list[Attack] = []

    def wrap(inner: Transport) -> Transport:
        made.append(make(inner))
        return made[0]

    sim = simulate(inputs, wrap=wrap, **options)
    return AttackRun(sim, made[0], assess(made[0].observed))


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
