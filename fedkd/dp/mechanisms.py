"""Client-level DP mechanisms: L2 clipping, Gaussian noise, and integer (Skellam) noise.

The unit protected is one client's whole contribution vector (the teacher part, the class
weights and the statistics block, :mod:`fedkd.fl.contribution`): each client clips it to L2 norm
``clip`` so that adding or removing one client moves the sum by at most ``clip``, and Gaussian
noise of standard deviation ``noise_multiplier * clip`` on the sum makes the release
``(epsilon, delta)``-DP (accounted in :mod:`fedkd.dp.accounting`).

Distributed placement (Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially Private
Federated Learning", NeurIPS 2021): every client adds *integer* noise to its quantised levels
before masking. Skellam(mu) = Poisson(mu) - Poisson(mu) has variance ``2 mu`` and the sum of
independent Skellams is again Skellam with the summed ``mu`` -- so the secure sum carries
exactly the total of the shares that arrived, and no party ever holds a less noisy value than
its own share. (The distributed discrete Gaussian is not closed under summation; Skellam is,
which makes the realised noise after dropouts exact rather than approximate.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# numpy's Poisson sampler refuses lam above ~9.2e18; stay well below (variance 2*lam).
MAX_SKELLAM_VARIANCE = 2.0 * 1e18


@dataclass(frozen=True)
class ClipResult:
    """A vector clipped to an L2 ball and what the clip did to it."""

    vector: np.ndarray  # (d,) float64, ||vector||_2 <= clip
    norm: float  # the L2 norm before clipping
    clipped: bool  # whether the norm exceeded the bound (the vector was scaled down)


def clip_l2(vector: np.ndarray, clip: float) -> ClipResult:
    """Scale ``vector`` down to L2 norm ``clip`` when it is longer (the direction is kept).

    Parameters
    ----------
    vector
        1-D finite floats.
    clip
        The L2 bound, ``> 0``: the sensitivity of a sum of clipped vectors to one client.
    """
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a finite number > 0, got {clip}")
    x = np.asarray(vector, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError("clip_l2 takes a 1-D vector of finite values")
    norm = float(np.linalg.norm(x))
    if norm <= clip:
        return ClipResult(x.copy(), norm, False)
    return ClipResult(x * (clip / norm), norm, True)


def gaussian_noise(size: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """``size`` i.i.d. N(0, std^2) draws (float64); ``std = 0`` gives zeros."""
    if not (math.isfinite(std) and std >= 0):
        raise ValueError(f"noise std must be a finite number >= 0, got {std}")
    if std == 0:
        return np.zeros(size, dtype=np.float64)
    return rng.normal(0.0, std, size=size)


def skellam_noise(size: int, variance: float, rng: np.random.Generator) -> np.ndarray:
    """``size`` i.i.d. symmetric Skellam draws of the given variance, as int64.

    ``Poisson(variance / 2) - Poisson(variance / 2)``: integer, mean 0, variance ``variance``.
    """
    if not (math.isfinite(variance) and 0 <= variance <= MAX_SKELLAM_VARIANCE):
        raise ValueError(
            f"Skellam variance must lie in [0, {MAX_SKELLAM_VARIANCE:.3g}], got {variance}; "
            "use fewer quantisation bits for the distributed placement"
        )
    if variance == 0:
        return np.zeros(size, dtype=np.int64)
    lam = variance / 2.0
    return rng.poisson(lam, size=size).astype(np.int64) - rng.poisson(lam, size=size).astype(
        np.int64
    )


def noise_rng(seed: int | None = None) -> np.random.Generator:
    """The generator noise is drawn from: OS entropy by default.

    Privacy rests on the noise being unpredictable to the server, so a run's seed (which the
    server knows) must never seed it; tests pass a seed to check the distribution.
    """
    return np.random.default_rng(seed)


def level_sensitivity(scale: float, clip: float, length: int) -> float:
    """L2 sensitivity of a client's quantised levels when its float vector has norm ``<= clip``.

    Rounding ``x * scale`` to integers moves each coordinate by at most 1/2, so the levels lie
    within ``sqrt(length) / 2`` of ``scale * x`` (triangle inequality): the bound is
    ``scale * clip + sqrt(length) / 2``. The public per-client offset of the quantiser is known
    to the server (it knows how many clients were summed) and does not count.
    """
    return scale * clip + math.sqrt(length) / 2.0


def add_noise_share(
    levels: np.ndarray, variance: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Quantised ``uint64`` levels plus a Skellam share of ``variance``, modulo ``2**64``.

    A negative draw wraps (two's complement), which is the same residue modulo any
    ``2**k``; the secure sum is read back with the quantiser's centred decode, exact while
    the summed noise stays within the round's headroom (:func:`fedkd.dp.plan.noise_headroom`).
    """
    values = np.asarray(levels, dtype=np.uint64)
    if variance == 0:
        return values
    noise = skellam_noise(len(values), variance, noise_rng() if rng is None else rng)
    return values + noise.view(np.uint64)
