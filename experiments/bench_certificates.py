"""The cost of the consistency certificates, against b3fdd78's scheme measured in the same run.

A round of ``n`` clients drawn from a roster of ``R`` members is driven (real stage functions)
to the consistency stage; then, for each scheme, per client: making its endorsement (one
Ed25519 signature and an HMAC tag per holder of its shares), and checking the certificate it
receives before it unmasks; for the server: verifying every signature and routing. The two
schemes:

* **now** (:mod:`fedkd.secagg.client_unmask`): a signature naming the signer and the stage,
  tags keyed by the *directed* share key and naming sender and recipient; a client needs, for
  every client whose shares it holds, ``t`` endorsements from that client's share holders
  (tags first, signatures for the missing ones);
* **b3fdd78** (re-implemented below, for its cost only: it is the scheme the reflection
  attack broke): one signed message per round, tags keyed by the pair's symmetric key over it;
  a client needs ``max(t, n // 2 + 1)`` tags or signatures in all.

"cold" is a client's first verification in a fresh process: b3fdd78's roster parsed every
member's Ed25519 key on first use (``O(R)``), the roster now parses the ones it meets.

Usage::

    python -m experiments.bench_certificates                       # n = 100, R = 100 and 10,000
    python -m experiments.bench_certificates --n 100 --roster 100 10000 --neighbours 0 8
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedkd.secagg.client import client_advertise, client_share_keys
from fedkd.secagg.client_masked import client_masked_input
from fedkd.secagg.client_state import ClientState, decode_client_state, encode_client_state
from fedkd.secagg.client_unmask import check_certificate, client_consistency
from fedkd.secagg.config import SecAggConfig, majority_threshold
from fedkd.secagg.identity import Roster, simulated_identities
from fedkd.secagg.server import (
    ServerState,
    server_advertise_request,
    server_collect_keys,
    server_collect_masked,
    server_collect_signatures,
    server_route_receive_keys,
    server_route_shares,
)
from fedkd.secagg.wire import ConsistencyRequest, UnmaskRequest

SEED = b"fedkd-bench/certificates/identities"
REPEAT = 3  # server measurements per scheme (median); clients: the median over n clients


# ------------------------------------------------------------------ b3fdd78, for its cost
def legacy_message(config: SecAggConfig, survivors: Sequence[int]) -> bytes:
    """b3fdd78's ``survivors_message``: the same bytes for every signer."""
    members = sorted(set(survivors))
    ids = b"".join(v.to_bytes(8, "big") for v in members)
    return b"fedkd-secagg/survivors/v1" + config.digest() + len(members).to_bytes(8, "big") + ids


def legacy_tag(share_key: bytes, message: bytes) -> bytes:
    """b3fdd78's ``survivors_tag`` (symmetric: the reflection the attack used)."""
    key = hashlib.sha256(b"fedkd-secagg/consistency-tag/v1" + share_key).digest()
    return hmac.new(key, message, hashlib.sha256).digest()


def legacy_endorse(state: ClientState, survivors: Sequence[int]) -> tuple[bytes, dict[int, bytes]]:
    assert state.identity is not None and state.config is not None
    message = legacy_message(state.config, survivors)
    peers = [v for v in sorted(state.share_keys) if v in set(survivors)]
    return state.identity.sign(message), {
        v: legacy_tag(state.share_keys[v], message) for v in peers
    }


