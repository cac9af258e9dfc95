"""Client stages after the masked input: consistency (with a roster) and unmask.

Consistency (Bonawitz et al. 2017, round 3): the server names the clients whose masked inputs
it holds; the client checks the set and signs it, once per round. Unmask: the client answers
only for the set it signed, and only when the server relays at least
``config.consistency_quorum`` valid signatures of that same set by its members (a share
holder's HMAC tag, keyed by the pair's authenticated share key, counts as its signature).
Every honest client signs one set per round and the quorum is a strict majority of the
participants, so no two different survivor sets can both be certified: a server cannot show
different clients different lists (split views) to collect both kinds of shares of a client.

Both modes check per neighbourhood (SecAgg+): a client listed as dropped refuses (it did
send its masked input), and so does a client with fewer than ``threshold`` of its own share
holders among the survivors.
"""

from __future__ import annotations

import hmac

from fedkd.secagg import auth, shamir
from fedkd.secagg.client import _expect_stage, _refusals
from fedkd.secagg.client_state import ClientState
from fedkd.secagg.errors import (
    InconsistentLists,
    ReplayedRequest,
    StageOrderError,
    TooFewSurvivors,
    UnknownPeer,
)
from fedkd.secagg.wire import (
    ConsistencyReply,
    ConsistencyRequest,
    Stage,
    UnmaskReply,
    UnmaskRequest,
)


def _check_survivors(state: ClientState, survivors: tuple[int, ...]) -> None:
    config = state.config
    assert config is not None
    if len(set(survivors)) != len(survivors):
        raise InconsistentLists("the survivor list names a client twice")
    unknown = sorted(set(survivors) - set(state.advertised))
    if unknown:
        raise UnknownPeer(
            f"the survivor list names {unknown}, who are not participants that "
            "advertised keys this round"
        )
    if state.node_id not in survivors:
        raise InconsistentLists(
            f"client {state.node_id} sent its masked input but is listed as dropped; "
            "answering would reveal its pairwise keys next to its masked input"
        )
    own = config.holders_of(state.node_id).intersection(survivors)
    if len(own) < config.threshold:
        raise TooFewSurvivors(
            f"only {len(own)} of client {state.node_id}'s share holders survive, fewer than "
            f"the threshold {config.threshold}: its neighbourhood would expose too few inputs"
        )
    if len(survivors) < config.threshold:
        raise TooFewSurvivors(
            f"only {len(survivors)} survivors, fewer than the threshold "
            f"{config.threshold}: the sum would expose too few inputs"
        )


def client_consistency(state: ClientState, request: ConsistencyRequest) -> ConsistencyReply:
    """Stage 3b: check the survivor set and sign it (rounds with a roster only).

    Raises
    ------
    RefusedRequest
        ``InconsistentLists`` when this client is listed as dropped or a name repeats,
        ``TooFewSurvivors`` below the threshold (in the round or in this client's
        neighbourhood) or below the signature quorum, ``UnknownPeer`` for strangers,
        ``ReplayedRequest`` for a second request, ``StageOrderError`` without a roster.
    """
    with _refusals(state):
        if state.stage is Stage.CONSISTENCY or state.stage is Stage.UNMASK:
            raise ReplayedRequest(
                f"client {state.node_id} already signed a survivor set this round; it signs one"
            )
        _expect_stage(state, Stage.MASKED_INPUT, "consistency")
        config = state.config
        assert config is not None
        if state.identity is None or not config.authenticated:
            raise StageOrderError("a round without a roster has no consistency stage")
        survivors = tuple(sorted(request.survivors))
        _check_survivors(state, survivors)
        if len(survivors) < config.consistency_quorum:
            raise TooFewSurvivors(
                f"only {len(survivors)} survivors; certifying a set needs "
                f"{config.consistency_quorum} signatures of its members"
            )
        state.signed, state.stage = survivors, Stage.CONSISTENCY
        message = auth.survivors_message(config, survivors)
        peers = tuple(v for v in sorted(state.share_keys) if v in set(survivors))
        tags = tuple(auth.survivors_tag(state.share_keys[v], message) for v in peers)
        return ConsistencyReply(state.node_id, state.identity.sign(message), peers, tags)


