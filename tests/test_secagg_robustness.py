"""One bad client never ends the round: it becomes a dropout with the reason kept.

A test-local wrapper rewrites one client's reply (a malicious client, not a server); the
round runs through ``protocol.secure_sum`` and must still produce the exact sum of the others
(or of everyone, when the bad client only lied about shares).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from fedkd.secagg import ServerState, auth, protocol
from fedkd.secagg.client_state import ClientState, decode_client_state, encode_client_state
from fedkd.secagg.driver import SIMULATION_SEED, simulate
from fedkd.secagg.errors import ConfigError, ConfigMismatch, SecAggError
from fedkd.secagg.identity import Identity, Roster, simulated_identities
from fedkd.secagg.quantize import Quantizer
from fedkd.secagg.wire import AdvertisedKeys, AdvertiseRequest, UnmaskReply
from fedkd.transport import Envelope, ExchangeResult, Transport
from tests.relay import Relay

N, D, BAD = 6, 5, 2
Tamper = Callable[[Envelope], Envelope]


class BadClient(Relay):
    """Rewrites the replies of node ``BAD`` to requests of kind ``kind``."""

    def __init__(self, inner: Transport, kind: str, tamper: Tamper) -> None:
        self.inner, self.kind, self.tamper = inner, kind, tamper

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        result = self.inner.exchange(requests, timeout=timeout, group=group)
        if BAD in result.replies and result.replies[BAD].kind == self.kind:
            result.replies[BAD] = self.tamper(result.replies[BAD])
        return result


def _payload(reply: Envelope, payload: bytes) -> Envelope:
    return Envelope(reply.kind, {**reply.fields, protocol.PAYLOAD: payload}, reply.arrays)


def _keys(reply: Envelope, **changes: object) -> Envelope:
    keys = AdvertisedKeys.from_bytes(protocol.payload_of(reply))
    return _payload(reply, dataclasses.replace(keys, **changes).to_bytes())  # type: ignore[arg-type]


def _flip_share(reply: Envelope) -> Envelope:
    shares = UnmaskReply.from_bytes(protocol.payload_of(reply))
    first = bytearray(shares.self_mask_shares[0])
    first[-1] ^= 0x01
    lied = dataclasses.replace(
        shares, self_mask_shares=(bytes(first), *shares.self_mask_shares[1:])
    )
    return _payload(reply, lied.to_bytes())


INPUTS = [np.linspace(-2, 2, D) + v for v in range(N)]
OTHERS = [v for v in range(N) if v != BAD]
FORGER = simulated_identities(b"not the simulation seed", 0, [str(BAD)])[str(BAD)]
CASES: dict[str, tuple[str, Tamper, str, bool]] = {
    # name: (stage kind, tamper, reason fragment, still a survivor)
    "empty payload": (protocol.ADVERTISE, lambda r: _payload(r, b""), "malformed", False),
    "no payload": (protocol.SHARE_KEYS, lambda r: Envelope(r.kind), "malformed", False),
    "spoofed node id": (protocol.ADVERTISE, lambda r: _keys(r, node_id=0), "claims", False),
    "wrong digest": (
        protocol.ADVERTISE,
        lambda r: _keys(r, config_digest=b"x" * 32),
        "config",
        False,
    ),
    "foreign identity": (
        protocol.ADVERTISE,
        lambda r: _keys(r, identity="99"),
        "not in the roster",
        False,
    ),
    "forged signature": (
        protocol.ADVERTISE,
        lambda r: _keys(r, signature=FORGER.sign(b"anything")),
        "not signed",
        False,
    ),
    "oversized": (protocol.SHARE_KEYS, lambda r: _payload(r, b"\0" * 10**6), "more than", False),
    "float masked": (
        protocol.MASKED_INPUT,
        lambda r: Envelope(r.kind, arrays={protocol.MASKED: np.zeros(D)}),
        "packed bytes",
        False,
    ),
    "short masked": (
        protocol.MASKED_INPUT,
        lambda r: Envelope(r.kind, arrays={protocol.MASKED: np.zeros(D - 1, np.uint64)}),
        "packed bytes",
        False,
    ),
    "masked as list": (
        protocol.MASKED_INPUT,
        lambda r: Envelope(r.kind, {protocol.MASKED: b"list"}),
        "malformed",
        False,
    ),
    "wrong share": (protocol.UNMASK, _flip_share, "unlike its owner's commitment", True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_reply_drops_its_sender_not_the_round(case: str) -> None:
    kind, tamper, reason, survives = CASES[case]
    sim = simulate(
        INPUTS,
        threshold=4,
        roster=True,
        wrap=lambda inner: BadClient(inner, kind, tamper),
    )
    outcome = sim.outcome
    assert outcome.result is not None, outcome.reason
    assert reason in outcome.failed[BAD]
    survivors = list(range(N)) if survives else OTHERS
    assert list(outcome.survivors) == survivors
    expected = sum(Quantizer(64.0, 32).encode(INPUTS[v]).values for v in survivors)
    np.testing.assert_array_equal(outcome.result.quantized_sum, expected)


def test_duplicate_identity_is_dropped_and_refused() -> None:
    """One identity's key holder running two nodes: the second claimant is refused."""
    identities = simulated_identities(SIMULATION_SEED, 0, [str(v) for v in range(N)])
    roster = Roster.of(identities.values())
    replies = simulate(INPUTS, roster=True).outcome.exchanges[protocol.ADVERTISE].replies
    first = AdvertisedKeys.from_bytes(protocol.payload_of(replies[0]))
    second = dataclasses.replace(first, node_id=BAD, signature=b"")
    second = dataclasses.replace(second, signature=identities["0"].sign(auth.keys_message(second)))
    refused = auth.check_advertised(roster, [first, second])
    assert list(refused) == [BAD] and "both claim identity '0'" in refused[BAD]
    sim = simulate(
        INPUTS,
        threshold=4,
        roster=True,
        wrap=lambda inner: BadClient(inner, protocol.ADVERTISE, lambda r: _as_zero(r, identities)),
    )
    assert sim.outcome.result is not None and list(sim.outcome.survivors) == OTHERS
    assert "both claim identity '0'" in sim.outcome.failed[BAD]


