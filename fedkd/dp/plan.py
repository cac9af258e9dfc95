"""How much noise each party adds, for each placement, and what arrives in the sum.

The target is one noise multiplier ``z`` for the released sum (calibrated by
:func:`fedkd.dp.accounting.calibrate_noise_multiplier`): Gaussian noise of std ``z * clip``.

===========  ================================================  ==============================
placement    who adds what                                     realised on the sum
===========  ================================================  ==============================
central      the server: N(0, (z clip)^2) on the decoded sum   z (the server is trusted)
local        every client: N(0, (z clip)^2) on its own vector  z per client's own vector;
                                                               the sum carries sqrt(m) z
distributed  every client: Skellam of variance                 sqrt(m / t) z >= z, since
             (z Delta)^2 / t on its quantised levels           the unmask needs m >= t
===========  ================================================  ==============================

``Delta`` is the L2 sensitivity in quantisation levels (:func:`level_sensitivity`), ``t`` the
secure-aggregation threshold: a sum can only be unmasked with at least ``t`` survivors, so
calibrating each share for ``t`` contributors guarantees the central level whatever the
dropouts; ``m`` survivors then carry ``m / t`` times the variance (more noise than needed when
few drop out; that realised level, and the epsilon it gives, is what the history records).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedkd.dp.mechanisms import MAX_SKELLAM_VARIANCE, level_sensitivity

# Modulus headroom for the noise, in standard deviations of the summed noise. Each Skellam
# coordinate is a difference of two Poisson(lam) draws; Bernstein's inequality bounds
# P(|Poisson(lam) - lam| >= s) by 2 exp(-s^2 / (2 (lam + s / 3))). With the summed variance
# V = 2 lam >= 10^4 levels^2 (the headroom is computed for at least that), s = 7 sqrt(V) per
# Poisson part gives < 2 exp(-45) ~ 6e-20 per part, so the summed noise exceeds 14 sqrt(V) in
# a coordinate with probability < 1.2e-19 (2.4e-15 over a 20,000-entry vector).
TAIL_SIGMAS = 14.0
TAIL_FAILURE_PER_COORDINATE = 1.2e-19
_TAIL_MIN_VARIANCE = 1e4


@dataclass(frozen=True)
class NoisePlan:
    """The noise a run's placement calls for.

    Attributes
    ----------
    placement
        ``central``, ``local`` or ``distributed``.
    clip
        L2 bound of one client's contribution.
    noise_multiplier
        ``z`` of the released sum (calibrated, or given).
    sampling
        Fraction of the clients sampled per round (accounted as Poisson sampling).
    """

    placement: str
    clip: float
    noise_multiplier: float
    sampling: float

    @property
    def std(self) -> float:
        """Std of the Gaussian noise the central server or each local client adds."""
        return self.noise_multiplier * self.clip


def share_variance(plan: NoisePlan, *, scale: float, length: int, threshold: int) -> float:
    """Per-client Skellam variance (levels^2) so that any ``>= threshold`` shares reach ``z``.

    Parameters
    ----------
    plan
        The run's plan (``distributed``).
    scale
        Quantisation levels per unit of the input.
    length
        Entries of the contribution vector.
    threshold
        Fewest clients whose inputs an unmasked sum can hold.

    Raises
    ------
    ValueError
        When the variance exceeds what the integer sampler can draw (too many bits).
    """
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}")
    sensitivity = level_sensitivity(scale, plan.clip, length)
    variance = (plan.noise_multiplier * sensitivity) ** 2 / threshold
    if variance > MAX_SKELLAM_VARIANCE:
        raise ValueError(
            f"the distributed noise share needs variance {variance:.3g} levels^2, above the "
            f"sampler's {MAX_SKELLAM_VARIANCE:.3g}; use fewer quantisation bits"
        )
    return variance


@dataclass(frozen=True)
class RealisedNoise:
    """The noise a released sum actually carried."""

    noise_multiplier: float  # what the round is accounted with
    std: float  # std of the noise on the released sum, in the vector's units


def realised_noise(
    plan: NoisePlan,
    survivors: int,
    *,
    share_variance_levels: float = 0.0,
    scale: float = 1.0,
    length: int = 1,
) -> RealisedNoise:
    """The noise multiplier and std a round's release carried, given ``survivors`` shares.

    For ``local`` the accounted multiplier is each client's own (its vector is private by
    itself, whoever sees it); the sum's std is ``sqrt(m)`` times larger. For ``distributed``
    the ``m`` shares that arrived add up (Skellam is closed under sums).
    """
    if plan.placement == "central":
        return RealisedNoise(plan.noise_multiplier, plan.std)
    if plan.placement == "local":
        return RealisedNoise(plan.noise_multiplier, math.sqrt(survivors) * plan.std)
    if plan.placement == "distributed":
        total = survivors * share_variance_levels  # levels^2
        sensitivity = level_sensitivity(scale, plan.clip, length)
        return RealisedNoise(math.sqrt(total) / sensitivity, math.sqrt(total) / scale)
    raise ValueError(f"no noise for placement {plan.placement!r}")


def noise_headroom(total_variance: float) -> int:
    """Levels of modulus headroom the summed noise needs on either side (``TAIL_SIGMAS``)."""
    if total_variance <= 0:
        return 0
    return math.ceil(TAIL_SIGMAS * math.sqrt(max(total_variance, _TAIL_MIN_VARIANCE)))