def _check_certificate(state: ClientState, request: UnmaskRequest) -> None:
    config, roster = state.config, state.roster
    assert config is not None and roster is not None
    if tuple(sorted(request.survivors)) != state.signed:
        raise InconsistentLists(
            "the unmask request's survivor list differs from the set this client signed"
        )
    message = auth.survivors_message(config, state.signed)
    members, own = set(state.signed), state.identities.get(state.node_id)
    valid = {own}  # this client signed the set itself; other signers count by distinct name
    for tagger, tag in zip(request.taggers, request.tags, strict=True):
        key, name = state.share_keys.get(tagger), state.identities.get(tagger)
        if (
            tagger in members
            and key is not None
            and name is not None
            and hmac.compare_digest(auth.survivors_tag(key, message), tag)
        ):
            valid.add(name)
    for signer, signature in zip(request.signers, request.signatures, strict=True):
        if len(valid) >= config.consistency_quorum:
            break
        name = state.identities.get(signer)
        if (
            signer in members
            and name is not None
            and name not in valid
            and roster.verifies(name, message, signature)
        ):
            valid.add(name)
    if len(valid) < config.consistency_quorum:
        raise TooFewSurvivors(
            f"only {len(valid)} valid signatures of the survivor set by its members, fewer "
            f"than the quorum {config.consistency_quorum}: other clients may have been shown "
            "another set"
        )


def _check_unmask(state: ClientState, request: UnmaskRequest) -> None:
    config = state.config
    assert config is not None
    survivors, dropped = set(request.survivors), set(request.dropped)
    if len(dropped) != len(request.dropped):
        raise InconsistentLists("the unmask request lists a client twice in one list")
    overlap = sorted(survivors & dropped)
    if overlap:
        raise InconsistentLists(
            f"clients {overlap} are claimed both surviving and dropped; "
            "answering would reveal both of their secrets"
        )
    _check_survivors(state, tuple(request.survivors))
    named = survivors | dropped
    unknown = sorted(named - set(state.advertised))
    if unknown:
        raise UnknownPeer(
            f"the unmask request names {unknown}, who are not participants that "
            "advertised keys this round"
        )
    neighbourhood = {state.node_id, *config.neighbours_of(state.node_id)}
    no_shares = sorted((named & neighbourhood) - set(state.share_senders))
    if no_shares:
        raise UnknownPeer(
            f"the unmask request names neighbours {no_shares} who never sent this client shares"
        )
    missing = sorted(set(state.share_senders) - named)
    if missing:
        raise InconsistentLists(
            f"clients {missing} sent shares but are listed neither as survivors nor as dropped"
        )


def client_unmask(state: ClientState, request: UnmaskRequest) -> UnmaskReply:
    """Stage 4: reveal self-mask shares of survivors and key shares of dropped clients.

    Returns
    -------
    UnmaskReply
        For each peer whose shares this client holds: exactly one share, of the kind its
        survivor/dropped status calls for.

    Raises
    ------
    RefusedRequest
        ``InconsistentLists`` for overlapping or incomplete lists, a list that drops this
        client, or (with a roster) one unlike the set it signed; ``UnknownPeer`` for names
        outside the round or without shares here; ``TooFewSurvivors`` below the threshold
        (round or neighbourhood) or below the signature quorum; ``ReplayedRequest`` for a
        second unmask request.
    """
    with _refusals(state):
        if state.stage is Stage.UNMASK:
            raise ReplayedRequest(
                f"client {state.node_id} already answered the unmask request "
                "of this round; a second answer could reveal both secrets"
            )
        config = state.config
        authenticated = config is not None and config.authenticated
        _expect_stage(state, Stage.CONSISTENCY if authenticated else Stage.MASKED_INPUT, "unmask")
        if authenticated:
            _check_certificate(state, request)
        _check_unmask(state, request)
        survivors = set(request.survivors)
        owners = state.share_senders
        seed_owners = tuple(v for v in owners if v in survivors)
        key_owners = tuple(v for v in owners if v not in survivors)
        state.stage = Stage.UNMASK
        return UnmaskReply(
            state.node_id,
            seed_owners,
            tuple(shamir.share_to_bytes(state.held[v].self_mask) for v in seed_owners),
            key_owners,
            tuple(shamir.share_to_bytes(state.held[v].mask_key) for v in key_owners),
        )