def legacy_check(
    state: ClientState,
    survivors: Sequence[int],
    signatures: dict[int, bytes],
    tags: dict[int, bytes],
    verify: Callable[[str, bytes, bytes], bool],
) -> int:
    """b3fdd78's certificate check; returns how many endorsements it found."""
    assert state.config is not None
    config, members = state.config, set(survivors)
    quorum = max(config.threshold, config.num_clients // 2 + 1)
    message = legacy_message(config, survivors)
    valid = {state.identities[state.node_id]}
    for tagger, tag in tags.items():
        key, name = state.received_keys.get(tagger), state.identities.get(tagger)
        if (
            tagger in members
            and key
            and name
            and hmac.compare_digest(legacy_tag(key, message), tag)
        ):
            valid.add(name)
    for signer, signature in signatures.items():
        if len(valid) >= quorum:
            break
        name = state.identities.get(signer)
        if signer in members and name and name not in valid and verify(name, message, signature):
            valid.add(name)
    return len(valid)


def legacy_relay(
    server: ServerState,
    endorsements: dict[int, tuple[bytes, dict[int, bytes]]],
    verify: Callable[[str, bytes, bytes], bool],
) -> dict[int, UnmaskRequest]:
    """b3fdd78's ``server_collect_signatures``: verify each signature, relay all of them and
    each survivor's tags to it."""
    message = legacy_message(server.config, server.survivors)
    signatures: dict[int, bytes] = {}
    tags: dict[int, dict[int, bytes]] = {}
    for node, (signature, addressed) in endorsements.items():
        if verify(str(node), message, signature):
            signatures[node] = signature
            for recipient, tag in addressed.items():
                tags.setdefault(recipient, {})[node] = tag
    signers = tuple(sorted(signatures))
    relayed = tuple(signatures[v] for v in signers)
    requests = {}
    for node in server.survivors:
        mine = tags.get(node, {})
        taggers = tuple(sorted(mine))
        requests[node] = UnmaskRequest(
            server.survivors,
            server.dropped,
            signers,
            relayed,
            taggers,
            tuple(mine[v] for v in taggers),
        )
    return requests


def legacy_verifier(roster: Roster) -> Callable[[str, bytes, bytes], bool]:
    """b3fdd78's ``Roster.verifies``: parses every member's key on first use."""
    parsed: dict[str, Ed25519PublicKey] = {}

    def verify(name: str, message: bytes, signature: bytes) -> bool:
        if not parsed:
            parsed.update(
                {n: Ed25519PublicKey.from_public_bytes(k) for n, k in roster.keys.items()}
            )
        try:
            parsed[name].verify(signature, message)
        except Exception:
            return False
        return True

    return verify


# ------------------------------------------------------------------ a round to the check
def drive_to_consistency(
    n: int, roster_size: int, neighbours: int
) -> tuple[ServerState, dict[int, ClientState], Roster]:
    """``n`` clients of a roster of ``roster_size`` after their masked inputs (d = 8)."""
    names = [str(v) for v in range(max(n, roster_size))]
    identities = simulated_identities(SEED, 0, names)
    roster = Roster.of(identities.values())
    k = n - 1 if neighbours <= 0 else neighbours
    config = SecAggConfig(
        run_id=0,
        round=1,
        participants=tuple(range(n)),
        threshold=majority_threshold(k),
        neighbours=k,
        clip=8.0,
        vector_length=8,
        roster_digest=roster.digest(),
    )
    states = {v: ClientState(v, identity=identities[str(v)], roster=roster) for v in range(n)}
    server = ServerState(config, roster=roster)
    request = server_advertise_request(server)
    keys = server_collect_keys(server, [client_advertise(s, request) for s in states.values()])
    receive = server_route_receive_keys(server)
    shared = [client_share_keys(states[v], keys, (), receive[v]) for v in states]
    routed = server_route_shares(server, shared)
    masked = [client_masked_input(states[v], routed[v], np.zeros(8)) for v in states]
    server_collect_masked(server, masked)
    return server, states, roster


def _now(
    server: ServerState, states: dict[int, ClientState], roster: Roster
) -> dict[str, list[float] | float]:
    """The scheme of this tree: per-client endorse and check (cold, warm), server relay."""
    survivors = server.survivors
    times: dict[str, list[float]] = {"endorse": [], "cold": [], "warm": []}
    saved = {v: encode_client_state(s, with_roster=False) for v, s in states.items()}
    fresh = {v: decode_client_state(b, roster=roster) for v, b in saved.items()}
    replies = []
    for state in fresh.values():
        start = time.perf_counter()
        replies.append(client_consistency(state, ConsistencyRequest(survivors)))
        times["endorse"].append(time.perf_counter() - start)
    server_times = []
    for _ in range(REPEAT):
        relay = ServerState(server.config, roster=Roster(dict(roster.keys)))  # a fresh process
        for name in ("advertised", "shares", "survivors", "dropped", "routed", "accused"):
            setattr(relay, name, getattr(server, name))
        start = time.perf_counter()
        requests = server_collect_signatures(relay, replies)
        server_times.append(time.perf_counter() - start)
    server_s = statistics.median(server_times)
    for v, state in fresh.items():
        state.roster = Roster(dict(roster.keys))  # each client a fresh process: cold, then warm
        for part in ("cold", "warm"):
            start = time.perf_counter()
            check_certificate(state, requests[v])
            times[part].append(time.perf_counter() - start)
    return {**times, "server": server_s}


def _old(
    server: ServerState, states: dict[int, ClientState], roster: Roster
) -> dict[str, list[float] | float]:
    """b3fdd78's scheme on the same states."""
    survivors = server.survivors
    times: dict[str, list[float]] = {"endorse": [], "cold": [], "warm": []}
    endorsements = {}
    for v, state in states.items():
        start = time.perf_counter()
        endorsements[v] = legacy_endorse(state, survivors)
        times["endorse"].append(time.perf_counter() - start)
    server_times = []
    for _ in range(REPEAT):
        verify_server = legacy_verifier(roster)  # the server a fresh process too
        start = time.perf_counter()
        legacy_relay(server, endorsements, verify_server)
        server_times.append(time.perf_counter() - start)
    server_s = statistics.median(server_times)
    signatures = {v: e[0] for v, e in endorsements.items()}
    for v, state in states.items():
        tags = {w: e[1][v] for w, e in endorsements.items() if v in e[1]}
        verify = legacy_verifier(roster)  # each client a fresh process: cold, then warm
        for part in ("cold", "warm"):
            start = time.perf_counter()
            legacy_check(state, survivors, signatures, tags, verify)
            times[part].append(time.perf_counter() - start)
    return {**times, "server": server_s}


def measure(n: int, roster_size: int, neighbours: int) -> dict[str, Any]:
    """Per-client (median) and server seconds of both schemes, cold and warm, and ratios."""
    server, states, roster = drive_to_consistency(n, roster_size, neighbours)
    now, old = _now(server, states, roster), _old(server, states, roster)
    row: dict[str, Any] = {
        "n": n,
        "roster": roster_size,
        "neighbours": server.config.neighbours,
        "threshold": server.config.threshold,
    }
    for part, key in (
        ("client_endorse", "endorse"),
        ("client_check_cold", "cold"),
        ("client_check_warm", "warm"),
        ("server", "server"),
    ):
        for scheme, times in (("now", now), ("old", old)):
            value = times[key]
            row[f"{scheme}_{part}_s"] = (
                statistics.median(value) if isinstance(value, list) else value
            )
        row[f"ratio_{part}"] = row[f"now_{part}_s"] / max(row[f"old_{part}_s"], 1e-9)
    return row


def _pair(row: dict[str, Any], part: str) -> str:
    now, old = row[f"now_{part}_s"] * 1e3, row[f"old_{part}_s"] * 1e3
    return f"{now:.2f} / {old:.2f} ms ({row[f'ratio_{part}']:.3g}x)"


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        "| n | roster | k / t | endorse now / old | check cold now / old | check warm now / old "
        "| server now / old |\n|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['roster']} | {r['neighbours']} / {r['threshold']} | "
            f"{_pair(r, 'client_endorse')} | {_pair(r, 'client_check_cold')} | "
            f"{_pair(r, 'client_check_warm')} | {_pair(r, 'server')} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100])
    parser.add_argument("--roster", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument(
        "--neighbours", type=int, nargs="+", default=[0], help="0: full SecAgg; k: SecAgg+"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench_certificates"))
    args = parser.parse_args(argv)
    rows = []
    for n in args.n:
        for roster_size in args.roster:
            for k in args.neighbours:
                rows.append(measure(n, roster_size, k))
                print(f"n={n} roster={roster_size} k={k or n - 1}: done", flush=True)
    table = format_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"rows": rows}, indent=2))
    (args.out / "bench_certificates.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
