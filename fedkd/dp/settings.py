"""The differential-privacy settings of a run (the ``dp*`` and ``client-dp*`` run-config keys).

:class:`DPConfig` is one sub-config of :class:`fedkd.fl.config.FedConfig` (its keys are declared
with the others in :data:`fedkd.fl.run_keys.SETTINGS`); :func:`check` raises on settings that
do not go together and warns on risky ones (noise off in a run labelled private, epsilon
above 10).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

PLACEMENTS = ("off", "central", "local", "distributed")
LARGE_EPSILON = 10.0  # above this a guarantee says little; warn
SHARES = ("threshold", "sampled")  # dp-shares: whom a distributed noise share is calibrated for
LAYERS = ("all", "head")  # client-dp-layers: what DP-SGD trains of a pushed model
# Architectures whose default normalisation is BatchNorm: per-sample gradients (DP-SGD) are
# undefined through batch statistics, and Opacus' fix (GroupNorm) would change the state dict
# the federation exchanges.
BATCHNORM_MODELS = frozenset({"resnet18", "mobilenet_v2"})


@dataclass(frozen=True)
class DPConfig:
    """Client-level DP of the teacher release, and record-level DP-SGD of local training.

    Attributes
    ----------
    placement
        ``dp``: ``off``, ``central`` (the server adds the noise to the decoded sum),
        ``local`` (each client adds the full noise to its own vector) or ``distributed``
        (each client adds integer Skellam noise, its share of the central level, before
        masking; needs secure aggregation).
    epsilon, delta
        ``dp-epsilon``, ``dp-delta``: the client-level target over the whole run; the noise
        multiplier is calibrated from them before the run (``0`` = not set).
    noise_multiplier
        ``dp-noise-multiplier``: the Gaussian noise std over ``clip``; ``0`` = calibrate it
        from ``epsilon`` and ``delta``.
    clip
        ``dp-clip``: L2 bound of one client's whole contribution vector (its sensitivity).
    stats_weight
        ``dp-stats-weight``: the statistics block enters the clipped vector multiplied by this
        (and is divided by it after the sum), so the clip budget goes mostly to the teacher.
    shares
        ``dp-shares`` (``distributed``): whom each client's noise share is calibrated for.
        ``threshold`` (default): the fewest survivors an unmasked sum can hold, so the target
        holds whatever drops out, and a round with no dropout carries ``m / t`` times the
        needed variance. ``sampled``: the round's sampled clients (as many as the client's own
        config samples, so a padded participant list cannot shrink a share); a full round
        carries exactly the central level, and each dropout lowers the noise (the history
        records the larger epsilon it gives; a server that forges dropouts lowers it down to
        ``t`` shares).
    client_dp_sgd
        ``client-dp-sgd``: train local models with DP-SGD (Opacus).
    client_noise_multiplier, client_epsilon, client_delta
        ``client-dp-noise``, ``client-dp-epsilon``, ``client-dp-delta``: DP-SGD's noise
        multiplier, or (noise 0) the per-client target over the whole run it is calibrated to.
    client_max_grad_norm
        ``client-dp-max-grad-norm``: per-example gradient clip of DP-SGD.
    client_layers
        ``client-dp-layers``: ``all`` (default) or ``head`` (FedDF only). With ``head``, a
        client trains only the output layer of the pushed student with DP-SGD and keeps its
        features: the student learnt them on the public set, which costs no privacy, and the
        noise of a step then falls on a few hundred parameters instead of tens of thousands
        (Tramer & Boneh, ICLR 2021: DP learning needs better features). A fresh model (the
        first round) trains all layers.
    """

    placement: str = "off"
    epsilon: float = 0.0
    delta: float = 1e-5
    noise_multiplier: float = 0.0
    clip: float = 0.1
    stats_weight: float = 0.1
    shares: str = "threshold"
    client_dp_sgd: bool = False
    client_noise_multiplier: float = 0.0
    client_epsilon: float = 0.0
    client_delta: float = 1e-5
    client_max_grad_norm: float = 1.0
    client_layers: str = "all"

    @property
    def enabled(self) -> bool:
        """Whether client-level noise is added to the teacher release."""
        return self.placement != "off"


def check(
    dp: DPConfig,
    *,
    method: str,
    secagg_enabled: bool,
    client_models: Iterable[str],
    mode: str,
) -> None:
    """Raise ``ValueError`` naming the key of a bad DP setting; warn on risky ones.

    Parameters
    ----------
    dp
        The settings.
    method, mode
        The run's method (client-level DP applies to ``fedkd``'s teacher release) and FedKD
        mode (``client-dp-layers = head`` needs clients that start from pushed weights).
    secagg_enabled
        Whether the run uses secure aggregation (``distributed`` needs it).
    client_models
        Architectures the clients train (DP-SGD refuses BatchNorm ones).
    """
    _check_head(dp, method=method, mode=mode)
    if dp.enabled:
        _check_client_level(dp, method=method, secagg_enabled=secagg_enabled)
    if dp.client_dp_sgd:
        _check_record_level(dp, method=method, client_models=client_models)
    _warn(dp)


def _check_head(dp: DPConfig, *, method: str, mode: str) -> None:
    """What ``client-dp-layers = head`` needs (each key's own range and names are checked
    from its declaration, :data:`fedkd.fl.run_keys.SETTINGS`)."""
    if dp.client_layers == "head" and not dp.client_dp_sgd:
        raise ValueError("run config 'client-dp-layers' = 'head' applies to client-dp-sgd = true")
    if dp.client_layers == "head" and (method, mode) != ("fedkd", "feddf"):
        # Only FedDF's server trains the features again (by distillation on the public set);
        # under FedAvg they would stay what round 1 left them, and FedMD keeps its own models.
        raise ValueError(
            "run config 'client-dp-layers' = 'head' trains the head of the pushed student: it "
            f"needs method fedkd with mode feddf (got method {method!r}, mode {mode!r})"
        )


def _check_client_level(dp: DPConfig, *, method: str, secagg_enabled: bool) -> None:
    """Client-level DP (``dp`` on): a noise scale or target, FedKD's release, secagg if needed."""
    if dp.epsilon == 0 and dp.noise_multiplier == 0:
        raise ValueError(
            f"run config 'dp' = {dp.placement!r} needs 'dp-epsilon' (a target to calibrate "
            "the noise to) or 'dp-noise-multiplier'"
        )
    if method != "fedkd":
        raise ValueError(
            f"run config 'dp' = {dp.placement!r} applies to method 'fedkd' (the teacher "
            f"release); method is {method!r}"
        )
    if dp.placement == "distributed" and not secagg_enabled:
        raise ValueError(
            "run config 'dp' = 'distributed' adds noise shares under secure aggregation; "
            "set 'secagg' = true (or use dp = central / local)"
        )


