"""The node's side of the secure-aggregation stages, with its ledger's checks between them.

Stage 1 (advertise) rides on the train message (:func:`start_round`); the later stages come
as their own messages (:func:`secure_stage`). Around the protocol's own checks
(:mod:`fedkd.secagg`) the node applies its ledger's rules (:mod:`fedkd.fl.release`):

* share keys: it names the participants whose keys are authentic (roster members by their
  signed keys, or node ids in curious mode) and refuses if its vector was masked for another
  set before;
* masked input: it records the release (vector, encoding, participants) durably *before*
  masking, and draws its distributed-DP noise share from its own secret;
* consistency (roster rounds) or unmask (curious rounds): it pins the survivor set its vector
  is certified for, and refuses any other;
* with node config ``fixed-participants=true`` (So et al.'s answer to multi-round leakage at
  its simplest: a client only ever aggregates with one set), every round of a federation must
  have the participant and survivor sets of its first.

A ledger refusal aborts the node's round, as a protocol refusal does: it answers nothing more
in that round.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from fedkd.fl import keys
from fedkd.fl.config import FedConfig
from fedkd.fl.identities import client_identity
from fedkd.fl.ledger import LedgerRefusal, Release, set_digest
from fedkd.fl.node import BadRequest, NodeInfo, NodeStore
from fedkd.fl.release import (
    Prepared,
    fixed_participants,
    open_ledger,
    participant_names,
    survivor_names,
)
from fedkd.secagg import ClientState, decode_client_state, encode_client_state
from fedkd.secagg import protocol as secagg
from fedkd.secagg.errors import ReplayedRequest
from fedkd.secagg.identity import Identity, Roster
from fedkd.secagg.wire import ConsistencyRequest, ShareKeysRequest, UnmaskRequest
from fedkd.transport import Envelope, Scalar


def trust(node: NodeInfo, config: FedConfig) -> tuple[Identity | None, Roster | None]:
    """The node's identity and roster for this run (:func:`client_identity`)."""
    return client_identity(
        config.secagg.roster,
        node.node_config,
        run_id=node.run_id,
        partition_id=node.partition_id,
        num_partitions=node.num_partitions,
    )


def _new_state(node: NodeInfo, config: FedConfig) -> ClientState:
    """A node's first secure-aggregation state, with its identity when the run has a roster."""
    identity, roster = trust(node, config)
    return ClientState(node_id=node.node_id, identity=identity, roster=roster)


def _load_state(store: NodeStore, node: NodeInfo, config: FedConfig) -> ClientState | None:
    """The node's saved state; the roster, saved by digest only, comes from the node's own."""
    saved = store.get(keys.STATE_SECAGG)
    if saved is None:
        return None
    payload = bytes(saved.fields[secagg.PAYLOAD])  # type: ignore[arg-type]
    return decode_client_state(payload, roster=trust(node, config)[1])


def _save_state(store: NodeStore, state: ClientState) -> None:
    payload = encode_client_state(state, with_roster=False)
    store.put(keys.STATE_SECAGG, Envelope(keys.STATE_SECAGG, {secagg.PAYLOAD: payload}))


def start_round(
    store: NodeStore,
    node: NodeInfo,
    config: FedConfig,
    advertise: Envelope,
    prepared: Prepared,
    *,
    budgeted: bool,
) -> bytes:
    """Stage 1 on the train message: fresh keys; the prepared release waits for the stages."""
    state = _load_state(store, node, config) or _new_state(node, config)
    state.expected_run, state.expected_round = node.run_id, prepared.release.round
    try:
        stage = secagg.serve_stage(state, advertise)
    finally:
        _save_state(store, state)
    store.put(keys.STATE_PENDING, Envelope(keys.STATE_PENDING, arrays={"values": prepared.values}))
    entry: dict[str, Scalar] = {
        "release": json.dumps(asdict(prepared.release)),
        "noise-seed": format(prepared.noise_seed, "x"),
        "budgeted": budgeted,
    }
    store.put(keys.STATE_RELEASE, Envelope(keys.STATE_RELEASE, entry))
    payload = stage.fields[secagg.PAYLOAD]
    assert isinstance(payload, bytes)
    return payload


def _entry(store: NodeStore) -> Envelope:
    entry = store.get(keys.STATE_RELEASE)
    if entry is None:
        raise BadRequest("no pending release on this node (train first)")
    return entry


