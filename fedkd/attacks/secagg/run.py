"""Running one attacked round, and the replay attack that needs a second round.

:func:`run_attack` simulates one round (:func:`fedkd.secagg.driver.simulate`) under an attack
and assesses what leaked (:func:`fedkd.attacks.secagg.leakage.assess`);
:class:`ReplayUnderFreshRound` re-runs the round under a fresh round id without the target, so
that the difference of the two sums would be the target's input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import fedkd.secagg.protocol as protocol
from fedkd.attacks.secagg.base import Attack
from fedkd.attacks.secagg.leakage import Leak, assess, recover_sum
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.driver import Simulation, simulate
from fedkd.secagg.server import ServerState
from fedkd.transport import Envelope, ExchangeResult, Transport

__all__ = ["AttackRun", "ReplayUnderFreshRound", "run_attack"]


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
