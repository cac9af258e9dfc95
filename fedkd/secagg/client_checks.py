"""What every client stage checks before it touches a secret, and how a refusal ends a round.

A check that fails raises a :class:`~fedkd.secagg.errors.RefusedRequest` subclass, reveals
nothing, and (inside :func:`refusals`) marks the round spent and aborted: the client answers
nothing more for that (run_id, round).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from fedkd.secagg.client_state import ClientState
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import (
    ConfigMismatch,
    RefusedRequest,
    ReplayedRequest,
    RoundAborted,
    StageOrderError,
)
from fedkd.secagg.message import Stage

COMMITMENT_LABEL = b"fedkd-secagg/self-mask-commitment/v1"


def self_mask_commitment(context: bytes, node_id: int, seed: bytes) -> bytes:
    """SHA-256 commitment to a self-mask seed (the server checks reconstructed seeds with it)."""
    return hashlib.sha256(COMMITMENT_LABEL + context + node_id.to_bytes(8, "big") + seed).digest()


@contextmanager
def refusals(state: ClientState) -> Iterator[None]:
    """Abort and spend the current round when a refusal escapes."""
    try:
        yield
    except RefusedRequest:
        state.aborted = True
        key = state.round_key()
        if key is not None:
            state.spent_rounds.add(key)
        raise


def expect_stage(state: ClientState, previous: Stage | None, request: str) -> None:
    """Refuse a request of an aborted round, or one that does not follow stage ``previous``."""
    if state.aborted:
        raise RoundAborted(
            f"client {state.node_id} refused a request of this round; it refuses "
            f"the {request} request too"
        )
    if state.stage is not previous:
        found = "no stage" if state.stage is None else f"stage {state.stage.value!r}"
        wanted = "no stage" if previous is None else f"stage {previous.value!r}"
        raise StageOrderError(
            f"a {request} request needs {wanted} completed, client {state.node_id} is at {found}"
        )


def check_fresh(state: ClientState, config: SecAggConfig) -> None:
    """Refuse a spent, stale or foreign round, and a trust model unlike this client's."""
    for name, expected, got in (
        ("run", state.expected_run, config.run_id),
        ("round", state.expected_round, config.round),
    ):
        if expected is not None and got != expected:
            raise ReplayedRequest(
                f"the aggregation config names {name} {got}, but client {state.node_id} is in "
                f"{name} {expected}: a re-numbered or foreign round is refused"
            )
    if (config.run_id, config.round) in state.spent_rounds:
        raise ReplayedRequest(
            f"client {state.node_id} already answered or refused run "
            f"{config.run_id} round {config.round}; it will not restart it"
        )
    roster = state.roster
    if roster is None and config.authenticated:
        raise ConfigMismatch(
            f"the round requires a roster (digest {config.roster_digest.hex()[:16]}...), "
            f"client {state.node_id} has none"
        )
    if roster is not None and config.roster_digest != roster.digest():
        raise ConfigMismatch(
            "the round's roster digest is not the digest of this client's roster"
            + (
                " (the server asks for an unauthenticated round)"
                if not config.authenticated
                else ""
            )
        )
