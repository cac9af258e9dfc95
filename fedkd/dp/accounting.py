"""Privacy accounting through Google's ``dp-accounting`` library -- no accounting math here.

A round of client-level DP is one Gaussian release of the clients' summed, clipped vectors
with noise multiplier ``z`` (noise std / L2 sensitivity). When the server samples a fraction
``q`` of the clients, the round is the event ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``
(amplification by sampling); a run composes one event per round that released something.

* :func:`calibrate_noise_multiplier` picks ``z`` for a target ``(epsilon, delta)`` before the
  run, with ``dp_accounting.calibrate_dp_mechanism`` over the PLD accountant;
* :class:`PrivacyLedger` composes the rounds actually run, each with its *realised* noise
  multiplier (fewer noise shares arrive when clients drop out of a distributed-DP round), and
  reports epsilon from the PLD accountant with the RDP accountant as a cross-check.

Two views are reported. ``epsilon`` is the guarantee for whoever sees the released teacher and
student but not which clients were sampled (amplification applies; the usual DP-FedAvg claim).
``epsilon_known_sample`` composes the rounds without amplification: the guarantee against a
party that knows the sampled set (the server itself, in the local and distributed placements)
for a client sampled in every round. The two coincide when every client takes part each round.

The sampler of :func:`fedkd.fl.server_work.sample_clients` draws a fixed-size uniform subset;
accounting it as Poisson sampling with ``q = sampled / clients`` is the customary
approximation (as in DP-FedAvg), not an exact analysis of fixed-size sampling.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import dp_accounting
from dp_accounting import pld, rdp

# PLD discretisation of the privacy-loss values. The library's PLD is pessimistic (it rounds
# losses up), so a coarser grid only loosens the bound: 1e-3 moves epsilon by < 1e-3 at the
# parameters used here and makes calibration ~10x faster than the default 1e-4.
PLD_DISCRETIZATION = 1e-3
CALIBRATION_TOLERANCE = 1e-3  # absolute, on the noise multiplier
MIN_NOISE_MULTIPLIER = 0.05  # calibration's lower bracket (epsilon far above 100 below it)


def _pld_accountant() -> pld.PLDAccountant:
    return pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)


def round_event(noise_multiplier: float, sampling: float = 1.0) -> dp_accounting.DpEvent:
    """The DP event of one round: a Gaussian release, Poisson-subsampled when ``q < 1``.

    ``noise_multiplier = inf`` (no sensitivity left, nothing learnt) is a no-op event.
    """
    if not 0.0 < sampling <= 1.0:
        raise ValueError(f"sampling fraction must lie in (0, 1], got {sampling}")
    if not noise_multiplier > 0:
        return dp_accounting.NonPrivateDpEvent()
    if math.isinf(noise_multiplier):
        return dp_accounting.NoOpDpEvent()
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    return gaussian if sampling >= 1.0 else dp_accounting.PoissonSampledDpEvent(sampling, gaussian)


def run_event(noise_multiplier: float, sampling: float, rounds: int) -> dp_accounting.DpEvent:
    """``rounds`` identical rounds composed."""
    return dp_accounting.SelfComposedDpEvent(round_event(noise_multiplier, sampling), rounds)


def epsilon_of(event: dp_accounting.DpEvent, delta: float, *, accountant: str = "pld") -> float:
    """Epsilon of ``event`` at ``delta`` from the library's ``pld`` or ``rdp`` accountant."""
    if accountant not in ("pld", "rdp"):
        raise ValueError(f"accountant must be 'pld' or 'rdp', got {accountant!r}")
    fresh = _pld_accountant() if accountant == "pld" else rdp.RdpAccountant()
    fresh.compose(event)
    return float(fresh.get_epsilon(delta))


@functools.lru_cache(maxsize=64)
def calibrate_noise_multiplier(
    epsilon: float, delta: float, *, rounds: int, sampling: float = 1.0
) -> float:
    """The smallest noise multiplier whose ``rounds``-fold composition is ``(epsilon, delta)``-DP.

    ``dp_accounting.calibrate_dp_mechanism`` over the PLD accountant (cached per process: the
    server and every client of a run calibrate the same parameters).

    Raises
    ------
    ValueError
        When ``epsilon`` or ``delta`` is out of range.
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"target epsilon must be a finite number > 0, got {epsilon}")
    if not 0 < delta < 1:
        raise ValueError(f"target delta must lie in (0, 1), got {delta}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    return float(
        dp_accounting.calibrate_dp_mechanism(
            _pld_accountant,
            lambda z: run_event(z, sampling, rounds),
            epsilon,
            delta,
            bracket_interval=dp_accounting.LowerEndpointAndGuess(MIN_NOISE_MULTIPLIER, 1.0),
            tol=CALIBRATION_TOLERANCE,
        )
    )


@dataclass(frozen=True)
class EpsilonReport:
    """Epsilon spent so far at the ledger's delta (see the module docstring for the views)."""

    epsilon: float  # PLD, amplified by sampling
    epsilon_rdp: float  # RDP cross-check of the same composition (an upper bound, looser)
    epsilon_known_sample: float  # PLD, no amplification (the sampled set is known)


@dataclass
class PrivacyLedger:
    """The rounds a run released, with their realised noise, and the epsilon they add up to.

    Bookkeeping only: the events are the library's, and so is every epsilon.
    """

    delta: float
    rounds: list[tuple[float, float]] = field(default_factory=list)  # (noise multiplier, q)

    def record(self, noise_multiplier: float, sampling: float) -> EpsilonReport:
        """Add one released round and return the epsilon of all rounds so far."""
        self.rounds.append((float(noise_multiplier), float(sampling)))
        return self.report()

    def event(self, *, amplified: bool = True) -> dp_accounting.DpEvent:
        """The composition of the recorded rounds (without sampling when not ``amplified``)."""
        return dp_accounting.ComposedDpEvent(
            [round_event(z, q if amplified else 1.0) for z, q in self.rounds]
        )

    def report(self) -> EpsilonReport:
        """Epsilon of the recorded rounds (zero before any)."""
        if not self.rounds:
            return EpsilonReport(0.0, 0.0, 0.0)
        return EpsilonReport(
            epsilon=epsilon_of(self.event(), self.delta),
            epsilon_rdp=epsilon_of(self.event(), self.delta, accountant="rdp"),
            epsilon_known_sample=epsilon_of(self.event(amplified=False), self.delta),
        )