def _check_record_level(dp: DPConfig, *, method: str, client_models: Iterable[str]) -> None:
    """Record-level DP (DP-SGD): a noise scale or target, a plain loss, no BatchNorm."""
    if dp.client_noise_multiplier == 0 and dp.client_epsilon == 0:
        raise ValueError(
            "run config 'client-dp-sgd' = true needs 'client-dp-epsilon' or 'client-dp-noise'"
        )
    if method == "fedprox":  # Opacus trains the plain loss: the proximal term would vanish
        raise ValueError(
            "run config 'client-dp-sgd' = true trains without FedProx's proximal term; "
            "use method fedavg or fedkd"
        )
    bad = sorted(set(client_models) & BATCHNORM_MODELS)
    if bad:
        raise ValueError(
            f"run config 'client-dp-sgd' = true: {', '.join(bad)} use BatchNorm, which has "
            "no per-example gradients; use cnn, cnn_small or mlp"
        )


def _warn(dp: DPConfig) -> None:
    """Loud settings: a private-looking run without noise, or a guarantee that says little."""
    if not dp.enabled and (dp.epsilon > 0 or dp.noise_multiplier > 0):
        warnings.warn(
            "dp-epsilon / dp-noise-multiplier is set but dp = 'off': NO client-level noise is "
            "added; the teacher release is not differentially private",
            stacklevel=4,
        )
    if not dp.client_dp_sgd and (dp.client_epsilon > 0 or dp.client_noise_multiplier > 0):
        warnings.warn(
            "client-dp-epsilon / client-dp-noise is set but client-dp-sgd = false: local "
            "training is NOT differentially private",
            stacklevel=4,
        )
    for key, value, on in (
        ("dp-epsilon", dp.epsilon, dp.enabled and dp.noise_multiplier == 0),
        ("client-dp-epsilon", dp.client_epsilon, dp.client_dp_sgd),
    ):
        if on and value > LARGE_EPSILON:
            warnings.warn(
                f"{key} = {value:g} > {LARGE_EPSILON:g}: a guarantee this weak bounds little "
                "(e^eps likelihood ratios beyond 20,000)",
                stacklevel=4,
            )


def warn_if_epsilon_large(name: str, epsilon: float) -> None:
    """Warn when an epsilon spent (e.g. from a given noise multiplier) exceeds 10."""
    if math.isfinite(epsilon) and epsilon > LARGE_EPSILON:
        warnings.warn(
            f"{name} = {epsilon:.3g} > {LARGE_EPSILON:g}: a guarantee this weak bounds little",
            stacklevel=3,
        )
