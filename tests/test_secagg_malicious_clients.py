"""One malicious client out of ten costs a round nothing but itself (issue 25, item 3).

Each behaviour of :data:`fedkd.attacks.secagg.clients.BEHAVIOURS` is a client that tries to
make the round fail (unusable or copied keys, well-formed garbage ciphertexts to some or all
of its neighbours, shares unlike its commitments, false reports of an honest sender, garbage
consistency material). The round must finish, without that client, with the nine honest
clients' exact sum; the fuzz mutates the bad client's share-keys reply at random and asks the
same of every mutant (or, for a harmless mutation, the exact sum of all ten).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fedkd.secagg.protocol as protocol
from fedkd.attacks.secagg.clients import BEHAVIOURS, Forge, corrupt, with_payload
from fedkd.secagg.driver import simulate
from fedkd.secagg.quantize import Quantizer
from fedkd.secagg.wire import EncryptedShares
from fedkd.transport import Envelope

N, D, BAD = 10, 5, 4
INPUTS = [np.linspace(-3, 3, D) * (v + 1) / N for v in range(N)]
HONEST = [v for v in range(N) if v != BAD]


def _exact(survivors: list[int] | tuple[int, ...]) -> np.ndarray:
    quantizer = Quantizer(64.0, 32)
    return sum((quantizer.encode(INPUTS[v]).values for v in survivors), np.zeros(D, np.uint64))


@pytest.mark.parametrize("neighbours", [None, 6])
@pytest.mark.parametrize("behaviour", sorted(BEHAVIOURS))
def test_a_malicious_client_is_dropped_and_the_honest_sum_is_exact(
    behaviour: str, neighbours: int | None
) -> None:
    sim = simulate(
        INPUTS, roster=True, neighbours=neighbours, wrap=corrupt(BAD, BEHAVIOURS[behaviour])
    )
    outcome = sim.outcome
    assert outcome.result is not None, outcome.reason
    assert sim.refusals() == []  # no honest client was made to refuse anything
    if behaviour == "garbage consistency signature and tags":
        # its masked input is in the sum (it did mask correctly); its certificate material
        # is simply not counted
        assert list(outcome.survivors) == list(range(N))
        np.testing.assert_array_equal(outcome.result.quantized_sum, _exact(range(N)))
        return
    assert list(outcome.survivors) == HONEST, outcome.failed
    assert set(outcome.failed) == {BAD}, outcome.failed
    np.testing.assert_array_equal(outcome.result.quantized_sum, _exact(HONEST))


def _mutate(draw: st.DrawFn, shares: EncryptedShares) -> EncryptedShares:
    """One random mutation of a share-keys reply (fields, bytes, lengths, order)."""
    field = draw(
        st.sampled_from(
            [
                "ciphertexts",
                "share_commitments",
                "self_mask_commitment",
                "signature",
                "recipients",
                "paths",
            ]
        )
    )
    value = getattr(shares, field)
    how = draw(st.sampled_from(["flip", "drop", "swap", "replace"]))
    if isinstance(value, bytes):
        items: list = [value]
    else:
        items = list(value)
    if not items:
        return shares
    i = draw(st.integers(0, len(items) - 1))
    if how == "flip" and isinstance(items[i], bytes) and items[i]:
        raw = bytearray(items[i])
        raw[draw(st.integers(0, len(raw) - 1))] ^= 1 << draw(st.integers(0, 7))
        items[i] = bytes(raw)
    elif how == "drop":
        del items[i]
    elif how == "swap" and len(items) > 1:
        j = draw(st.integers(0, len(items) - 1))
        items[i], items[j] = items[j], items[i]
    elif how == "replace":
        items[i] = (
            draw(st.integers(0, 2 * N))
            if isinstance(items[i], int)
            else draw(st.binary(min_size=0, max_size=120))
        )
    mutated = (items[0] if items else b"") if isinstance(value, bytes) else tuple(items)
    return dataclasses.replace(shares, **{field: mutated})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), sparse=st.booleans())
def test_mutated_share_keys_replies_never_cost_the_round(data: st.DataObject, sparse: bool) -> None:
    def behaviour(forge: Forge) -> Envelope | None:
        if forge.kind != protocol.SHARE_KEYS:
            return None
        shares = EncryptedShares.from_bytes(protocol.payload_of(forge.reply))
        for _ in range(data.draw(st.integers(1, 3))):
            shares = _mutate(data.draw, shares)
        return with_payload(forge.reply, shares.to_bytes())

    sim = simulate(
        INPUTS, roster=True, neighbours=6 if sparse else None, wrap=corrupt(BAD, behaviour)
    )
    outcome = sim.outcome
    assert outcome.result is not None, outcome.reason
    assert sim.refusals() == []
    assert set(outcome.survivors) >= set(HONEST) and set(outcome.failed) <= {BAD}
    np.testing.assert_array_equal(outcome.result.quantized_sum, _exact(outcome.survivors))
