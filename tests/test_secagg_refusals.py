"""Malicious-server behaviours: every one is refused by honest clients, revealing no secret."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pytest

from fedkd.attacks.secagg.scripted import MaliciousServer, scripted
from fedkd.secagg import client, server
from fedkd.secagg.client_masked import client_masked_input
from fedkd.secagg.client_state import ClientState, decode_client_state, encode_client_state
from fedkd.secagg.client_unmask import client_unmask
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.driver import run_secagg
from fedkd.secagg.errors import (
    AuthenticationFailure,
    ConfigError,
    ConfigMismatch,
    InconsistentLists,
    ProtocolAbort,
    RefusedRequest,
    ReplayedRequest,
    RoundAborted,
    StageOrderError,
    TooFewSurvivors,
    UnknownPeer,
)
from fedkd.secagg.wire import (
    AdvertisedKeys,
    AdvertiseRequest,
    MaskedInputRequest,
    ShareKeysRequest,
    UnmaskReply,
    UnmaskRequest,
)

N, D = 5, 6
INPUTS = [np.linspace(-1, 1, D) * (v + 1) for v in range(N)]


@dataclass
class Round:
    """A round driven stage by stage, so a test can deviate anywhere."""

    config: SecAggConfig
    clients: dict[int, ClientState]
    srv: server.ServerState
    keys: ShareKeysRequest | None = None
    routed: dict[int, MaskedInputRequest] = field(default_factory=dict)
    unmask: UnmaskRequest | None = None

    @classmethod
    def start(cls, n: int = N, threshold: int = 3, run_id: int = 0, round: int = 1) -> Round:
        config = SecAggConfig(
            run_id=run_id,
            round=round,
            participants=tuple(range(n)),
            threshold=threshold,
            neighbours=n - 1,
            clip=8.0,
            vector_length=D,
        )
        return cls(config, {v: ClientState(v) for v in range(n)}, server.ServerState(config))

    def advertise(self) -> Round:
        request = AdvertiseRequest(self.config)
        replies = [client.client_advertise(c, request) for c in self.clients.values()]
        self.keys = server.server_collect_keys(self.srv, replies)
        return self

    def share(self) -> Round:
        assert self.keys is not None
        receive = server.server_route_receive_keys(self.srv)
        replies = [
            client.client_share_keys(c, self.keys, (), receive[v]) for v, c in self.clients.items()
        ]
        self.routed = server.server_route_shares(self.srv, replies)
        return self

    def mask(self, skip: tuple[int, ...] = ()) -> Round:
        replies = [
            client_masked_input(self.clients[v], self.routed[v], INPUTS[v])
            for v in self.routed
            if v not in skip
        ]
        self.unmask = server.server_collect_masked(self.srv, replies)
        return self


def _assert_refused_silently(state: ClientState, call, request, kind: type[RefusedRequest]) -> None:  # type: ignore[no-untyped-def]
    """The client raises ``kind``, returns nothing, then refuses the honest request too."""
    reply = None
    with pytest.raises(kind):
        reply = call(state, request)
    assert reply is None and state.aborted
    assert (state.config.run_id, state.config.round) in state.spent_rounds


# --- survivor / dropped lists ---------------------------------------------------------------


def test_overlapping_lists_refused_and_no_share_revealed() -> None:
    rnd = Round.start().advertise().share().mask(skip=(4,))
    assert rnd.unmask is not None and rnd.unmask.dropped == (4,)
    greedy = UnmaskRequest(rnd.unmask.survivors, (4, 0))  # 0 claimed dropped and surviving
    for v in rnd.unmask.survivors:
        _assert_refused_silently(rnd.clients[v], client_unmask, greedy, InconsistentLists)
        with pytest.raises(RoundAborted):  # no later request of the round gets an answer
            client_unmask(rnd.clients[v], rnd.unmask)
    assert rnd.srv.self_mask_shares == {} and rnd.srv.key_shares == {}
    with pytest.raises(ProtocolAbort, match="fewer than the threshold"):
        server.server_unmask(rnd.srv, [])


def test_driver_overlap_is_refused() -> None:
    with pytest.raises(InconsistentLists, match="both surviving and dropped"):
        run_secagg(INPUTS, wrap=scripted(MaliciousServer(overlap_survivor_dropped=True)))


def test_too_few_survivors_refused() -> None:
    rnd = Round.start().advertise().share().mask()
    few = UnmaskRequest((0, 1), (2, 3, 4))
    _assert_refused_silently(rnd.clients[0], client_unmask, few, TooFewSurvivors)
    with pytest.raises(TooFewSurvivors, match="fewer than the threshold"):
        run_secagg(INPUTS, wrap=scripted(MaliciousServer(too_few_survivors=True)))


def test_lists_naming_strangers_or_omitting_senders_refused() -> None:
    rnd = Round.start().advertise().share().mask()
    stranger = UnmaskRequest((0, 1, 2, 3, 4, 99), ())
    _assert_refused_silently(rnd.clients[0], client_unmask, stranger, UnknownPeer)
    omitted = UnmaskRequest((0, 1, 2), (3,))  # 4 sent shares but is in neither list
    _assert_refused_silently(rnd.clients[1], client_unmask, omitted, InconsistentLists)


def test_split_view_attack_cannot_collect_both_kinds_with_majority_threshold() -> None:
    """Tell half the clients 'client 4 dropped' and the other half 'client 4 survived'."""
    rnd = Round.start(n=5, threshold=3).advertise().share().mask()
    says_dropped = UnmaskRequest((0, 1, 2, 3), (4,))
    says_survived = UnmaskRequest((0, 1, 2, 3, 4), ())
    with pytest.raises(InconsistentLists, match="listed as dropped"):
        client_unmask(decode_client_state(encode_client_state(rnd.clients[4])), says_dropped)
    replies = [client_unmask(rnd.clients[v], says_dropped) for v in (0, 1)]
    replies += [client_unmask(rnd.clients[v], says_survived) for v in (2, 3, 4)]
    for reply in replies:  # a client answers one kind of share per peer
        assert not set(reply.self_mask_owners) & set(reply.key_owners)
    seed_shares = sum(4 in r.self_mask_owners for r in replies)
    key_shares = sum(4 in r.key_owners for r in replies)
    assert seed_shares + key_shares == 5
    assert min(seed_shares, key_shares) < rnd.config.threshold  # never both reconstructible
    with pytest.raises(ReplayedRequest):  # and nobody answers a second, corrected request
        client_unmask(rnd.clients[0], says_survived)


def test_threshold_at_or_below_half_is_refused() -> None:
    with pytest.raises(ConfigError, match="use threshold >= 4"):
        SecAggConfig(
            run_id=0,
            round=1,
            participants=tuple(range(6)),
            threshold=3,
            neighbours=5,
            clip=1.0,
            vector_length=2,
        )
    with pytest.raises(ConfigError, match="neighbours \\+ 1 = 6"):
        SecAggConfig(
            run_id=0,
            round=1,
            participants=tuple(range(6)),
            threshold=7,
            neighbours=5,
            clip=1.0,
            vector_length=2,
        )


# --- configuration consistency -------------------------------------------------------------


def test_inconsistent_config_detected_at_share_keys() -> None:
    with pytest.raises(ConfigMismatch, match="different configuration"):
        run_secagg(INPUTS, wrap=scripted(MaliciousServer(inconsistent_config_for=2)))


def test_participant_list_mismatch_detected_before_any_share_leaves() -> None:
    rnd = Round.start(n=6, threshold=4)
    narrow = dataclasses.replace(rnd.config, participants=(0, 1, 2, 3, 4), neighbours=4)
    replies = [
        client.client_advertise(rnd.clients[v], AdvertiseRequest(narrow if v == 0 else rnd.config))
        for v in range(5)
    ]
    keys = ShareKeysRequest(tuple(replies))
    for v in range(5):
        _assert_refused_silently(rnd.clients[v], client.client_share_keys, keys, ConfigMismatch)
        assert rnd.clients[v].self_seed == b"" and rnd.clients[v].held == {}


def test_rewritten_digests_still_fail_authentication() -> None:
    """A server that hides the mismatch by rewriting digests is caught by HKDF/AEAD binding:
    the victim opens no share and refuses; the others open none of the victim's and report it."""
    rnd = Round.start()
    crafted = dataclasses.replace(rnd.config, public_set_digest=b"\x01" * 32)
    replies = []
    for v in range(N):
        reply = client.client_advertise(
            rnd.clients[v], AdvertiseRequest(crafted if v == 0 else rnd.config)
        )
        replies.append(reply)
    honest = [dataclasses.replace(r, config_digest=rnd.config.digest()) for r in replies]
    victim = [dataclasses.replace(r, config_digest=crafted.digest()) for r in replies]
    rnd.srv.advertised = {r.node_id: r for r in replies}
    receive = server.server_route_receive_keys(rnd.srv)
    shared = [
        client.client_share_keys(
            rnd.clients[v], ShareKeysRequest(tuple(victim if v == 0 else honest)), (), receive[v]
        )
        for v in range(N)
    ]
    routed = server.server_route_shares(rnd.srv, shared)
    _assert_refused_silently(
        rnd.clients[0],
        lambda s, r: client_masked_input(s, r, INPUTS[0]),
        routed[0],
        TooFewSurvivors,
    )
    assert rnd.clients[0].held.keys() == {0}  # nobody's shares opened for the victim
    reported = client_masked_input(rnd.clients[1], routed[1], INPUTS[1])
    assert reported.accused == (0,) and 0 not in rnd.clients[1].held


