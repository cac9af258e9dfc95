"""Client stages after the masked input: consistency (with a roster) and unmask.

Consistency (Bonawitz et al. 2017, round 3, per neighbourhood as SecAgg+ needs it): the
server names the clients whose masked inputs it holds; the client checks the set and signs it,
once per round, under its identity (the signature names the client, the stage and the round),
and tells each holder of its shares the same in an HMAC under the key of that one direction.

Unmask: the client answers only for the set it signed, and only when, for *every* client whose
shares it holds (itself included), ``threshold`` members of that client's neighbourhood --
its ``k + 1`` share holders -- endorsed that same set (a valid signature, or a valid tag
addressed to this client). ``2 t > k + 1``, so two endorsed sets of one neighbourhood share
an endorser, and an honest client endorses one set per round: every honest client that
reveals anything about a client's secrets saw the same survivor set. A server can no longer
show different clients different lists (split views, a neighbourhood lie on a sparse graph)
to collect both kinds of shares of a client, nor complete a certificate with a client's own
signature or tags (they name it, and its tags are keyed by the other direction).

Both modes check per neighbourhood: a client listed as dropped refuses (it did send its
masked input), and so does a client with fewer than ``threshold`` of its own share holders
among the survivors, or one shown a survivor it accused of sending bad shares.
"""

from __future__ import annotations

import hmac