def _release(entry: Envelope, names: dict[int, str] | None = None) -> Release:
    """The pending release; masked for ``names`` (the participants) when given."""
    release = Release(**json.loads(str(entry.fields["release"])))
    if names is None:
        return release
    masked_for = {"participants": set_digest(names.values()), "members": len(names)}
    return Release(**{**asdict(release), **masked_for})


def _names(entry: Envelope) -> dict[int, str]:
    return {int(k): v for k, v in json.loads(str(entry.fields.get("names", "{}"))).items()}


def _ledger_step(
    request: Envelope, store: NodeStore, node: NodeInfo, state: ClientState
) -> np.random.Generator | None:
    """The ledger's check before a stage runs (after it, for share keys: see the caller)."""
    config = state.config
    if request.kind == secagg.MASKED_INPUT:
        entry = _entry(store)
        if "names" not in entry.fields:  # nothing is recorded for a stage out of order
            raise BadRequest("a masked-input request before the share-keys stage")
        named = _release(entry, _names(entry))
        ledger = open_ledger(node, "" if state.identity is None else state.identity.name)
        if fixed_participants(node):
            ledger.check_fixed(named)
        ledger.record_release(named, budgeted=bool(entry.fields.get("budgeted")))
        return np.random.default_rng(int(str(entry.fields["noise-seed"]), 16))
    certifying = (request.kind == secagg.CONSISTENCY) or (
        request.kind == secagg.UNMASK and config is not None and not config.authenticated
    )
    if certifying:
        entry = _entry(store)
        payload = secagg.payload_of(request)
        survivors = (
            ConsistencyRequest.from_bytes(payload).survivors
            if request.kind == secagg.CONSISTENCY
            else UnmaskRequest.from_bytes(payload).survivors
        )
        ledger = open_ledger(node, "" if state.identity is None else state.identity.name)
        release = _release(entry)
        ledger.certify(
            release.vector,
            survivor_names(survivors, _names(entry)),
            federation=release.federation if fixed_participants(node) else None,
        )
    return None


def _name_participants(request: Envelope, store: NodeStore, node: NodeInfo, state: ClientState):
    """After share keys: the authentic participants by name, checked against the ledger."""
    keys_request = ShareKeysRequest.from_bytes(secagg.payload_of(request))
    names = participant_names(keys_request, node.node_id, state.roster, state.peer_keys)
    entry = _entry(store)
    named = _release(entry, names)
    ledger = open_ledger(node, "" if state.identity is None else state.identity.name)
    ledger.check_release(named, budgeted=bool(entry.fields.get("budgeted")))
    if fixed_participants(node):
        ledger.check_fixed(named)
    entry.fields["names"] = json.dumps({str(k): v for k, v in names.items()})
    store.put(keys.STATE_RELEASE, entry)


def _abort(state: ClientState) -> None:
    """The node refuses the rest of this round, as after a protocol refusal."""
    state.aborted = True
    if state.config is not None:
        state.spent_rounds.add((state.config.run_id, state.config.round))


def secure_stage(
    request: Envelope, store: NodeStore, node: NodeInfo, config: FedConfig
) -> Envelope:
    """The later secure-aggregation stages; the state is saved back however the stage ends (a
    refusal marks the round spent, and the node must remember that for the next message)."""
    state = _load_state(store, node, config)
    if state is None:
        raise BadRequest("no secure-aggregation round in progress on this node")
    values = None
    if request.kind == secagg.MASKED_INPUT:
        pending = store.get(keys.STATE_PENDING)
        if pending is None:
            spent = state.config is not None and (state.config.run_id, state.config.round) in (
                state.spent_rounds
            )
            if spent:  # the contribution was masked and sent already: this is a replay
                _save_state(store, state)
                raise ReplayedRequest("this round was already answered; refusing")
            raise BadRequest("no pending contribution on this node (train first)")
        values = pending.arrays["values"]
    try:
        # An aborted round is the protocol's to refuse; the ledger is not asked.
        noise = None if state.aborted else _ledger_step(request, store, node, state)
        reply = secagg.serve_stage(state, request, values, noise)
        if request.kind == secagg.SHARE_KEYS:
            _name_participants(request, store, node, state)
    except LedgerRefusal:
        _abort(state)
        raise
    finally:
        _save_state(store, state)
    if request.kind == secagg.MASKED_INPUT:
        store.delete(keys.STATE_PENDING)  # the plaintext contribution is not kept past use
    return reply