# --- replay -----------------------------------------------------------------------------------


def test_second_masked_input_request_refused() -> None:
    rnd = Round.start().advertise().share().mask()
    _assert_refused_silently(
        rnd.clients[0],
        lambda s, r: client_masked_input(s, r, INPUTS[0]),
        rnd.routed[0],
        ReplayedRequest,
    )
    with pytest.raises(ReplayedRequest, match="already sent its masked input"):
        run_secagg(INPUTS, wrap=scripted(MaliciousServer(replay_round=True)))


def test_second_unmask_request_refused() -> None:
    rnd = Round.start().advertise().share().mask()
    assert rnd.unmask is not None
    first = client_unmask(rnd.clients[0], rnd.unmask)
    assert isinstance(first, UnmaskReply)
    other = UnmaskRequest((0, 1, 2, 3), (4,))
    with pytest.raises(ReplayedRequest, match="already answered the unmask"):
        client_unmask(rnd.clients[0], other)


def test_restarted_round_refused_even_after_process_restart() -> None:
    rnd = Round.start().advertise().share().mask()
    restored = decode_client_state(encode_client_state(rnd.clients[3]))
    for state in (rnd.clients[3], restored):
        with pytest.raises(ReplayedRequest, match="will not restart"):
            client.client_advertise(state, AdvertiseRequest(rnd.config))
    next_round = dataclasses.replace(rnd.config, round=2)
    assert isinstance(
        client.client_advertise(restored, AdvertiseRequest(next_round)), AdvertisedKeys
    )


