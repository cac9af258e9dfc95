"""Measure Flower 1.42's own SecAgg+ (server workflow and client mod) in one process.

What runs
---------
*Exact mode* (:func:`run_flower_exact`) executes Flower's real
``SecAggPlusWorkflow`` stage methods (``setup_stage``, ``share_keys_stage``,
``collect_masked_vectors_stage``, ``unmask_stage``, in the order of its ``__call__``)
against Flower's real ``secaggplus_mod`` on every client, inside a legacy
``LegacyContext`` with a ``SimpleClientManager`` of ``GridClientProxy`` objects. The
only piece that is ours is :class:`InProcessGrid`, a ``Grid`` whose
``send_and_receive`` delivers each message to the destination client's mod
synchronously. Every message and every reply crosses it as Flower protobuf
(``message_to_proto`` / ``message_from_proto``), as on the real transport; that
(de)serialisation is transport and is counted neither as server nor as client time,
but its ``ByteSize`` gives the bytes per client.

* server time of a stage = wall time of the workflow's stage method minus the time
  spent inside ``send_and_receive`` (clients and transport);
* client time of a stage = time inside ``secaggplus_mod`` for that client, minus the
  time of the wrapped ``ClientApp`` call (which only returns the prepared vector);
* dropouts: the chosen clients receive the collect-masked-vectors message and never
  answer (they vanish after share keys, before masked input), so the server must
  rebuild their secret key from Shamir shares and regenerate every pairwise mask.

Left out: network latency, Flower's SuperLink / SuperNode processes and state store,
the Ray simulation backend, and the strategy's re-averaging of the already
aggregated vector (``aggregate_fit`` returns the workflow's result unchanged).

*Estimate mode* (:func:`estimate_flower`) keeps Flower's own code but measures
samples and scales them, for configurations too slow to run whole (Flower's Shamir
over GF(2^128) of a whole PEM key costs seconds per client at n = 200):

* client: one probe client runs the real ``secaggplus_mod`` for all four stages,
  with real neighbour keys and real Fernet ciphertexts addressed to it (share bytes
  of the right length); per-client cost is the same for every client;
* server, stages 0-2: the real workflow stage methods run against stand-in clients
  that answer with structurally identical replies (real public keys, ciphertexts
  and masked vectors of the right sizes), so routing and the summation of the masked
  vectors are measured at full n;
* server, unmask: the loop of ``unmask_stage`` is reproduced with Flower's functions
  (``combine_shares`` of genuine shares, as many as the server collects, i.e. one per
  surviving neighbour; ``pseudo_rand_gen``, ``generate_shared_key``,
  ``parameters_addition`` / ``parameters_subtraction``) for a few surviving (default 2)
  and dropped (default 1) clients, and scaled by the survivor and dropout counts, plus
  the final ``parameters_mod`` / ``factor_extract`` / ``dequantize`` measured once.
  The creation of those shares is not timed. Combines of one size vary by about 30 %
  on a loaded machine; exact and estimated runs agreed within that at n = 10 and 30.

Results carry ``estimated=True`` and are marked "est." by the benchmark.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.app.typing import ConfigRecordValues
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    Code,
    FitIns,
    FitRes,
    Parameters,
    Status,
    ndarray_to_bytes,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    encrypt,
    generate_shared_key,
)
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_extract,
    get_parameters_shape,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from flwr.common.secure_aggregation.secaggplus_utils import (
    pseudo_rand_gen,
    share_keys_plaintext_concat,
)
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.server import ServerConfig, SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.strategy import FedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp.grid import Grid
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

STAGES: tuple[str, ...] = (
    Stage.SETUP,
    Stage.SHARE_KEYS,
    Stage.COLLECT_MASKED_VECTORS,
    Stage.UNMASK,
)
QUANTIZATION_RANGE = 1 << 22  # Flower's default
MODULUS_RANGE = 1 << 32  # Flower's default (and maximum)
NODE_ID_BASE = 1000  # client i is node NODE_ID_BASE + i (the SuperLink is node 1)

Handler = Callable[[Message], "Message | None"]


@dataclass(frozen=True)
class FlowerResult:
    """Cost of one Flower SecAgg+ round.

    Attributes
    ----------
    server_seconds, client_seconds : dict[str, float]
        Per stage (Flower's stage names) and ``"total"``; client values are the mean
        over the clients that ran the stage.
    bytes_up_per_client, bytes_down_per_client : float
        Protobuf bytes sent / received by a client that completed all four stages.
    num_shares, threshold : int
        Flower's share count (neighbourhood size, self included) and threshold.
    survivors, dropped : int
        Clients whose masked vector was summed / that vanished before masked input.
    mean : np.ndarray | None
        Flower's decoded weighted mean (exact mode only).
    estimated : bool
        True for :func:`estimate_flower` results.
    """

    server_seconds: dict[str, float]
    client_seconds: dict[str, float]
    bytes_up_per_client: float
    bytes_down_per_client: float
    num_shares: int
    threshold: int
    survivors: int
    dropped: int
    mean: np.ndarray | None
    estimated: bool


@dataclass
class _Ledger:
    """Client-side time and bytes, filled by :class:`InProcessGrid`."""

    client_seconds: dict[str, dict[int, float]] = field(
        default_factory=lambda: {stage: {} for stage in STAGES}
    )
    bytes_up: dict[int, int] = field(default_factory=dict)
    bytes_down: dict[int, int] = field(default_factory=dict)
    grid_seconds: float = 0.0


class InProcessGrid(Grid):
    """A Flower ``Grid`` that hands every message to an in-process client handler.

    Parameters
    ----------
    handlers : dict[int, Callable[[Message], Message | None]]
        Node id -> handler returning the reply, or None when the node has dropped out.
        A handler may record its own compute time in ``ledger`` (see ``_mod_handler``).
    """

    def __init__(self, handlers: dict[int, Handler]) -> None:
        self.handlers = handlers
        self.ledger = _Ledger()
        self._run = Run.create_empty(run_id=0)
        self._outbox: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        """Set the run this grid operates in."""
        self._run = run

    @property
    def run(self) -> Run:
        """Run information."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Create an instruction message for ``dst_node_id``."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """Ids of all nodes, dropped ones included."""
        return list(self.handlers)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver messages now; their replies wait under the returned ids."""
        ids = []
        for index, reply in enumerate(self._deliver(messages)):
            key = f"{len(self._outbox)}-{index}"
            self._outbox[key] = reply
            ids.append(key)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Return (and forget) the replies stored under ``message_ids``."""
        return [self._outbox.pop(key) for key in message_ids if key in self._outbox]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Deliver every message and return the replies of the nodes still present."""
        start = time.perf_counter()
        replies = self._deliver(messages)
        self.ledger.grid_seconds += time.perf_counter() - start
        return replies

    def _deliver(self, messages: Iterable[Message]) -> list[Message]:
        replies = []
        for message in messages:
            dst = message.metadata.dst_node_id
            proto = message_to_proto(message)
            self.ledger.bytes_down[dst] = self.ledger.bytes_down.get(dst, 0) + proto.ByteSize()
            reply = self.handlers[dst](message_from_proto(proto))
            if reply is None:
                continue
            reply_proto = message_to_proto(reply)
            self.ledger.bytes_up[dst] = self.ledger.bytes_up.get(dst, 0) + reply_proto.ByteSize()
            replies.append(message_from_proto(reply_proto))
        return replies


class _PassThroughFedAvg(FedAvg):
    """FedAvg whose ``aggregate_fit`` keeps the workflow's securely aggregated vector.

    The workflow writes the same decoded mean into every ``FitRes``; re-averaging n
    identical copies is backward-compatibility work, not secure aggregation.
    """

    def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
        """Return the securely aggregated parameters unchanged."""
        return results[0][1].parameters, {}


def _stage_of(message: Message) -> str:
    return cast(str, message.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])


def _fit_reply(message: Message, vector: np.ndarray | None) -> Message:
    arrays = [] if vector is None else [vector]
    fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), 1, {})
    return Message(compat.fitres_to_recorddict(fitres, True), reply_to=message)


def _mod_handler(
    node_id: int,
    vector: np.ndarray,
    ledger_of: Callable[[], _Ledger],
    drop_at_masked_input: bool,
) -> Handler:
    """A client running Flower's ``secaggplus_mod`` around a ClientApp returning ``vector``."""
    context = Context(run_id=0, node_id=node_id, node_config={}, state=RecordDict(), run_config={})
    parameters = ndarrays_to_parameters([vector])
    app_seconds = [0.0]

    def call_next(message: Message, _: Context) -> Message:
        start = time.perf_counter()
        fitres = FitRes(Status(Code.OK, ""), parameters, 1, {})
        reply = Message(compat.fitres_to_recorddict(fitres, True), reply_to=message)
        app_seconds[0] += time.perf_counter() - start
        return reply

    def handle(message: Message) -> Message | None:
        stage = _stage_of(message)
        if drop_at_masked_input and stage in (Stage.COLLECT_MASKED_VECTORS, Stage.UNMASK):
            return None
        app_seconds[0] = 0.0
        start = time.perf_counter()
        reply = secaggplus_mod(message, context, cast(ClientAppCallable, call_next))
        elapsed = time.perf_counter() - start - app_seconds[0]
        ledger_of().client_seconds[stage][node_id] = elapsed
        return reply

    return handle


def _as_server_app() -> None:
    """Give this process the identity a ServerApp has (Flower stamps it on messages).

    Also quiets Flower's per-round INFO logging, which would flood the benchmark output.
    """
    logging.getLogger("flwr").setLevel(logging.WARNING)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = 0
    TaskIdentity.node_id = SUPERLINK_NODE_ID


def _legacy_context(grid: InProcessGrid, num_clients: int) -> LegacyContext:
    base = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
    strategy = _PassThroughFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=num_clients,
        min_available_clients=num_clients,
    )
    context = LegacyContext(base, ServerConfig(num_rounds=1), strategy, SimpleClientManager())
    for node_id in grid.get_node_ids():
        context.client_manager.register(GridClientProxy(node_id, grid, 0))
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 1})
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        Parameters(tensors=[], tensor_type="numpy.ndarray"), True
    )
    return context


