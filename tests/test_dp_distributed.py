"""Distributed DP under secure aggregation: the secure sum is the plaintext sum plus integer
noise of the promised total variance; dropouts lower it as reported; a server that asks a
client for less noise than the client's own settings demand is refused."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from fedkd.dp.mechanisms import level_sensitivity
from fedkd.dp.plan import NoisePlan, realised_noise
from fedkd.fl.config import parse_run_config
from fedkd.fl.privacy import NoiseTooLow, require_round_noise, round_share_variance
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.driver import Stage, run_secagg
from fedkd.secagg.errors import ConfigError
from fedkd.secagg.quantize import Quantizer

N, D, BITS, CLIP = 5, 40_000, 16, 1.0
TOLERANCE = 0.03  # relative std of a variance over 40,000 coordinates: 0.7%


def _noise_levels(variance: float, dropped: set[int]) -> tuple[np.ndarray, object]:
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-0.05, 0.05, D) for _ in range(N)]
    result = run_secagg(
        inputs,
        clip=CLIP,
        bits=BITS,
        noise_variance=variance,
        dropouts={Stage.MASKED_INPUT: dropped},
        seed=1,
    )
    quantizer = Quantizer(CLIP, BITS)
    survivors = [v for v in range(N) if v not in dropped]
    plain = sum(quantizer.encode(inputs[v], warn=False).values.astype(np.int64) for v in survivors)
    decoded = np.rint(result.total * quantizer.scale + len(survivors) * CLIP * quantizer.scale)
    return decoded - plain, result


@pytest.mark.parametrize("dropped", [set(), {3}])
def test_secure_sum_is_plaintext_plus_integer_noise_of_the_summed_variance(
    dropped: set[int],
) -> None:
    variance = 2.5e5  # levels^2 per client
    noise, result = _noise_levels(variance, dropped)
    survivors = N - len(dropped)
    assert len(result.survivors) == survivors  # type: ignore[attr-defined]
    assert np.all(noise == np.rint(noise))  # integers: the noise joined the levels exactly
    assert abs(float(noise.mean())) < 5 * math.sqrt(survivors * variance / D)
    assert abs(float(noise.var()) / (survivors * variance) - 1) < TOLERANCE
    wrong = (survivors + 1) * variance  # one share more (or less) is outside the tolerance
    assert abs(float(noise.var()) / wrong - 1) > TOLERANCE


def test_without_noise_the_secure_sum_is_exact() -> None:
    noise, _ = _noise_levels(0.0, set())
    assert np.all(noise == 0)


def test_dropouts_lower_the_realised_noise_as_reported() -> None:
    plan = NoisePlan("distributed", clip=0.1, noise_multiplier=1.5, sampling=1.0)
    scale, length, threshold = Quantizer(CLIP, BITS).scale, D, 3
    share = (1.5 * level_sensitivity(scale, 0.1, length)) ** 2 / threshold
    full = realised_noise(plan, N, share_variance_levels=share, scale=scale, length=length)
    fewer = realised_noise(plan, N - 2, share_variance_levels=share, scale=scale, length=length)
    assert fewer.noise_multiplier < full.noise_multiplier
    assert math.isclose(fewer.noise_multiplier, plan.noise_multiplier)  # threshold reached
    assert math.isclose(fewer.std**2 * scale**2, (N - 2) * share)


def test_the_modulus_must_leave_room_for_the_noise_tail() -> None:
    with pytest.raises(ConfigError, match="headroom"):
        # the packed width without headroom cannot hold the noisy sum: refused up front
        SecAggConfig(
            run_id=0,
            round=1,
            participants=tuple(range(N)),
            threshold=3,
            neighbours=N - 1,
            clip=CLIP,
            vector_length=D,
            bits=BITS,
            modulus_bits=BITS + 3,
            noise_variance=2.5e7,
        )


def _round_config(variance: float) -> SecAggConfig:
    return SecAggConfig(
        run_id=0,
        round=1,
        participants=tuple(range(20)),
        threshold=14,
        neighbours=19,
        clip=1.0,
        vector_length=1000,
        bits=16,
        modulus_bits=60,
        noise_variance=variance,
    )


def test_a_client_refuses_a_round_that_asks_for_less_noise_than_it_needs() -> None:
    config = parse_run_config({"dp": "distributed", "dp-noise-multiplier": 1.2, "dp-clip": 0.1})
    honest = _round_config(0.0)
    needed = round_share_variance(config, honest, num_clients=20)
    assert needed > 0
    require_round_noise(config, _round_config(needed), 20)
    require_round_noise(config, _round_config(2 * needed), 20)  # more noise is fine
    for lie in (0.0, 0.5 * needed):
        with pytest.raises(NoiseTooLow):
            require_round_noise(config, _round_config(lie), 20)
    # A lower threshold (the server claiming the sum may hold fewer clients) raises the need.
    low = dataclasses.replace(_round_config(needed), threshold=11)
    with pytest.raises(NoiseTooLow):
        require_round_noise(config, low, 20)


def test_shares_for_the_sampled_clients_carry_exactly_the_central_level() -> None:
    base = {"dp": "distributed", "dp-noise-multiplier": 1.2, "dp-clip": 0.1}
    secagg = _round_config(0.0)  # 20 sampled, threshold 14
    safe = round_share_variance(parse_run_config(base), secagg, num_clients=20)
    sampled = parse_run_config({**base, "dp-shares": "sampled"})
    share = round_share_variance(sampled, secagg, num_clients=20)
    assert math.isclose(share * 20, safe * 14)  # the same total at 20 shares as t's at 14
    plan = NoisePlan("distributed", clip=0.1, noise_multiplier=1.2, sampling=1.0)
    scale, length = secagg.quantizer.scale, secagg.vector_length
    full = realised_noise(plan, 20, share_variance_levels=share, scale=scale, length=length)
    assert math.isclose(full.noise_multiplier, 1.2)  # no dropout: exactly central DP's z
    late = realised_noise(plan, 17, share_variance_levels=share, scale=scale, length=length)
    assert math.isclose(late.noise_multiplier, 1.2 * math.sqrt(17 / 20))  # below the target
    # The client checks the declared share against the same rule: less is refused.
    require_round_noise(sampled, _round_config(share), 20)
    with pytest.raises(NoiseTooLow):
        require_round_noise(sampled, _round_config(0.9 * share), 20)
    with pytest.raises(ValueError, match="dp-shares"):
        parse_run_config({**base, "dp-shares": "everyone"})


def test_padding_the_participant_list_cannot_shrink_sampled_shares() -> None:
    # Under dp-shares=sampled each share is the central variance over the sampled count. A
    # server that lists 40 participants in a 20-client federation (Sybils it then "drops")
    # would halve every honest share; the client calibrates for the count its own config
    # samples, so the padded round's share is refused.
    sampled = parse_run_config(
        {"dp": "distributed", "dp-noise-multiplier": 1.2, "dp-clip": 0.1, "dp-shares": "sampled"}
    )
    honest = round_share_variance(sampled, _round_config(0.0), num_clients=20)
    padded = dataclasses.replace(
        _round_config(0.0), participants=tuple(range(40)), threshold=27, neighbours=39
    )
    halved = dataclasses.replace(padded, noise_variance=honest / 2)  # the share for 40
    with pytest.raises(NoiseTooLow):
        require_round_noise(sampled, halved, 20)
    require_round_noise(sampled, dataclasses.replace(padded, noise_variance=honest), 20)
