"""Differential privacy in the federated round: the glue between a run's config and fedkd.dp.

Client side (:func:`client_release`): the contribution vector -- teacher part, class weights
and the statistics block, all of it -- is clipped to L2 norm ``dp-clip`` (the statistics first
multiplied by ``dp-stats-weight``, so they take a small part of the clip budget); the ``local``
placement then adds the full Gaussian noise. The ``distributed`` placement adds its integer
noise share later, in the secure-aggregation client, to the quantised levels before masking;
:func:`require_round_noise` is the check a client makes of the round's declared noise share
against the minimum its *own* run config demands (a server cannot talk it into less).

Server side (:func:`server_release`): the ``central`` placement adds the noise to the decoded
sum; every placement then records the realised noise of the release and the epsilon spent so
far (:class:`fedkd.dp.PrivacyLedger`, rebuilt from the history rows, so a resumed run goes on
counting), and divides the statistics back.

DP-SGD (:func:`private_local_training`): Opacus on the client's shard, its accountant history
kept by the caller (the node's store) across rounds.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fedkd.data import ArrayDataset
from fedkd.dp.accounting import PrivacyLedger, calibrate_noise_multiplier
from fedkd.dp.mechanisms import clip_l2, gaussian_noise, level_sensitivity, noise_rng
from fedkd.dp.plan import NoisePlan, noise_headroom, realised_noise, share_variance
from fedkd.dp.settings import warn_if_epsilon_large
from fedkd.fl.config import FedConfig
from fedkd.fl.contribution import STATS
from fedkd.fl.history import RoundRecord
from fedkd.fl.server_work import sample_size
from fedkd.models import FeatureModel
from fedkd.secagg import SecAggConfig
from fedkd.secagg.errors import RefusedRequest
from fedkd.secagg.quantize import modulus_bits_for

if TYPE_CHECKING:  # Opacus loads in seconds: only runs with DP-SGD import it
    from fedkd.dp.dpsgd import DPSGDReport

HEAD = "head"  # the output layer of the registry's DP-SGD models (cnn, cnn_small, mlp)
DP_CLIPPED = "dp_clipped_sum"  # the stats entry counting clients whose vector the clip cut
MOST_CLIPPED = 0.5  # warn when the clip cut more than this share of the summed vectors


class NoiseTooLow(RefusedRequest):
    """The round asks this client for less distributed noise than its own settings demand."""


def sampled_count(config: FedConfig, num_clients: int) -> int:
    """Clients a round samples from a federation of ``num_clients`` (``sample_clients``)."""
    return sample_size(num_clients, fraction=config.fraction, minimum=config.min_clients)


def sampling_fraction(config: FedConfig, num_clients: int) -> float:
    """Share of the federation sampled per round (what ``sample_clients`` draws)."""
    return sampled_count(config, num_clients) / num_clients


def noise_plan(config: FedConfig, num_clients: int) -> NoisePlan | None:
    """The run's client-level noise (``None`` with ``dp = off``), calibrated before the run.

    The noise multiplier is ``dp-noise-multiplier`` when set, else the one
    ``dp_accounting.calibrate_dp_mechanism`` finds for ``dp-epsilon``/``dp-delta`` over
    ``num-rounds`` rounds at this sampling fraction. The server and every client compute it
    from their own copy of the run config (the calibration is cached per process).
    """
    dp = config.dp
    if not dp.enabled:
        return None
    q = sampling_fraction(config, num_clients)
    z = dp.noise_multiplier or calibrate_noise_multiplier(
        dp.epsilon, dp.delta, rounds=config.num_rounds, sampling=q
    )
    return NoisePlan(dp.placement, dp.clip, z, q)


def _stats(vector: np.ndarray) -> slice:
    return slice(len(vector) - len(STATS), len(vector))


def clipped_flag(config: FedConfig) -> float:
    """Value of the "my vector was clipped" entry: a known share of the clip budget."""
    return min(config.dp.stats_weight, config.dp.clip / 2)


def client_release(
    config: FedConfig, vector: np.ndarray, num_clients: int, *, seed: int | None = None
) -> np.ndarray:
    """What a client sends under client-level DP: its vector clipped (and, ``local``, noised).

    ``seed`` must come from something the server cannot know: the node passes one keyed by its
    own secret and the vector (:meth:`fedkd.fl.ledger.ReleaseLedger.seed`), so a repeated
    release repeats its noise; ``None`` draws from OS entropy.
    """
    plan = noise_plan(config, num_clients)
    if plan is None:
        return np.asarray(vector, dtype=np.float64)
    weighted = np.asarray(vector, dtype=np.float64).copy()
    stats = _stats(weighted)
    weighted[stats] *= config.dp.stats_weight
    if DP_CLIPPED not in STATS:
        released = clip_l2(weighted, plan.clip).vector
    else:  # the flag takes a fixed part of the norm budget; the rest is clipped to what is left
        index, flag = stats.start + STATS.index(DP_CLIPPED), clipped_flag(config)
        weighted[index] = 0.0
        rest = clip_l2(weighted, math.sqrt(plan.clip**2 - flag**2))
        released = rest.vector
        released[index] = flag if rest.clipped else 0.0
    if plan.placement == "local":
        released += gaussian_noise(len(released), plan.std, noise_rng(seed))
    return released


def release_noise(
    config: FedConfig, secagg: SecAggConfig | None, num_clients: int
) -> tuple[float | None, float | None]:
    """The noise multiplier and sampling fraction a client accounts one release with.

    For ``distributed`` with ``dp-shares = threshold`` (the default), the worst case the client
    can be sure of: ``threshold`` shares of the variance the round declares (fewer cannot be
    unmasked). With ``dp-shares = sampled``, the shares of every sampled client: that mode
    trusts the server's dropout claims, and so does this count. For ``central``, the noise the
    server promises (the client cannot check it). ``(None, None)`` without DP.
    """
    plan = noise_plan(config, num_clients)
    if plan is None:
        return None, None
    if plan.placement != "distributed" or secagg is None:
        return plan.noise_multiplier, plan.sampling
    shares = secagg.threshold
    if config.dp.shares == "sampled":
        shares = min(secagg.num_clients, sampled_count(config, num_clients))
    worst = realised_noise(
        plan,
        shares,
        share_variance_levels=float(getattr(secagg, "noise_variance", 0.0)),
        scale=secagg.quantizer.scale,
        length=secagg.vector_length,
    )
    return worst.noise_multiplier, plan.sampling


def min_survivors(secagg: SecAggConfig) -> int:
    """Fewest clients whose inputs an unmasked sum of this round can hold: the threshold (each
    survivor's self mask needs ``threshold`` holders who sent their own masked inputs)."""
    return secagg.threshold


def round_share_variance(config: FedConfig, secagg: SecAggConfig, num_clients: int) -> float:
    """The Skellam variance (levels^2) each client adds in a distributed-DP round."""
    plan = noise_plan(config, num_clients)
    if plan is None or plan.placement != "distributed":
        return 0.0
    # dp-shares: the worst case an unmask allows (t shares), or every sampled client -- as
    # many as this party's own config samples, never more: a server that pads the participant
    # list (Sybils it then "drops") must not shrink the honest clients' shares.
    if config.dp.shares == "threshold":
        shares = min_survivors(secagg)
    else:
        shares = min(secagg.num_clients, sampled_count(config, num_clients))
    return share_variance(
        plan, scale=secagg.quantizer.scale, length=secagg.vector_length, threshold=shares
    )


def require_round_noise(config: FedConfig, secagg: SecAggConfig, num_clients: int) -> None:
    """Refuse a round whose declared noise share is below what this client's settings need.

    The minimum comes from the client's own run config (epsilon, delta, rounds, fraction, clip)
    and the round's public parameters that bound the worst case (threshold, scale, length).

    Raises
    ------
    NoiseTooLow
        When ``secagg.noise_variance`` is below that minimum.
    """
    needed = round_share_variance(config, secagg, num_clients)
    declared = float(getattr(secagg, "noise_variance", 0.0))
    if declared < needed * (1.0 - 1e-9):
        raise NoiseTooLow(
            f"the round declares a noise share of variance {declared:.6g} levels^2; this "
            f"client's dp settings need at least {needed:.6g} (threshold {secagg.threshold})"
        )


def server_release(
    config: FedConfig,
    total: np.ndarray,
    record: RoundRecord,
    previous: Sequence[RoundRecord],
    *,
    num_clients: int,
    secagg: SecAggConfig | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Central noise, accounting and the realised noise of one round's release.

    Fills ``record``'s ``dp_*`` fields (epsilon spent after this round, from the PLD accountant
    with RDP as cross-check) and returns the sum as the round reads it.
    """
    plan = noise_plan(config, num_clients)
    if plan is None:
        return total
    released = np.asarray(total, dtype=np.float64).copy()
    if plan.placement == "central":
        released += gaussian_noise(len(released), plan.std, noise_rng(seed))
    share = 0.0 if secagg is None else float(getattr(secagg, "noise_variance", 0.0))
    realised = realised_noise(
        plan,
        record.survivors,
        share_variance_levels=share,
        scale=1.0 if secagg is None else secagg.quantizer.scale,
        length=len(released),
    )
    sampling = record.sampled / num_clients
    ledger = PrivacyLedger(
        config.dp.delta,
        [
            (r.dp_noise_multiplier, r.dp_sampling)
            for r in previous
            if r.status == "ok" and math.isfinite(r.dp_noise_multiplier)
        ],
    )
    spent = ledger.record(realised.noise_multiplier, sampling)
    record.dp_noise_multiplier, record.dp_noise_std = realised.noise_multiplier, realised.std
    record.dp_sampling = sampling
    record.dp_epsilon, record.dp_epsilon_rdp = spent.epsilon, spent.epsilon_rdp
    record.dp_epsilon_known_sample = spent.epsilon_known_sample
    stats = _stats(released)
    if DP_CLIPPED in STATS:
        index = stats.start + STATS.index(DP_CLIPPED)
        cut = released[index] / clipped_flag(config) / max(record.survivors, 1)
        cut = min(max(cut, 0.0), 1.0)  # a noisy count: keep the estimate a fraction
        released[index] = 0.0  # read here; the round's own statistics do not use it
        record.dp_clipped_fraction = float(cut)
        if cut > MOST_CLIPPED:
            warnings.warn(
                f"round {record.round}: dp-clip = {config.dp.clip:g} cut about {cut:.0%} of the "
                "clients' contribution vectors (a noisy estimate); raise 'dp-clip'",
                stacklevel=2,
            )
    released[stats] /= config.dp.stats_weight  # the statistics back to their own scale
    warn_if_epsilon_large("dp epsilon spent", spent.epsilon)
    return released


def dpsgd_noise(config: FedConfig, num_samples: int) -> float:
    """DP-SGD noise multiplier of a client with ``num_samples`` records: ``client-dp-noise``, or
    the one that meets ``client-dp-epsilon`` over the whole run if the client is sampled in
    every round (warm-up epochs once, ``local-epochs`` each round)."""
    from fedkd.dp.dpsgd import sample_rate, steps_per_epoch

    dp, local = config.dp, config.local
    if dp.client_noise_multiplier > 0:
        return dp.client_noise_multiplier
    epochs = local.warmup_epochs + local.epochs * config.num_rounds
    # Each step is one Poisson-sampled Gaussian release: the same PLD calibration as the
    # client-level noise, over the steps instead of the rounds.
    return calibrate_noise_multiplier(
        dp.client_epsilon,
        dp.client_delta,
        rounds=epochs * steps_per_epoch(num_samples, local.batch_size),
        sampling=sample_rate(num_samples, local.batch_size),
    )


def dpsgd_plan(config: FedConfig, num_samples: int, epochs: int) -> tuple[float, float, int]:
    """The accountant entry (noise multiplier, sample rate, steps) of ``epochs`` of DP-SGD."""
    from fedkd.dp.dpsgd import sample_rate, steps_per_epoch

    batch = config.local.batch_size
    steps = epochs * steps_per_epoch(num_samples, batch)
    return dpsgd_noise(config, num_samples), sample_rate(num_samples, batch), steps


def budget_targets(config: FedConfig, num_clients: int, num_samples: int) -> dict[str, float]:
    """The epsilons a run asks for: its targets, or what its given noise gives over the run
    (client-level: ``num-rounds`` releases; DP-SGD: warm-up and ``num-rounds`` rounds)."""
    from fedkd.dp.accounting import epsilon_of, run_event
    from fedkd.dp.dpsgd import epsilon_of_history

    dp, targets = config.dp, {}
    plan = noise_plan(config, num_clients)
    if plan is not None:
        event = run_event(plan.noise_multiplier, plan.sampling, config.num_rounds)
        targets["client"] = dp.epsilon or epsilon_of(event, dp.delta)
    if dp.client_dp_sgd:
        epochs = config.local.warmup_epochs + config.local.epochs * config.num_rounds
        whole = [dpsgd_plan(config, num_samples, epochs)]
        targets["dpsgd"] = dp.client_epsilon or epsilon_of_history(whole, dp.client_delta)
    return targets


def private_local_training(
    config: FedConfig,
    model: FeatureModel,
    train: ArrayDataset,
    *,
    epochs: int,
    history: Sequence[tuple[float, float, int]],
    fresh: bool,
    seed: int | None = None,
) -> DPSGDReport:
    """One round of a client's DP-SGD training, continuing its accountant ``history``.

    ``client-dp-layers = head`` trains only the output layer of the pushed student; a ``fresh``
    one (no features learnt yet) trains all of its layers. ``seed`` seeds its noise and
    sampling (:func:`fedkd.dp.dpsgd.dp_train`).
    """
    from fedkd.dp.dpsgd import dp_train

    return dp_train(
        model,
        train.x,
        train.y,
        epochs=epochs,
        batch_size=config.local.batch_size,
        lr=config.local.lr,
        noise_multiplier=dpsgd_noise(config, len(train)),
        max_grad_norm=config.dp.client_max_grad_norm,
        delta=config.dp.client_delta,
        optimizer=config.local.optimizer,
        history=history,
        only=HEAD if config.dp.client_layers == "head" and not fresh else None,
        seed=seed,
    )


LOCAL_RANGE_SIGMAS = 4.0  # local DP: the fixed-point range covers the noise this far out
ROUNDING_WARNING = 0.01  # warn when rounding inflates the distributed sensitivity by more


def secagg_with_dp(config: FedConfig, plain: SecAggConfig, num_clients: int) -> SecAggConfig:
    """The round's aggregation config with what client-level DP needs of it.

    ``distributed``: every client's noise share (:func:`round_share_variance`) and a modulus
    wide enough for the summed noise's tail. ``local``: a fixed-point range that covers the
    clients' own Gaussian noise (clipping noisy values would bias the sum, though it would
    cost no privacy).
    """
    plan = noise_plan(config, num_clients)
    if plan is None or plan.placement == "central":
        return plain
    if plan.placement == "local":
        return dataclasses.replace(plain, clip=plain.clip + LOCAL_RANGE_SIGMAS * plan.std)
    variance = round_share_variance(config, plain, num_clients)
    scale = plain.quantizer.scale
    if level_sensitivity(scale, plan.clip, plain.vector_length) > (1 + ROUNDING_WARNING) * (
        scale * plan.clip
    ):
        warnings.warn(
            f"secagg-bits = {plain.bits}: rounding to levels inflates the distributed DP "
            f"sensitivity by more than {ROUNDING_WARNING:.0%} (more noise than central DP "
            "needs); raise 'secagg-bits'",
            stacklevel=2,
        )
    headroom = noise_headroom(plain.num_clients * variance)
    return dataclasses.replace(
        plain,
        noise_variance=variance,
        modulus_bits=modulus_bits_for(plain.num_clients, plain.bits, headroom),
    )
