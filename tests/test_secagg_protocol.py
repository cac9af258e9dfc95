"""Property tests of the full protocol: exact sums under dropouts, clean aborts below threshold."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedkd.secagg import ProtocolAbort, RefusedRequest, Stage, protocol
from fedkd.secagg.client_state import ClientState, decode_client_state, encode_client_state
from fedkd.secagg.config import SecAggConfig, majority_threshold
from fedkd.secagg.driver import run_secagg
from fedkd.secagg.quantize import Quantizer
from fedkd.secagg.wire import (
    AdvertisedKeys,
    AdvertiseRequest,
    EncryptedShares,
    MaskedInput,
    MaskedInputRequest,
    ShareKeysRequest,
    UnmaskReply,
    UnmaskRequest,
)

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _expected_sum(
    inputs: list[np.ndarray], survivors: list[int], clip: float, bits: int
) -> np.ndarray:
    quantizer = Quantizer(clip, bits)
    total = np.zeros(inputs[0].shape[0], dtype=np.uint64)
    for v in survivors:
        total += quantizer.encode(inputs[v], warn=False).values
    return total


def _outcome(
    config: SecAggConfig, drops: dict[Stage, set[int]], roster: bool
) -> tuple[bool, list[int]]:
    """Oracle: does an honest round succeed, and who survives (sent a masked input)?"""
    t, gone = config.threshold, set()
    present = {}
    for stage in Stage:  # without a roster, a client leaving at consistency is gone at unmask
        gone |= drops[stage]
        present[stage] = {v for v in config.participants if v not in gone}
    u1, u2, u3 = present[Stage.ADVERTISE], present[Stage.SHARE_KEYS], present[Stage.MASKED_INPUT]

    def neighbourhoods_ok(alive: set[int]) -> bool:
        return len(alive) >= t and all(len(alive & config.holders_of(v)) >= t for v in alive)

    if not (neighbourhoods_ok(u1) and neighbourhoods_ok(u2)) or len(u3) < t:
        return False, []
    # a client answers the last stages only when t of its own share holders survive
    willing = {v for v in u3 if len(config.holders_of(v) & u3) >= t}
    if roster:  # every owner of shares a signer holds needs t signers among its holders
        signers = willing & present[Stage.CONSISTENCY]
        owners = u3 | {v for v in u2 - u3 if (config.holders_of(v) - {v}) & u3}
        if any(len(config.holders_of(o) & signers) < t for o in owners):
            return False, []
        willing = signers
    u4 = willing & present[Stage.UNMASK]
    for v in u2:
        partners = (config.holders_of(v) - {v}) & u3
        # a dropped client's key is needed unless every partner reveals its pairwise seed
        # (which clients do in rounds with a roster only)
        needed = v in u3 or bool(partners - u4) or (bool(partners) and not roster)
        if needed and len(u4 & config.holders_of(v)) < t:
            return False, []
    return True, sorted(u3)


@st.composite
def rounds(draw: st.DrawFn, sparse: bool) -> dict:
    n = draw(st.integers(3, 30))
    if sparse:
        k = draw(st.integers(2, n - 1))
        if k < n - 1 and k % 2 == 1 and n % 2 == 1:
            k -= 1
    else:
        k = n - 1
    t = draw(st.integers(majority_threshold(k), k + 1))
    d = draw(st.integers(1, 40))
    clip = draw(st.sampled_from([1.0, 8.0, 64.0]))
    bits = draw(st.integers(8, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    inputs = [rng.normal(scale=clip, size=d) for _ in range(n)]
    clients = st.sets(st.integers(0, n - 1), max_size=max(1, n // 5))
    drops = {stage: draw(clients) for stage in Stage}
    roster = draw(st.booleans())
    return dict(
        n=n, k=k, t=t, clip=clip, bits=bits, seed=seed, inputs=inputs, drops=drops, roster=roster
    )


def _check_round(case: dict) -> None:
    config = SecAggConfig(
        run_id=0,
        round=1,
        participants=tuple(range(case["n"])),
        threshold=case["t"],
        neighbours=case["k"],
        clip=case["clip"],
        vector_length=case["inputs"][0].size,
        bits=case["bits"],
        graph_seed=case["seed"],
    )
    ok, survivors = _outcome(config, case["drops"], case["roster"])
    kwargs = dict(
        roster=case["roster"],
        threshold=case["t"],
        neighbours=case["k"],
        clip=case["clip"],
        bits=case["bits"],
        dropouts=case["drops"],
        seed=case["seed"],
    )
    if not ok:
        with pytest.raises((ProtocolAbort, RefusedRequest)), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            run_secagg(case["inputs"], **kwargs)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # large clipped fractions are drawn on purpose
        result = run_secagg(case["inputs"], **kwargs)
    assert result.survivors == survivors
    expected = _expected_sum(case["inputs"], survivors, case["clip"], case["bits"])
    np.testing.assert_array_equal(result.quantized_sum, expected)
    clipped = [np.clip(case["inputs"][v], -case["clip"], case["clip"]) for v in survivors]
    bound = Quantizer(case["clip"], case["bits"]).error_bound(len(survivors))
    np.testing.assert_allclose(
        result.total, np.sum(clipped, axis=0), rtol=0, atol=bound * 1.01 + 1e-9
    )


@SETTINGS
@given(rounds(sparse=False))
def test_full_secagg_sum_is_exact_under_any_dropouts(case: dict) -> None:
    _check_round(case)


@SETTINGS
@given(rounds(sparse=True))
def test_secagg_plus_sum_is_exact_under_any_dropouts(case: dict) -> None:
    _check_round(case)


def test_dropouts_at_every_stage_full_and_sparse() -> None:
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=17) for _ in range(12)]
    drops = {
        Stage.ADVERTISE: {0},
        Stage.SHARE_KEYS: {1},
        Stage.MASKED_INPUT: {2, 3},
        Stage.UNMASK: {4},
    }
    for k in (11, 10):
        result = run_secagg(inputs, neighbours=k, threshold=majority_threshold(k), dropouts=drops)
        assert result.survivors == [4, 5, 6, 7, 8, 9, 10, 11]
        assert result.dropped == [2, 3]
        np.testing.assert_array_equal(
            result.quantized_sum, _expected_sum(inputs, result.survivors, 64.0, 32)
        )


def test_too_few_survivors_aborts_cleanly() -> None:
    inputs = [np.ones(4) for _ in range(5)]
    with pytest.raises(ProtocolAbort, match="fewer than the threshold 3"):
        run_secagg(inputs, dropouts={Stage.MASKED_INPUT: {0, 1, 2}})
    with pytest.raises(ProtocolAbort, match="shares of client"):
        run_secagg(inputs, dropouts={Stage.UNMASK: {0, 1, 2}})


def test_driver_reports_costs_and_weighted_mean() -> None:
    rng = np.random.default_rng(2)
    weights = [3.0, 1.0, 2.0, 4.0]
    values = [rng.normal(size=6) for _ in weights]
    inputs = [np.concatenate([w * x, [w]]) for w, x in zip(weights, values, strict=True)]
    result = run_secagg(inputs, clip=32.0)
    mean = result.total[:-1] / result.total[-1]
    expected = sum(w * x for w, x in zip(weights, values, strict=True)) / sum(weights)
    np.testing.assert_allclose(mean, expected, atol=1e-6)
    stages = {"advertise", "share_keys", "masked_input", "consistency", "unmask", "total"}
    assert set(result.client_seconds) == stages
    assert result.client_seconds["consistency"] == 0.0  # no consistency stage without a roster
    assert result.server_seconds["total"] > 0
    assert result.bytes_up_per_client > 7 * 8 and result.bytes_down_per_client > 0
    assert result.clipped_fraction == 0.0


def test_messages_round_trip_through_bytes() -> None:
    config = SecAggConfig(
        run_id=3,
        round=4,
        participants=(9, 2, 5),
        threshold=2,
        neighbours=2,
        clip=4.0,
        vector_length=3,
    )
    keys = AdvertisedKeys(2, b"c" * 32, b"s" * 32, config.digest())
    messages = [
        AdvertiseRequest(config),
        keys,
        ShareKeysRequest((keys,)),
        EncryptedShares(2, (5, 9), (b"x", b"yz"), b"h" * 32),
        MaskedInputRequest((5,), (b"abc",)),
        UnmaskRequest((2, 5), (9,)),
        UnmaskReply(2, (5,), (b"q" * 33,), (), ()),
    ]
    for message in messages:
        assert type(message).from_bytes(message.to_bytes()) == message
        assert type(message).from_fields(message.to_fields()) == message
    masked = MaskedInput(5, np.arange(3, dtype=np.uint64))
    again = MaskedInput.from_bytes(masked.to_bytes())
    assert again.node_id == 5 and np.array_equal(again.masked, masked.masked)
    assert config.participants == (2, 5, 9)
    assert SecAggConfig.from_fields(config.to_fields()).digest() == config.digest()


def test_client_state_survives_serialisation_between_stages() -> None:
    """A ClientApp restarted between messages (deployment) finishes the round from bytes."""
    from fedkd.secagg import client, server
    from fedkd.secagg.client_masked import client_masked_input
    from fedkd.secagg.client_unmask import client_unmask

    n, d = 4, 5
    config = SecAggConfig(
        run_id=1,
        round=2,
        participants=tuple(range(n)),
        threshold=3,
        neighbours=3,
        clip=8.0,
        vector_length=d,
    )
    blobs = {v: encode_client_state(ClientState(v)) for v in range(n)}
    srv = server.ServerState(config)
    inputs = [np.full(d, float(v)) for v in range(n)]

    def step(v: int, call, *args):  # type: ignore[no-untyped-def]
        state = decode_client_state(blobs[v])
        reply = call(state, *args)
        blobs[v] = encode_client_state(state)
        return reply

    keys = [
        step(v, client.client_advertise, server.server_advertise_request(srv)) for v in range(n)
    ]
    request = server.server_collect_keys(srv, keys)
    receive = server.server_route_receive_keys(srv)
    routed = server.server_route_shares(
        srv, [step(v, client.client_share_keys, request, (), receive[v]) for v in range(n)]
    )
    masked = [step(v, client_masked_input, routed[v], inputs[v]) for v in range(n)]
    unmask = server.server_collect_masked(srv, masked)
    result = server.server_unmask(srv, [step(v, client_unmask, unmask) for v in range(n)])
    np.testing.assert_allclose(result.total, np.full(d, 6.0), atol=1e-6)
    np.testing.assert_allclose(result.mean, np.full(d, 1.5), atol=1e-6)
    assert (1, 2) in decode_client_state(blobs[0]).spent_rounds


def test_an_honest_reply_fits_its_stage_limit_at_every_size() -> None:
    """The size limits that drop oversized replies never drop an honest one (n up to 200)."""
    from fedkd.secagg.driver import simulate

    for n, k in ((60, None), (200, 8)):
        sim = simulate([np.zeros(3) for _ in range(n)], neighbours=k, roster=True)
        assert sim.outcome.result is not None and not sim.outcome.failed, sim.outcome.reason


def test_a_client_state_stored_under_the_old_stage_name_still_loads() -> None:
    assert Stage("share") is Stage.SHARE_KEYS  # its name before it took its kind's
    assert [s.value for s in Stage] == list(protocol.STAGES)