import fedkd.secagg.auth as auth
import fedkd.secagg.shamir as shamir
from fedkd.secagg.client_checks import expect_stage, refusals
from fedkd.secagg.client_masked import pair_seeds
from fedkd.secagg.client_state import ClientState
from fedkd.secagg.errors import (
    InconsistentLists,
    ReplayedRequest,
    StageOrderError,
    TooFewSurvivors,
    UnknownPeer,
)
from fedkd.secagg.message import Stage
from fedkd.secagg.wire import (
    ConsistencyReply,
    ConsistencyRequest,
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
    accused = sorted(set(state.accused).intersection(survivors))
    if accused:
        raise InconsistentLists(
            f"clients {accused} sent this client bad shares but are listed as survivors"
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
        ``InconsistentLists`` when this client is listed as dropped, a name repeats or an
        accused sender survives, ``TooFewSurvivors`` below the threshold (in the round or in
        this client's neighbourhood), ``UnknownPeer`` for strangers, ``ReplayedRequest`` for a
        second request, ``StageOrderError`` without a roster.
    """
    with refusals(state):
        if state.stage is Stage.CONSISTENCY or state.stage is Stage.UNMASK:
            raise ReplayedRequest(
                f"client {state.node_id} already signed a survivor set this round; it signs one"
            )
        expect_stage(state, Stage.MASKED_INPUT, "consistency")
        config = state.config
        assert config is not None
        if state.identity is None or not config.authenticated:
            raise StageOrderError("a round without a roster has no consistency stage")
        survivors = tuple(sorted(request.survivors))
        _check_survivors(state, survivors)
        state.signed, state.stage = survivors, Stage.CONSISTENCY
        me = state.node_id
        message = auth.survivors_message(config, me, survivors)
        members = set(survivors)
        peers = tuple(v for v in sorted(state.share_keys) if v in members)
        tags = tuple(
            auth.endorsement_tag(state.share_keys[v], config, me, v, survivors) for v in peers
        )
        return ConsistencyReply(me, state.identity.sign(message), peers, tags)


def _tagged(state: ClientState, request: UnmaskRequest) -> set[int]:
    """Members whose tag addressed to this client endorses the set it signed."""
    config = state.config
    assert config is not None
    members, me, valid = set(state.signed), state.node_id, set()
    for tagger, tag in zip(request.taggers, request.tags, strict=True):
        key = state.received_keys.get(tagger)
        if tagger in members and tagger != me and key is not None:
            expected = auth.endorsement_tag(key, config, tagger, me, state.signed)
            if hmac.compare_digest(expected, tag):
                valid.add(tagger)
    return valid


def check_certificate(state: ClientState, request: UnmaskRequest) -> None:
    """Refuse unless every owner of shares held here has ``t`` endorsers of the signed set."""
    config, roster = state.config, state.roster
    assert config is not None and roster is not None
    if tuple(sorted(request.survivors)) != state.signed:
        raise InconsistentLists(
            "the unmask request's survivor list differs from the set this client signed"
        )
    members = set(state.signed)
    endorsed = _tagged(state, request) | {state.node_id}
    signatures: dict[int, bytes] = {}
    for signer, signature in zip(request.signers, request.signatures, strict=True):
        signatures.setdefault(signer, signature)
    names = {state.identities.get(v) for v in endorsed}
    checked: set[int] = set()
    for neighbourhood in {config.holders_of(owner) & members for owner in state.share_senders}:
        for signer in sorted(neighbourhood - endorsed - checked):
            if len(neighbourhood & endorsed) >= config.threshold:
                break
            checked.add(signer)
            name = state.identities.get(signer)
            message = auth.survivors_message(config, signer, state.signed)
            if (
                signer in signatures
                and name is not None
                and name not in names
                and roster.verifies(name, message, signatures[signer])
            ):
                endorsed.add(signer)
                names.add(name)
        if len(neighbourhood & endorsed) < config.threshold:
            owners = sorted(
                o for o in state.share_senders if config.holders_of(o) & members == neighbourhood
            )
            raise TooFewSurvivors(
                f"only {len(neighbourhood & endorsed)} of client {owners[0]}'s share holders "
                f"endorsed the survivor set, fewer than the threshold {config.threshold}: "
                "other clients may have been shown another set"
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
    no_shares = sorted((named & neighbourhood) - set(state.share_senders) - set(state.accused))
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
    """Stage 4: reveal self-mask shares of survivors, key shares and pair seeds of dropped ones.

    Returns
    -------
    UnmaskReply
        For each peer whose shares this client holds: exactly one share, of the kind its
        survivor/dropped status calls for; in a round with a roster, for each dropped peer it
        masked with, their pairwise seed too.

    Raises
    ------
    RefusedRequest
        ``InconsistentLists`` for overlapping or incomplete lists, a list that drops this
        client or keeps one it accused, or (with a roster) one unlike the set it signed;
        ``UnknownPeer`` for names outside the round or without shares here;
        ``TooFewSurvivors`` below the threshold (round or neighbourhood) or without enough
        endorsements of the set; ``ReplayedRequest`` for a second unmask request.
    """
    with refusals(state):
        if state.stage is Stage.UNMASK:
            raise ReplayedRequest(
                f"client {state.node_id} already answered the unmask request "
                "of this round; a second answer could reveal both secrets"
            )
        config = state.config
        authenticated = config is not None and config.authenticated
        expect_stage(state, Stage.CONSISTENCY if authenticated else Stage.MASKED_INPUT, "unmask")
        if authenticated:
            check_certificate(state, request)
        _check_unmask(state, request)
        survivors = set(request.survivors)
        owners = state.share_senders
        seed_owners = tuple(v for v in owners if v in survivors)
        key_owners = tuple(v for v in owners if v not in survivors)
        # Pairwise seeds only where the certificate made every holder's view of those
        # partners the same: without it a split view would hand them out one by one.
        partners = [v for v in key_owners if v != state.node_id] if authenticated else []
        seeds = pair_seeds(state, partners)
        state.stage = Stage.UNMASK
        return UnmaskReply(
            state.node_id,
            seed_owners,
            tuple(shamir.share_to_bytes(state.held[v].self_mask) for v in seed_owners),
            key_owners,
            tuple(shamir.share_to_bytes(state.held[v].mask_key) for v in key_owners),
            tuple(partners),
            tuple(seeds[v] for v in partners),
        )