def _as_zero(reply: Envelope, identities: dict[str, Identity]) -> Envelope:
    keys = dataclasses.replace(
        AdvertisedKeys.from_bytes(protocol.payload_of(reply)), identity="0", signature=b""
    )
    keys = dataclasses.replace(keys, signature=identities["0"].sign(auth.keys_message(keys)))
    return _payload(reply, keys.to_bytes())


def test_trust_mode_is_explicit_and_checked() -> None:
    identities = simulated_identities(SIMULATION_SEED, 0, ["0", "1"])
    roster = Roster.of(identities.values())
    with pytest.raises(ConfigError, match="an identity needs a roster"):
        ClientState(0, identity=identities["0"])
    with pytest.raises(ConfigError, match="does not list identity"):
        ClientState(0, identity=Identity.generate("0"), roster=roster)
    state = ClientState(
        0, identity=identities["0"], roster=roster, expected_run=7, expected_round=3
    )
    again = decode_client_state(encode_client_state(state))
    assert again.identity == state.identity and again.roster == roster
    assert (again.expected_run, again.expected_round) == (7, 3)
    curious = decode_client_state(encode_client_state(ClientState(1)))
    assert curious.identity is None and curious.expected_round is None
    config = simulate(INPUTS, roster=True).config
    with pytest.raises(ConfigError, match="not the one the round's config names"):
        ServerState(config, roster=roster)


def test_curious_client_refuses_an_authenticated_round_and_vice_versa() -> None:
    curious = simulate(INPUTS, roster=False)
    authenticated = simulate(INPUTS, roster=True)
    assert curious.outcome.result is not None and authenticated.outcome.result is not None
    assert protocol.CONSISTENCY not in curious.outcome.exchanges
    assert protocol.CONSISTENCY in authenticated.outcome.exchanges
    request = protocol.stage_envelope(
        protocol.ADVERTISE, AdvertiseRequest(authenticated.config).to_bytes(), 1
    )
    with pytest.raises(ConfigMismatch, match="requires a roster"):
        protocol.serve_stage(ClientState(0), request)
    downgrade = protocol.stage_envelope(
        protocol.ADVERTISE, AdvertiseRequest(curious.config).to_bytes(), 1
    )
    node = authenticated.nodes[0].state
    fresh = ClientState(0, identity=node.identity, roster=node.roster)
    with pytest.raises(ConfigMismatch, match="asks for an unauthenticated round"):
        protocol.serve_stage(fresh, downgrade)