def test_out_of_order_request_refused() -> None:
    rnd = Round.start().advertise()
    assert rnd.keys is not None
    _assert_refused_silently(
        rnd.clients[0], client_unmask, UnmaskRequest((0, 1, 2), ()), StageOrderError
    )


# --- authentication ---------------------------------------------------------------------------


def test_tampered_ciphertext_is_reported_not_used() -> None:
    """A ciphertext that does not open is not used: the client masks without its sender and
    reports it (with its receive key for that sender: without a roster the server is trusted
    to relay faithfully). The honest server then finds the original valid and drops the
    reporter, not the sender (here the tampering server is the liar)."""
    rnd = Round.start().advertise().share()
    request = rnd.routed[2]
    sealed = bytearray(request.ciphertexts[1])
    sealed[20] ^= 0x80
    tampered = dataclasses.replace(
        request, ciphertexts=(request.ciphertexts[0], bytes(sealed), *request.ciphertexts[2:])
    )
    reply = client_masked_input(rnd.clients[2], tampered, INPUTS[2])
    sender = request.senders[1]
    assert reply.accused == (sender,) and sender not in rnd.clients[2].held
    assert reply.evidence == (rnd.clients[2].receive_private[sender],)
    result = run_secagg(INPUTS, wrap=scripted(MaliciousServer(tamper_share_for=1)))
    assert result.survivors == [0, 2, 3, 4]


def test_misattributed_ciphertext_is_reported() -> None:
    """The AEAD associated data binds the sender: swapping two senders' ciphertexts fails."""
    rnd = Round.start().advertise().share()
    request = rnd.routed[0]
    swapped = dataclasses.replace(
        request,
        ciphertexts=(request.ciphertexts[1], request.ciphertexts[0], *request.ciphertexts[2:]),
    )
    reply = client_masked_input(rnd.clients[0], swapped, INPUTS[0])
    assert reply.accused == request.senders[:2]


def test_altered_or_low_order_keys_rejected() -> None:
    rnd = Round.start().advertise()
    assert rnd.keys is not None
    keys = list(rnd.keys.keys)
    keys[1] = dataclasses.replace(keys[1], cipher_public=bytes(32))  # low-order point
    _assert_refused_silently(
        rnd.clients[0],
        client.client_share_keys,
        ShareKeysRequest(tuple(keys)),
        AuthenticationFailure,
    )
    mine = list(rnd.keys.keys)
    mine[4] = dataclasses.replace(mine[4], mask_public=mine[0].cipher_public[::-1])
    _assert_refused_silently(
        rnd.clients[4],
        client.client_share_keys,
        ShareKeysRequest(tuple(mine)),
        AuthenticationFailure,
    )
