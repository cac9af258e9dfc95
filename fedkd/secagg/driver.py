"""In-process driver: the whole protocol for n simulated clients, with dropouts and attacks.

Client ids are ``0..n-1`` (indexes into ``inputs``). ``dropouts[stage]`` lists the clients that
vanish before answering ``stage`` (and stay gone). :class:`MaliciousServer` switches on server
deviations that honest clients must refuse; the refusing client's :class:`RefusedRequest`
propagates to the caller. Timings and message sizes are measured per stage for benchmarks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import numpy as np

from fedkd.secagg.client import (
    client_advertise,
    client_masked_input,
    client_share_keys,
    client_unmask,
)
from fedkd.secagg.client_state import ClientState
from fedkd.secagg.config import SecAggConfig, majority_threshold
from fedkd.secagg.server import (
    ServerState,
    server_collect_keys,
    server_collect_masked,
    server_route_shares,
    server_unmask,
)
from fedkd.secagg.wire import (
    AdvertiseRequest,
    MaskedInputRequest,
    ShareKeysRequest,
    Stage,
    UnmaskRequest,
)

__all__ = ["DriverResult", "MaliciousServer", "Stage", "run_secagg"]

_R = TypeVar("_R")


@dataclass
class MaliciousServer:
    """Server deviations the driver can inject; honest clients must refuse each of them.

    ``replay_round`` re-sends the masked-input request to the first survivor after its masked
    input arrived. ``tamper_share_for`` has no effect when that client dropped before stage 3.
    """

    overlap_survivor_dropped: bool = False  # claims a survivor dropped to get both shares
    too_few_survivors: bool = False
    inconsistent_config_for: int | None = None  # send this client a different config
    replay_round: bool = False  # re-run masked input for the same round
    tamper_share_for: int | None = None  # flip a ciphertext byte for this recipient


@dataclass
class DriverResult:
    """Outcome and cost of one driven round."""

    total: np.ndarray  # decoded float sum over survivors (d,)
    quantized_sum: np.ndarray  # uint64 exact modular sum (d,)
    survivors: list[int]
    dropped: list[int]
    client_seconds: dict[str, float]  # mean per-client seconds per stage name + "total"
    server_seconds: dict[str, float]  # per stage + "total"
    bytes_up_per_client: float
    bytes_down_per_client: float
    clipped_fraction: float


class _Meter:
    """Accumulates client/server seconds per stage and bytes per direction."""

    def __init__(self, num_clients: int) -> None:
        self.num_clients = num_clients
        self.client: dict[str, list[float]] = {s.value: [] for s in Stage}
        self.server: dict[str, float] = {s.value: 0.0 for s in Stage}
        self.up = 0
        self.down = 0

    def on_client(self, stage: Stage, call: Callable[[], _R]) -> _R:
        start = time.perf_counter()
        result = call()
        self.client[stage.value].append(time.perf_counter() - start)
        return result

    def on_server(self, stage: Stage, call: Callable[[], _R]) -> _R:
        start = time.perf_counter()
        result = call()
        self.server[stage.value] += time.perf_counter() - start
        return result

    def client_means(self) -> dict[str, float]:
        means = {k: float(np.mean(v)) if v else 0.0 for k, v in self.client.items()}
        means["total"] = sum(means.values())
        return means

    def server_totals(self) -> dict[str, float]:
        return {**self.server, "total": sum(self.server.values())}


def _tamper(request: MaskedInputRequest) -> MaskedInputRequest:
    if not request.ciphertexts:
        return request
    first = bytearray(request.ciphertexts[0])
    first[-1] ^= 0x01
    return MaskedInputRequest(request.senders, (bytes(first), *request.ciphertexts[1:]))


def _crafted(config: SecAggConfig) -> SecAggConfig:
    digest = hashlib.sha256(b"crafted public set" + config.public_set_digest).digest()
    return dataclasses.replace(config, public_set_digest=digest)


def run_secagg(
    inputs: Sequence[np.ndarray],
    *,
    threshold: int | None = None,
    neighbours: int | None = None,
    clip: float = 64.0,
    bits: int = 32,
    dropouts: Mapping[Stage, Collection[int]] | None = None,
    malicious: MaliciousServer | None = None,
    run_id: int = 0,
    round: int = 1,
    seed: int = 0,
) -> DriverResult:
    """Run one secure-aggregation round in process.

    Parameters
    ----------
    inputs : Sequence[np.ndarray]
        One float vector per client, all of the same length ``d``.
    threshold : int | None
        Shamir threshold; ``None`` gives a strict majority of each client's share holders.
    neighbours : int | None
        SecAgg+ degree ``k``; ``None`` gives full SecAgg (``n - 1``).
    clip, bits : float, int
        Quantization range ``[-clip, clip]`` and bits per value.
    dropouts : Mapping[Stage, Collection[int]] | None
        Clients that vanish before answering each stage.
    malicious : MaliciousServer | None
        Server deviations to inject.
    run_id, round, seed : int
        Round identity; ``seed`` seeds the public graph order and the public-set digest.

    Returns
    -------
    DriverResult
        Decoded and exact sums over the survivors, survivors, dropped clients, timings, bytes.

    Raises
    ------
    ProtocolAbort
        When too few clients remain at some stage.
    RefusedRequest
        When an honest client refuses an injected malicious request.
    """
    n = len(inputs)
    d = int(np.shape(inputs[0])[0]) if n else 0
    k = n - 1 if neighbours is None else neighbours
    config = SecAggConfig(
        run_id=run_id,
        round=round,
        participants=tuple(range(n)),
        threshold=majority_threshold(k) if threshold is None else threshold,
        neighbours=k,
        clip=clip,
        vector_length=d,
        bits=bits,
        graph_seed=seed,
        public_set_digest=hashlib.sha256(b"fedkd-secagg/driver" + seed.to_bytes(8, "big")).digest(),
    )
    bad = malicious or MaliciousServer()
    gone: set[int] = set()
    plan = {stage: set(dropouts.get(stage, ())) if dropouts else set() for stage in Stage}
    clients = {v: ClientState(v) for v in range(n)}
    server = ServerState(config)
    meter = _Meter(n)

    def alive(stage: Stage, candidates: Collection[int]) -> list[int]:
        gone.update(plan[stage])
        return [v for v in sorted(candidates) if v not in gone]

    # Stage 1: advertise keys.
    advertised = []
    for v in alive(Stage.ADVERTISE, clients):
        own = _crafted(config) if bad.inconsistent_config_for == v else config
        request = AdvertiseRequest(own)
        meter.down += len(request.to_bytes())
        keys_reply = meter.on_client(
            Stage.ADVERTISE, partial(client_advertise, clients[v], request)
        )
        meter.up += len(keys_reply.to_bytes())
        advertised.append(keys_reply)
    if bad.inconsistent_config_for is not None:  # a lying server skips its own digest check
        keys = ShareKeysRequest(tuple(sorted(advertised, key=lambda a: a.node_id)))
        server.advertised = {a.node_id: a for a in advertised}
    else:
        keys = meter.on_server(Stage.ADVERTISE, lambda: server_collect_keys(server, advertised))

    # Stage 2: share keys.
    shared = []
    key_bytes = len(keys.to_bytes())
    for v in alive(Stage.SHARE, [a.node_id for a in keys.keys]):
        meter.down += key_bytes
        shares_reply = meter.on_client(Stage.SHARE, partial(client_share_keys, clients[v], keys))
        meter.up += len(shares_reply.to_bytes())
        shared.append(shares_reply)
    routed = meter.on_server(Stage.SHARE, lambda: server_route_shares(server, shared))
    if bad.tamper_share_for is not None and bad.tamper_share_for in routed:
        routed[bad.tamper_share_for] = _tamper(routed[bad.tamper_share_for])

    # Stage 3: masked input.
    masked = []
    for v in alive(Stage.MASKED_INPUT, routed):
        meter.down += len(routed[v].to_bytes())
        masked_reply = meter.on_client(
            Stage.MASKED_INPUT, partial(client_masked_input, clients[v], routed[v], inputs[v])
        )
        meter.up += len(masked_reply.to_bytes())
        masked.append(masked_reply)
    unmask = meter.on_server(Stage.MASKED_INPUT, lambda: server_collect_masked(server, masked))
    if bad.replay_round and masked:
        first = masked[0].node_id
        client_masked_input(clients[first], routed[first], inputs[first])
    if bad.overlap_survivor_dropped:
        unmask = UnmaskRequest(unmask.survivors, (*unmask.dropped, unmask.survivors[-1]))
    if bad.too_few_survivors:
        cut = config.threshold - 1
        unmask = UnmaskRequest(unmask.survivors[:cut], (*unmask.dropped, *unmask.survivors[cut:]))

    # Stage 4: unmask.
    answers = []
    unmask_bytes = len(unmask.to_bytes())
    for v in alive(Stage.UNMASK, server.survivors):
        meter.down += unmask_bytes
        unmask_reply = meter.on_client(Stage.UNMASK, partial(client_unmask, clients[v], unmask))
        meter.up += len(unmask_reply.to_bytes())
        answers.append(unmask_reply)
    result = meter.on_server(Stage.UNMASK, lambda: server_unmask(server, answers))
    clipped = [clients[v].clipped_fraction for v in result.survivors]
    return DriverResult(
        total=result.total,
        quantized_sum=result.quantized_sum,
        survivors=list(result.survivors),
        dropped=list(result.dropped),
        client_seconds=meter.client_means(),
        server_seconds=meter.server_totals(),
        bytes_up_per_client=meter.up / max(n, 1),
        bytes_down_per_client=meter.down / max(n, 1),
        clipped_fraction=float(np.mean(clipped)) if clipped else 0.0,
    )
