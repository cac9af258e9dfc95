"""In-process runs of the protocol: n simulated clients, dropouts and server deviations.

:func:`run_secagg` drives :func:`fedkd.secagg.protocol.secure_sum` -- the same stage sequence
the federated round uses -- over an :class:`~fedkd.transport.InProcessTransport` whose nodes
are honest :class:`~fedkd.secagg.client_state.ClientState` holders. Client ids are ``0..n-1``
(indexes into ``inputs``); ``dropouts[stage]`` lists the clients that vanish before answering
``stage`` (and stay gone). ``wrap`` puts a deviating server (a wrapper around the transport,
e.g. :mod:`fedkd.attacks.secagg`) around the honest one; honest clients must refuse each
deviation, and :func:`run_secagg` re-raises the first refusal. Timings and message sizes are
measured per stage.

Five clients, one of which drops out before sending its masked input: the server recovers
the other four's sum (to the fixed-point precision) and nothing else:

>>> import numpy as np
>>> from fedkd.secagg.message import Stage
>>> inputs = [np.full(3, float(i)) for i in range(5)]
>>> result = run_secagg(inputs, dropouts={Stage.MASKED_INPUT: [4]}, roster=True)
>>> result.survivors, result.dropped, np.round(result.total, 6).tolist()
([0, 1, 2, 3], [4], [6.0, 6.0, 6.0])
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

import fedkd.secagg.protocol as protocol
from fedkd.dp.plan import noise_headroom
from fedkd.secagg.client_state import ClientState
from fedkd.secagg.config import SecAggConfig, majority_threshold
from fedkd.secagg.errors import ProtocolAbort, RefusedRequest
from fedkd.secagg.identity import NO_ROSTER, Roster, simulated_identities
from fedkd.secagg.quantize import modulus_bits_for
from fedkd.secagg.server import ServerState
from fedkd.secagg.wire import Stage
from fedkd.transport import Envelope, InProcessTransport, Refusal, Transport

__all__ = [
    "DriverResult",
    "Simulation",
    "Stage",
    "run_secagg",
    "simulate",
]

STAGE_OF_KIND = {
    protocol.ADVERTISE: Stage.ADVERTISE,
    protocol.SHARE_KEYS: Stage.SHARE_KEYS,
    protocol.MASKED_INPUT: Stage.MASKED_INPUT,
    protocol.CONSISTENCY: Stage.CONSISTENCY,
    protocol.UNMASK: Stage.UNMASK,
}
SIMULATION_SEED = b"fedkd-secagg/driver-identities"  # the simulated out-of-band secret


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


class _Node:
    """An honest client holding one input, vanishing at the stage its plan says.

    It is gone for that stage and every later one (a round without a roster has no
    consistency stage: a client planned to leave there is gone at unmask).
    """

    def __init__(self, state: ClientState, values: np.ndarray, leaves_at: Stage | None) -> None:
        self.state = state
        self.values, self.leaves_at, self.gone = values, leaves_at, False
        self.refusals: list[RefusedRequest] = []

    def __call__(self, request: Envelope) -> Envelope | Refusal:
        stage, order = STAGE_OF_KIND.get(request.kind), list(Stage)
        if (
            stage is not None
            and self.leaves_at is not None
            and order.index(stage) >= order.index(self.leaves_at)
        ):
            self.gone = True
        if self.gone:
            self.gone = True
            raise ConnectionError("client dropped out")
        try:
            return protocol.serve_stage(self.state, request, self.values)
        except RefusedRequest as refusal:
            self.refusals.append(refusal)
            return Refusal(403, str(refusal))


def _config(
    n: int,
    d: int,
    k: int,
    threshold: int | None,
    clip: float,
    bits: int,
    run_id: int,
    round: int,
    seed: int,
    roster: Roster | None = None,
    noise_variance: float = 0.0,
) -> SecAggConfig:
    headroom = noise_headroom(n * noise_variance)  # distributed DP's summed noise tail
    return SecAggConfig(
        run_id=run_id,
        round=round,
        participants=tuple(range(n)),
        threshold=majority_threshold(k) if threshold is None else threshold,
        neighbours=k,
        clip=clip,
        vector_length=d,
        bits=bits,
        modulus_bits=modulus_bits_for(n, bits, headroom),
        graph_seed=seed,
        public_set_digest=hashlib.sha256(b"fedkd-secagg/driver" + seed.to_bytes(8, "big")).digest(),
        roster_digest=NO_ROSTER if roster is None else roster.digest(),
        noise_variance=noise_variance,
    )


def _states(
    n: int, roster: bool, run_id: int, round: int, fresh: bool, warm: bool = False
) -> tuple[dict[int, ClientState], Roster | None]:
    """Client states of ``n`` nodes; with ``roster``, simulated identities named ``'0'..``.

    ``warm`` derives each client's static pair keys beforehand, as a client that already
    took part in an earlier round (of any run) holds them.
    """
    identities = simulated_identities(SIMULATION_SEED, run_id, [str(v) for v in range(n)])
    members = Roster.of(identities.values()) if roster else None
    states = {}
    for v in range(n):
        states[v] = ClientState(
            v,
            identity=identities[str(v)] if roster else None,
            roster=members,
            expected_run=run_id if fresh else None,
            expected_round=round if fresh else None,
        )
        identity = states[v].identity
        if warm and identity is not None and members is not None:
            for name in members.keys:
                if name != identity.name:
                    states[v].pair_keys[name] = identity.pair_key(members, name)
    return states, members


@dataclass
class Simulation:
    """A driven round before any interpretation: the outcome, the nodes, the configuration."""

    outcome: protocol.SecureOutcome
    nodes: dict[int, _Node]
    config: SecAggConfig
    transport: InProcessTransport

    def refusals(self) -> list[RefusedRequest]:
        """Every refusal of every node, in node order."""
        return [r for v in sorted(self.nodes) for r in self.nodes[v].refusals]


def simulate(
    inputs: Sequence[np.ndarray],
    *,
    threshold: int | None = None,
    neighbours: int | None = None,
    clip: float = 64.0,
    bits: int = 32,
    dropouts: Mapping[Stage, Collection[int]] | None = None,
    wrap: Callable[[Transport], Transport] | None = None,
    run_id: int = 0,
    round: int = 1,
    seed: int = 0,
    roster: bool = False,
    fresh: bool = True,
    server_roster: bool = True,
    warm: bool = False,
    noise_variance: float = 0.0,
) -> Simulation:
    """Run one round over honest in-process nodes, the transport optionally wrapped by an attacker.

    Parameters are those of :func:`run_secagg`; ``wrap`` turns the honest transport into the
    one the server uses (e.g. an attack of :mod:`fedkd.attacks.secagg`). ``roster`` gives every
    client a simulated identity and the roster (the malicious-server mode; the out-of-band
    step is simulated by deriving both from :data:`SIMULATION_SEED`), ``server_roster`` hands
    the server the roster too, ``warm`` lets the clients start with the static pair keys an
    earlier round left them, and ``fresh`` tells each client the run and round it is in (as
    the federated client does from the train message). Nothing is raised because of
    refusals or aborts: they are in the returned :class:`Simulation`.
    """
    n = len(inputs)
    d = int(np.shape(inputs[0])[0]) if n else 0
    k = n - 1 if neighbours is None else neighbours
    states, members = _states(n, roster, run_id, round, fresh, warm)
    config = _config(n, d, k, threshold, clip, bits, run_id, round, seed, members, noise_variance)
    leaves: dict[int, Stage] = {}
    for stage in Stage:  # in protocol order: a client leaves at the first stage that lists it
        for v in (dropouts or {}).get(stage, ()):
            leaves.setdefault(v, stage)
    nodes = {v: _Node(states[v], np.asarray(inputs[v]), leaves.get(v)) for v in range(n)}
    honest = InProcessTransport(nodes)
    transport: Transport = honest if wrap is None else wrap(honest)
    server = ServerState(config, roster=members if server_roster else None)
    outcome = protocol.secure_sum(transport, server, timeout=float("inf"))
    return Simulation(outcome, nodes, config, honest)


def run_secagg(
    inputs: Sequence[np.ndarray],
    *,
    threshold: int | None = None,
    neighbours: int | None = None,
    clip: float = 64.0,
    bits: int = 32,
    dropouts: Mapping[Stage, Collection[int]] | None = None,
    wrap: Callable[[Transport], Transport] | None = None,
    run_id: int = 0,
    round: int = 1,
    seed: int = 0,
    roster: bool = False,
    warm: bool = False,
    noise_variance: float = 0.0,
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
    wrap : Callable[[Transport], Transport] | None
        Turns the honest transport into the server's (server deviations to inject).
    run_id, round, seed : int
        Round identity; ``seed`` seeds the public graph order and the public-set digest.
    roster : bool
        Simulated identities and a roster (signatures and the consistency stage included).
    warm : bool
        With ``roster``: clients already hold their static pair keys (any round after a
        client's first); otherwise each derives them in this round.
    noise_variance : float
        Distributed DP: the Skellam variance (levels^2) each client adds before masking.

    Returns
    -------
    DriverResult
        Decoded and exact sums over the survivors, survivors, dropped clients, timings, bytes.

    Raises
    ------
    ProtocolAbort
        When too few clients remain at some stage.
    RefusedRequest
        When an honest client refuses an injected malicious request (the first refusal).
    """
    sim = simulate(
        inputs,
        threshold=threshold,
        neighbours=neighbours,
        clip=clip,
        bits=bits,
        dropouts=dropouts,
        wrap=wrap,
        run_id=run_id,
        round=round,
        seed=seed,
        roster=roster,
        warm=warm,
        noise_variance=noise_variance,
    )
    refusals = sim.refusals()
    if refusals:
        raise refusals[0]
    return _driver_result(sim, len(inputs))