def _workflow(num_shares: int, threshold: int, clip: float) -> SecAggPlusWorkflow:
    return SecAggPlusWorkflow(
        num_shares=num_shares,
        reconstruction_threshold=threshold,
        max_weight=1.0,
        clipping_range=clip,
        quantization_range=QUANTIZATION_RANGE,
        modulus_range=MODULUS_RANGE,
    )


def flower_shares(num_clients: int, neighbours: int | None) -> int:
    """Flower's ``num_shares`` for ``neighbours`` pairwise masks per client.

    ``None`` or ``neighbours >= num_clients - 1`` is full SecAgg (``num_shares = n``);
    otherwise ``neighbours + 1`` (Flower's neighbourhood includes the client itself
    and must have an odd size, so ``neighbours`` must be even).
    """
    if neighbours is None or neighbours >= num_clients - 1:
        return num_clients
    if neighbours < 2 or neighbours % 2:
        raise ValueError(
            f"neighbours={neighbours}: Flower's SecAgg+ needs an even neighbour count >= 2 "
            f"below n - 1 = {num_clients - 1}, or None / n - 1 for full SecAgg"
        )
    return neighbours + 1


def _run_stages(
    workflow: SecAggPlusWorkflow,
    grid: InProcessGrid,
    context: LegacyContext,
    state: WorkflowState,
    stages: Sequence[str],
) -> dict[str, float]:
    steps = {
        Stage.SETUP: workflow.setup_stage,
        Stage.SHARE_KEYS: workflow.share_keys_stage,
        Stage.COLLECT_MASKED_VECTORS: workflow.collect_masked_vectors_stage,
        Stage.UNMASK: workflow.unmask_stage,
    }
    server: dict[str, float] = {}
    for stage in stages:
        grid_before = grid.ledger.grid_seconds
        start = time.perf_counter()
        ok = steps[stage](grid, context, state)
        wall = time.perf_counter() - start
        server[stage] = wall - (grid.ledger.grid_seconds - grid_before)
        if not ok:
            raise RuntimeError(f"Flower SecAgg+ halted in stage {stage!r}")
    return server