def test_key_tags_replace_signature_checks_and_never_widen_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Holders' keys are checked by their HMAC tag; without (or with a wrong) tag, by signature."""
    calls: list[str] = []
    verifies = Roster.verifies

    def counting(self: Roster, name: str, message: bytes, signature: bytes) -> bool:
        calls.append(name)
        return verifies(self, name, message, signature)

    monkeypatch.setattr(Roster, "verifies", counting)
    honest = simulate(INPUTS, threshold=4, roster=True, server_roster=False)
    assert honest.outcome.result is not None
    assert calls == []  # every key by tag, every consistency signature by tag (full SecAgg)
    assert all(len(node.state.pair_keys) == N - 1 for node in honest.nodes.values())

    def strip(inner: Transport) -> Transport:
        return TagRewriter(inner, lambda tags: bytes(len(tags)))

    stripped = simulate(INPUTS, threshold=4, roster=True, server_roster=False, wrap=strip)
    assert stripped.outcome.result is not None  # signatures still authenticate the keys
    assert len(calls) >= N * (N - 1)
    np.testing.assert_array_equal(
        stripped.outcome.result.quantized_sum, honest.outcome.result.quantized_sum
    )


def test_a_large_roster_sends_no_tags_and_checks_every_key_by_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past TAG_ROSTER_LIMIT members a client tags nobody (tags would grow with the roster,
    not with the round); every holder's keys are then verified by signature, the sum is exact,
    and a key-substituting server is still refused."""
    from fedkd.attacks.secagg.key_substitution import KeySubstitution
    from fedkd.attacks.secagg.leakage import assess
    from fedkd.secagg import client_auth

    honest = simulate(INPUTS, threshold=4, roster=True)
    monkeypatch.setattr(client_auth, "TAG_ROSTER_LIMIT", N - 1)
    calls: list[str] = []
    verifies = Roster.verifies
    monkeypatch.setattr(
        Roster, "verifies", lambda self, *a: calls.append(a[0]) or verifies(self, *a)
    )
    untagged = simulate(INPUTS, threshold=4, roster=True)
    assert untagged.outcome.result is not None and len(calls) >= N * (N - 1)
    np.testing.assert_array_equal(
        untagged.outcome.result.quantized_sum, honest.outcome.result.quantized_sum
    )
    box: list[KeySubstitution] = []

    def attack(inner: Transport) -> Transport:
        box.append(KeySubstitution(inner, target=0))
        return box[0]

    attacked = simulate(INPUTS, threshold=4, roster=True, wrap=attack)
    assert attacked.outcome.result is None and not assess(box[0].observed).groups


class TagRewriter(Relay):
    """Rewrites the key tags of share-keys requests (a server playing with tags)."""

    def __init__(self, inner: Transport, rewrite: Callable[[bytes], bytes]) -> None:
        self.inner, self.rewrite = inner, rewrite

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        out = {}
        for node, message in requests.items():
            tags = message.fields.get(protocol.TAGS)
            if isinstance(tags, bytes):
                message = Envelope(
                    message.kind, {**message.fields, protocol.TAGS: self.rewrite(tags)}
                )
            out[node] = message
        return self.inner.exchange(out, timeout=timeout, group=group)


def test_a_state_saved_without_its_roster_needs_the_same_roster_back() -> None:
    identities = simulated_identities(SIMULATION_SEED, 1, ["a", "b", "c"])
    roster = Roster.of(identities.values())
    state = ClientState(3, identity=identities["a"], roster=roster)
    slim = encode_client_state(state, with_roster=False)
    assert len(slim) < len(encode_client_state(state))
    assert decode_client_state(slim, roster=roster).roster == roster
    other = Roster.of(simulated_identities(SIMULATION_SEED, 2, ["a", "b", "c"]).values())
    for wrong in (None, other):
        with pytest.raises(SecAggError, match="without its roster"):
            decode_client_state(slim, roster=wrong)