def _driver_result(sim: Simulation, n: int) -> DriverResult:
    outcome = sim.outcome
    if outcome.result is None:
        raise ProtocolAbort(outcome.reason.removeprefix("secure aggregation aborted: "))
    result = outcome.result
    up = sum(x.bytes_up for x in outcome.exchanges.values())
    down = sum(x.bytes_down for x in outcome.exchanges.values())
    clipped = [sim.nodes[v].state.clipped_fraction for v in result.survivors]
    return DriverResult(
        total=result.total,
        quantized_sum=result.quantized_sum,
        survivors=list(result.survivors),
        dropped=list(result.dropped),
        client_seconds=_client_means(sim.transport),
        server_seconds=_server_totals(outcome),
        bytes_up_per_client=up / max(n, 1),
        bytes_down_per_client=down / max(n, 1),
        clipped_fraction=float(np.mean(clipped)) if clipped else 0.0,
    )


def _client_means(transport: InProcessTransport) -> dict[str, float]:
    means = {stage.value: 0.0 for stage in Stage}
    for kind, seconds in transport.client_seconds.items():
        means[STAGE_OF_KIND[kind].value] = float(np.mean(seconds))
    means["total"] = sum(means.values())
    return means


def _server_totals(outcome: protocol.SecureOutcome) -> dict[str, float]:
    totals = {stage.value: 0.0 for stage in Stage}
    for kind, seconds in outcome.server_seconds.items():
        totals[STAGE_OF_KIND[kind].value] = seconds
    totals["total"] = sum(totals.values())
    return totals