def _mean_client(ledger: _Ledger) -> dict[str, float]:
    out = {
        stage: float(np.mean(list(times.values()))) if times else 0.0
        for stage, times in ledger.client_seconds.items()
    }
    out["total"] = sum(out.values())
    return out


def run_flower_exact(
    inputs: Sequence[np.ndarray],
    *,
    neighbours: int | None,
    threshold: int,
    dropped: Collection[int],
    clip: float,
    seed: int = 0,
) -> FlowerResult:
    """Run Flower's ``SecAggPlusWorkflow`` with ``secaggplus_mod`` on every client.

    Parameters
    ----------
    inputs : Sequence[np.ndarray]
        One float vector per client (all the same length).
    neighbours : int | None
        Pairwise masks per client; None = full SecAgg (see :func:`flower_shares`).
    threshold : int
        Flower's ``reconstruction_threshold`` (shares needed per secret).
    dropped : Collection[int]
        Client indexes that vanish after share keys, before masked input.
    clip : float
        Flower's ``clipping_range``.
    seed : int
        Seeds Python's ``random`` (the workflow shuffles the neighbour ring with it).

    Returns
    -------
    FlowerResult
        Exact timings; ``mean`` is Flower's decoded mean of the survivors' inputs.
    """
    num = len(inputs)
    num_shares = flower_shares(num, neighbours)
    random.seed(seed)
    _as_server_app()
    grid_box: list[InProcessGrid] = []
    drop = set(dropped)
    handlers = {
        NODE_ID_BASE + index: _mod_handler(
            NODE_ID_BASE + index,
            np.asarray(vec, dtype=np.float64),
            lambda: grid_box[0].ledger,
            index in drop,
        )
        for index, vec in enumerate(inputs)
    }
    grid = InProcessGrid(handlers)
    grid_box.append(grid)
    context = _legacy_context(grid, num)
    workflow = _workflow(num_shares, threshold, clip)
    server = _run_stages(workflow, grid, context, WorkflowState(), STAGES)
    server["total"] = sum(server.values())
    survivors = [NODE_ID_BASE + index for index in range(num) if index not in drop]
    arrays = compat.arrayrecord_to_parameters(
        context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
    )
    mean = parameters_to_ndarrays(arrays)[0]
    return FlowerResult(
        server_seconds=server,
        client_seconds=_mean_client(grid.ledger),
        bytes_up_per_client=float(np.mean([grid.ledger.bytes_up[nid] for nid in survivors])),
        bytes_down_per_client=float(np.mean([grid.ledger.bytes_down[nid] for nid in survivors])),
        num_shares=num_shares,
        threshold=threshold,
        survivors=len(survivors),
        dropped=len(drop),
        mean=mean,
        estimated=False,
    )


