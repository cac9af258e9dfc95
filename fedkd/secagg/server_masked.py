"""Server stages 3 and 3b: masked inputs and reports of bad shares, then the consistency stage.

:func:`server_collect_masked` judges every report of bad shares before it sums anything
(:func:`fedkd.secagg.accusation.judge`): whoever lied is dropped, its masked input left out,
and the round goes on with the others. :func:`server_collect_signatures` relays, to each
survivor, the signatures of its neighbourhood's neighbourhoods (what its certificate check
can use: all of them in full SecAgg, ``O(k^2)`` in SecAgg+) and the tags addressed to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import fedkd.secagg.auth as auth
from fedkd.secagg.accusation import judge
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import ProtocolAbort
from fedkd.secagg.server_state import ServerState
from fedkd.secagg.wire import ConsistencyReply, ConsistencyRequest, MaskedInput, UnmaskRequest


def _well_formed(state: ServerState, reply: MaskedInput, arrived: set[int]) -> str | None:
    masked, config = reply.masked, state.config
    if reply.node_id not in state.shares or reply.node_id in arrived:
        return f"unexpected or repeated masked input from {reply.node_id}"
    if (
        not isinstance(masked, np.ndarray)
        or masked.dtype != np.uint64
        or masked.shape != (config.vector_length,)
    ):
        what = f"{masked.dtype} {masked.shape}" if isinstance(masked, np.ndarray) else "?"
        return f"a masked input of dtype/shape {what}"
    if len(reply.accused) != len(reply.evidence) or len(set(reply.accused)) != len(reply.accused):
        return "a malformed report of bad shares"
    return None


def server_collect_masked(state: ServerState, replies: Sequence[MaskedInput]) -> UnmaskRequest:
    """Stage 3 -> 4: judge the reports of bad shares, add the masked inputs, announce the lists.

    A repeated, unexpected, wrong-length or non-``uint64`` masked input is dropped (its
    sender then counts as dropped before stage 3), and so is every client a report shows
    lying (a sender of bad shares, or a reporter of good ones).

    Returns
    -------
    UnmaskRequest
        The same request for every survivor (without signatures).
    """
    config = state.config
    if state.masked_sum is None:
        state.masked_sum = np.zeros(config.vector_length, dtype=np.uint64)
    arrived = set(state.survivors)
    fresh: dict[int, MaskedInput] = {}
    for reply in replies:
        problem = _well_formed(state, reply, arrived | set(fresh))
        if problem is not None:
            state.reject(reply.node_id, problem)
        else:
            fresh[reply.node_id] = reply
    liars: dict[int, str] = {}
    for reporter, reply in fresh.items():
        for sender, evidence in zip(reply.accused, reply.evidence, strict=True):
            for liar, reason in judge(state, reporter, sender, evidence):
                liars.setdefault(liar, reason)
    for liar, reason in liars.items():
        state.reject(liar, reason)
    for node, reply in fresh.items():
        if node not in liars:
            np.add(state.masked_sum, reply.masked, out=state.masked_sum)
            state.accused[node] = frozenset(reply.accused)
            arrived.add(node)
    if len(arrived) < config.threshold:
        raise ProtocolAbort(
            f"only {len(arrived)} masked inputs arrived, fewer than the threshold "
            f"{config.threshold}; the round cannot complete"
        )
    state.survivors = tuple(sorted(arrived))
    state.dropped = tuple(sorted(set(state.shares) - arrived))
    return UnmaskRequest(state.survivors, state.dropped)


def server_consistency_request(state: ServerState) -> ConsistencyRequest:
    """Stage 3b request (rounds with a roster): the survivor set every survivor signs."""
    return ConsistencyRequest(state.survivors)


def _two_hop(config: SecAggConfig, node: int, signers: set[int]) -> list[int]:
    """Signers in the neighbourhoods of ``node``'s neighbourhood (whose signatures it may use)."""
    if config.neighbours == config.num_clients - 1:
        return sorted(signers)
    near = {w for o in config.holders_of(node) for w in config.holders_of(o)}
    return sorted(near & signers)


def _check_endorsed(state: ServerState, signers: set[int]) -> None:
    """Abort when some client's shares have too few endorsers for any holder to unmask."""
    config, members = state.config, set(state.survivors)
    owners = set(state.survivors) | {v for v in state.dropped if state.partners(v)}
    for owner in sorted(owners):
        endorsers = config.holders_of(owner) & members & signers
        if len(endorsers) < config.threshold:
            raise ProtocolAbort(
                f"only {len(endorsers)} of client {owner}'s share holders signed the survivor "
                f"set, fewer than the threshold {config.threshold}; no holder would unmask"
            )


def server_collect_signatures(
    state: ServerState, replies: Sequence[ConsistencyReply]
) -> dict[int, UnmaskRequest]:
    """Stage 3b -> 4: relay the survivors' signatures (and tags) of the survivor set.

    A signature that does not verify (checked when the server holds the roster) is not
    relayed, nor are its signer's tags; its signer stays a survivor (its masked input is in
    the sum).

    Returns
    -------
    dict[int, UnmaskRequest]
        One request per survivor: the lists, the signatures it may need, and the tags
        addressed to it.

    Raises
    ------
    ProtocolAbort
        When some client's neighbourhood has fewer than ``threshold`` signers: none of its
        holders would unmask.
    """
    config, members = state.config, set(state.survivors)
    for reply in replies:
        node = reply.node_id
        keys = state.advertised.get(node)
        if node not in members or node in state.signatures or keys is None:
            continue  # not a survivor, or a second signature: nothing to relay
        message = auth.survivors_message(config, node, state.survivors)
        if state.roster is None or state.roster.verifies(keys.identity, message, reply.signature):
            state.signatures[node] = reply.signature
            for recipient, tag in zip(reply.recipients, reply.tags, strict=True):
                if recipient in members:
                    state.tags.setdefault(recipient, {})[node] = tag
    signers = set(state.signatures)
    _check_endorsed(state, signers)
    requests = {}
    for node in state.survivors:
        tags = state.tags.get(node, {})
        taggers, relayed = tuple(sorted(tags)), _two_hop(config, node, signers)
        requests[node] = UnmaskRequest(
            state.survivors,
            state.dropped,
            tuple(relayed),
            tuple(state.signatures[v] for v in relayed),
            taggers,
            tuple(tags[v] for v in taggers),
        )
    return requests