# ----------------------------------------------------------------------------- estimate


def _setup_config(num: int, num_shares: int, threshold: int, clip: float) -> ConfigRecord:
    return ConfigRecord(
        {
            Key.STAGE: Stage.SETUP,
            Key.SAMPLE_NUMBER: num,
            Key.SHARE_NUMBER: num_shares,
            Key.THRESHOLD: threshold,
            Key.CLIPPING_RANGE: float(clip),
            Key.TARGET_RANGE: QUANTIZATION_RANGE,
            Key.MOD_RANGE: MODULUS_RANGE,
            Key.MAX_WEIGHT: 1.0,
        }
    )


@dataclass(frozen=True)
class _Probe:
    client_seconds: dict[str, float]
    bytes_up: int
    bytes_down: int
    ciphertext_len: int


def _probe_client(
    num: int, dim: int, num_shares: int, threshold: int, clip: float, num_dead: int
) -> _Probe:
    """Run Flower's ``secaggplus_mod`` for one client whose neighbourhood is complete."""
    probe = NODE_ID_BASE
    neighbourhood = min(num_shares, num)
    peers = list(range(NODE_ID_BASE + 1, NODE_ID_BASE + neighbourhood))
    keys = {nid: (generate_key_pairs(), generate_key_pairs()) for nid in peers}
    rng = np.random.default_rng(probe)
    grid_box: list[InProcessGrid] = []
    handler = _mod_handler(probe, rng.uniform(-1, 1, dim), lambda: grid_box[0].ledger, False)
    grid = InProcessGrid({probe: handler})
    grid_box.append(grid)

    def send(content: RecordDict) -> RecordDict:
        message = Message(content, probe, MessageType.TRAIN, group_id="1")
        return list(grid.send_and_receive([message]))[0].content

    reply = send(RecordDict({RECORD_KEY_CONFIGS: _setup_config(num, num_shares, threshold, clip)}))
    pk1, pk2 = (
        cast(bytes, reply.config_records[RECORD_KEY_CONFIGS][k])
        for k in (Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2)
    )
    share_cfg = ConfigRecord(
        {
            str(nid): [public_key_to_bytes(k1[1]), public_key_to_bytes(k2[1])]
            for nid, (k1, k2) in keys.items()
        }
    )
    share_cfg[str(probe)] = [pk1, pk2]
    share_cfg[Key.STAGE] = Stage.SHARE_KEYS
    reply = send(RecordDict({RECORD_KEY_CONFIGS: share_cfg}))
    own_cts = cast(list[bytes], reply.config_records[RECORD_KEY_CONFIGS][Key.CIPHERTEXT_LIST])
    # Shares of the right lengths: 32-byte seed and PEM key, padded to 16-byte chunks.
    seed_share = os.urandom(4 + 16 * (32 // 16 + 1))
    sk_len = len(private_key_to_bytes(keys[peers[0]][0][0]))
    sk_share = os.urandom(4 + 16 * (sk_len // 16 + 1))
    pk2_probe = bytes_to_public_key(pk2)
    cts = [
        encrypt(
            generate_shared_key(keys[nid][1][0], pk2_probe),
            share_keys_plaintext_concat(nid, probe, seed_share, sk_share),
        )
        for nid in peers
    ]
    content = compat.fitins_to_recorddict(
        FitIns(Parameters(tensors=[], tensor_type="numpy.ndarray"), {}), True
    )
    content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(
        {Key.STAGE: Stage.COLLECT_MASKED_VECTORS, Key.CIPHERTEXT_LIST: cts, Key.SOURCE_LIST: peers}
    )
    send(content)
    dead = peers[:num_dead]
    unmask_cfg = ConfigRecord(
        {
            Key.STAGE: Stage.UNMASK,
            Key.ACTIVE_NODE_ID_LIST: [probe] + peers[num_dead:],
            Key.DEAD_NODE_ID_LIST: dead,
        }
    )
    send(RecordDict({RECORD_KEY_CONFIGS: unmask_cfg}))
    return _Probe(
        client_seconds=_mean_client(grid.ledger),
        bytes_up=grid.ledger.bytes_up[probe],
        bytes_down=grid.ledger.bytes_down[probe],
        ciphertext_len=len(own_cts[0]),
    )


def _stand_in(node_id: int, dim: int, ciphertext_len: int, drop_at_masked_input: bool) -> Handler:
    """A client answering each stage with replies shaped like the real mod's."""
    sk1, pk1 = generate_key_pairs()
    _, pk2 = generate_key_pairs()
    public = [public_key_to_bytes(pk1), public_key_to_bytes(pk2)]
    rng = np.random.default_rng(node_id)

    def handle(message: Message) -> Message | None:
        configs = message.content.config_records[RECORD_KEY_CONFIGS]
        stage = configs[Key.STAGE]
        out: dict[str, ConfigRecordValues]
        if stage == Stage.SETUP:
            out = {Key.PUBLIC_KEY_1: public[0], Key.PUBLIC_KEY_2: public[1]}
            return Message(RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(out)}), reply_to=message)
        if stage == Stage.SHARE_KEYS:
            dsts = [int(k) for k in configs if k != Key.STAGE and int(k) != node_id]
            cts = [os.urandom(ciphertext_len) for _ in dsts]
            out = {Key.DESTINATION_LIST: dsts, Key.CIPHERTEXT_LIST: cts}
            return Message(RecordDict({RECORD_KEY_CONFIGS: ConfigRecord(out)}), reply_to=message)
        if drop_at_masked_input:
            return None
        if stage == Stage.COLLECT_MASKED_VECTORS:
            reply = _fit_reply(message, None)
            masked = [
                np.array([rng.integers(0, MODULUS_RANGE)], dtype=np.int64),
                rng.integers(0, MODULUS_RANGE, dim, dtype=np.int64),
            ]
            reply.content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(
                {Key.MASKED_PARAMETERS: [ndarray_to_bytes(arr) for arr in masked]}
            )
            return reply
        raise ValueError(f"stand-in clients do not answer stage {stage!r}")

    return handle


def _unmask_samples(
    state: WorkflowState,
    num_shares: int,
    threshold: int,
    clip: float,
    samples_alive: int,
    samples_dead: int,
) -> dict[str, float]:
    """Time ``unmask_stage``'s per-client loop on a few clients, with genuine shares.

    Like the workflow, every collected share is combined (one per surviving
    neighbour), not just ``threshold`` of them.
    """
    masked = state.aggregate_ndarrays
    shapes = get_parameters_shape(masked)
    alive_nids = sorted(state.active_node_ids)
    dead_nids = sorted(state.sampled_node_ids - state.active_node_ids)

    def shares_for(nid: int, secret: bytes) -> list[bytes]:
        # The workflow combines every share it collected: one per surviving neighbour.
        holders = len(state.nid_to_neighbours[nid] & state.active_node_ids)
        return create_shares(secret, threshold, num_shares)[:holders]

    alive_costs, dead_costs = [], []
    for nid in alive_nids[:samples_alive]:
        shares = shares_for(nid, os.urandom(32))
        start = time.perf_counter()
        secret = combine_shares(shares)
        private_mask = pseudo_rand_gen(secret, MODULUS_RANGE, shapes)
        masked = parameters_subtraction(masked, private_mask)
        alive_costs.append(time.perf_counter() - start)
    for nid in dead_nids[:samples_dead]:
        sk1, _ = generate_key_pairs()
        shares = shares_for(nid, private_key_to_bytes(sk1))
        neighbours = set(state.nid_to_neighbours[nid])
        start = time.perf_counter()
        secret = combine_shares(shares)
        neighbours.remove(nid)
        for neighbour in neighbours:
            shared_key = generate_shared_key(
                bytes_to_private_key(secret),
                bytes_to_public_key(state.nid_to_publickeys[neighbour][0]),
            )
            pairwise = pseudo_rand_gen(shared_key, MODULUS_RANGE, shapes)
            if nid > neighbour:
                masked = parameters_addition(masked, pairwise)
            else:
                masked = parameters_subtraction(masked, pairwise)
        dead_costs.append(time.perf_counter() - start)
    start = time.perf_counter()
    recon = parameters_mod(masked, MODULUS_RANGE)
    total_ratio, recon = factor_extract(recon)
    vectors = dequantize(recon, clip, QUANTIZATION_RANGE)
    offset = -(len(state.active_node_ids) - 1) * clip
    for vec in vectors:
        vec += offset
        vec *= QUANTIZATION_RANGE / max(int(total_ratio), 1)
    final = time.perf_counter() - start
    return {
        "alive": float(np.mean(alive_costs)) if alive_costs else 0.0,
        "dead": float(np.mean(dead_costs)) if dead_costs else 0.0,
        "final": final,
    }


def estimate_flower(
    num: int,
    dim: int,
    *,
    neighbours: int | None,
    threshold: int,
    dropped: Collection[int],
    clip: float,
    seed: int = 0,
    samples_alive: int = 2,
    samples_dead: int = 1,
) -> FlowerResult:
    """Estimate a Flower SecAgg+ round from measured samples (see the module docstring).

    Parameters
    ----------
    num, dim : int
        Clients and vector length.
    neighbours, threshold, dropped, clip, seed
        As in :func:`run_flower_exact`.
    samples_alive, samples_dead : int
        Surviving / dropped clients whose unmasking the server cost is measured on.

    Returns
    -------
    FlowerResult
        ``estimated=True``, ``mean=None``.
    """
    num_shares = flower_shares(num, neighbours)
    drop = set(dropped)
    random.seed(seed)
    _as_server_app()
    probe = _probe_client(num, dim, num_shares, threshold, clip, len(drop) * num_shares // num)
    handlers = {
        NODE_ID_BASE + index: _stand_in(
            NODE_ID_BASE + index, dim, probe.ciphertext_len, index in drop
        )
        for index in range(num)
    }
    grid = InProcessGrid(handlers)
    context = _legacy_context(grid, num)
    workflow = _workflow(num_shares, threshold, clip)
    state = WorkflowState()
    server = _run_stages(workflow, grid, context, state, STAGES[:3])
    alive = len(state.active_node_ids)
    unmask = _unmask_samples(
        state, num_shares, threshold, clip, min(samples_alive, alive), min(samples_dead, len(drop))
    )
    server[Stage.UNMASK] = alive * unmask["alive"] + len(drop) * unmask["dead"] + unmask["final"]
    server["total"] = sum(server.values())
    return FlowerResult(
        server_seconds=server,
        client_seconds=probe.client_seconds,
        bytes_up_per_client=float(probe.bytes_up),
        bytes_down_per_client=float(probe.bytes_down),
        num_shares=num_shares,
        threshold=threshold,
        survivors=alive,
        dropped=len(drop),
        mean=None,
        estimated=True,
    )


def projected_exact_seconds(estimate: FlowerResult, num: int) -> float:
    """Wall time an exact run would take, from an estimate: n clients + the server."""
    return num * estimate.client_seconds["total"] + estimate.server_seconds["total"]
