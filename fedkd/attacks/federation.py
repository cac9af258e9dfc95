"""A real in-process federation as an attacker sees it.

The clients are the library's own (:func:`fedkd.fl.client.handle` with a
:class:`~fedkd.fl.client.MemoryStore` each, as :func:`fedkd.fl.experiment.in_process_clients`
builds them), the round is the library's own (:mod:`fedkd.fl.rounds`: ``fedkd_request``,
``train_phase``, ``plaintext_sum``, ``secure_aggregate``). Two seams let an attacker in:

* ``corrupt`` wraps the handler of chosen partitions: a *malicious client* changes what its
  own node sends (in a secure round it rewrites its own pending contribution before masking);
* :func:`observe_round` returns what the *server* holds after the aggregate: the sum (the
  secure sum's output, or the plaintext sum) and, in plaintext, every client's vector.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedkd.fl import keys
from fedkd.fl.client import MemoryStore, NodeInfo, handle
from fedkd.fl.config import SECURE_METHODS, FedConfig
from fedkd.fl.data import FederatedData, federated_data
from fedkd.fl.experiment import FIRST_NODE_ID, OpenRun, open_run
from fedkd.fl.federation import Federation
from fedkd.fl.rounds import (
    fedkd_request,
    plaintext_sum,
    secagg_round_config,
    secure_aggregate,
    train_phase,
)
from fedkd.fl.server_work import new_student
from fedkd.secagg import ServerState
from fedkd.transport import Envelope, Handler, InProcessTransport, Refusal, Transport

HandlerWrap = Callable[[int, Handler, MemoryStore], Handler]
"""``(partition id, honest handler, the node's own store) -> the handler the node runs``."""

Poison = Callable[[np.ndarray], np.ndarray]
"""Maps a client's honest teacher part ``(P*C + C,)`` to what it sends instead."""


@dataclass
class AttackedFederation:
    """The federation, its clients' stores, and the data every party rebuilds."""

    fed: Federation
    transport: Transport
    stores: dict[int, MemoryStore]
    data: FederatedData
    student: Any = None
    node_of: dict[int, int] = field(default_factory=dict)  # partition id -> node id
    node_state: Any = None  # a fresh state directory, removed with the federation

    @property
    def config(self) -> FedConfig:
        return self.fed.config

    @property
    def teacher_length(self) -> int:
        """``P*C + C``: the teacher part of a contribution (statistics may follow it)."""
        split = self.data.split
        return len(split.public) * split.num_classes + split.num_classes


def build_federation(
    run_config: Mapping[str, Any],
    num_clients: int,
    *,
    run_id: int = 0,
    corrupt: Mapping[int, HandlerWrap] | None = None,
    pinned_digest: str = "",
    state_dir: str | Path | None = None,
    node_settings: Mapping[str, Any] | None = None,
) -> AttackedFederation:
    """Open a run (results folder included) and build its ``num_clients`` library clients.

    Parameters
    ----------
    run_config
        The flat run config every node and the server parse.
    num_clients
        Clients (partitions).
    run_id
        The run id the clients and secure aggregation bind to.
    corrupt
        Partition id -> wrapper of that node's handler (malicious clients).
    pinned_digest
        Hex public-set digest every node's operator pins (``public-set-digest``).
    state_dir
        Where the nodes keep their release ledgers (node config ``state-dir``; ``None``: a
        fresh directory for this federation, so a study's nodes start as new clients; pass
        one directory to two federations to make their nodes the same across two runs).
    node_settings
        More node config every node's operator sets (``fixed-participants``...).
    """
    fresh = tempfile.TemporaryDirectory(prefix="fedkd-nodes-") if state_dir is None else None
    state_dir = state_dir if fresh is None else fresh.name
    run = open_run(run_config, num_clients)
    stores: dict[int, MemoryStore] = {}
    handlers: dict[int, Handler] = {}
    for pid in range(num_clients):
        node = NodeInfo(
            FIRST_NODE_ID + pid,
            run_id,
            pid,
            num_clients,
            node_config={**(node_settings or {}), keys.NODE_STATE_DIR: str(state_dir)},
            public_set_digest=pinned_digest,
        )
        store = stores.setdefault(pid, MemoryStore())
        honest = _honest(node, store, dict(run_config))
        wrap = (corrupt or {}).get(pid)
        handlers[node.node_id] = honest if wrap is None else wrap(pid, honest, store)
    transport = InProcessTransport(handlers)
    data = federated_data(run.config, num_clients)
    fed = _federation(run, transport, run_id, data.public_digest)
    return AttackedFederation(
        fed,
        transport,
        stores,
        data,
        student=new_student(run.config, run.split),
        node_of={pid: FIRST_NODE_ID + pid for pid in range(num_clients)},
        node_state=fresh,
    )


def federation_over(
    run_config: Mapping[str, Any],
    transport: Transport,
    node_of: Mapping[int, int],
    *,
    run_id: int,
) -> AttackedFederation:
    """The server's side of a federation whose nodes another transport reaches (Flower's
    ClientApp through a ``Grid``, say): ``node_of`` maps partition ids to their node ids."""
    run = open_run(run_config, len(node_of))
    data = federated_data(run.config, len(node_of))
    fed = _federation(run, transport, run_id, data.public_digest)
    student = new_student(run.config, run.split)
    return AttackedFederation(fed, transport, {}, data, student=student, node_of=dict(node_of))


def _federation(run: OpenRun, transport: Transport, run_id: int, digest: bytes) -> Federation:
    """The server's side as :func:`fedkd.fl.experiment.run_method` builds it.

    When the round checks identities (a ``roster`` field on :class:`Federation`, the run's
    roster setting), the server gets the roster as ``run_method`` gives it.
    """
    extra: dict[str, Any] = {}
    config = run.config
    fields = {f.name for f in dataclasses.fields(Federation)}
    if "roster" in fields and config.method in SECURE_METHODS and config.secagg.enabled:
        from fedkd.fl.identities import server_roster

        setting = getattr(config.secagg, "roster", "")
        extra["roster"] = server_roster(
            setting, run_id=run_id, num_partitions=len(transport.nodes())
        )
    return Federation(transport, config, run.split, run.recorder, run_id, digest, **extra)


def _honest(node: NodeInfo, store: MemoryStore, run_config: dict[str, Any]) -> Handler:
    return lambda request: handle(request, node, store, run_config)


@dataclass(frozen=True)
class RoundView:
    """What the server holds after one round's aggregate."""

    server_round: int
    sampled: tuple[int, ...]  # partition ids asked
    total: np.ndarray | None  # teacher part (P*C + C,) of the sum; None when the round failed
    contributions: dict[int, np.ndarray]  # partition -> teacher part, plaintext rounds only
    survivors: int
    reason: str
    failed: dict[int, str] = field(default_factory=dict)  # node -> why it dropped out


def observe_round(
    af: AttackedFederation,
    server_round: int,
    partitions: list[int],
    teacher: np.ndarray | None = None,
) -> RoundView:
    """Run one round's train and aggregate over ``partitions`` with the library's round code.

    Secure when the run config says ``secagg=true``; then only the sum is available.
    """
    fed, length = af.fed, af.teacher_length
    nodes = sorted(af.node_of[p] for p in partitions)
    state = (
        ServerState(secagg_round_config(fed, server_round, nodes))
        if fed.config.secagg.enabled
        else None
    )
    request = fedkd_request(fed, server_round, af.student, teacher, state)
    train = train_phase(fed, request, nodes, server_round)
    contributions: dict[int, np.ndarray] = {}
    if state is None:
        for node, reply in train.replies.items():
            vector = reply.arrays.get(keys.CONTRIBUTION)
            if vector is not None:
                contributions[fed.partition_of(node)] = np.array(vector[:length])
        agg = plaintext_sum(fed, train)
    else:
        agg = secure_aggregate(fed, state, train, server_round)
    total = None if agg.total is None else np.array(agg.total[:length])
    return RoundView(
        server_round,
        tuple(sorted(partitions)),
        total,
        contributions,
        agg.survivors,
        agg.reason,
        dict(agg.failed),
    )


def poisoning_client(poison: Poison, length: int) -> HandlerWrap:
    """A malicious client: the honest node, whose teacher part is replaced by ``poison(...)``.

    In plaintext it rewrites its reply; in a secure round it rewrites its own pending
    contribution (kept in its own store) before the masking stage reads it, so the masks are
    honest and the server cannot tell. Statistics after the teacher part are left as they are.
    """

    def wrap(pid: int, honest: Handler, store: MemoryStore) -> Handler:
        del pid

        def node(request: Envelope) -> Envelope | Refusal:
            reply = honest(request)
            if request.kind != keys.TRAIN or isinstance(reply, Refusal):
                return reply
            if keys.CONTRIBUTION in reply.arrays:
                reply.arrays[keys.CONTRIBUTION] = _replace(
                    reply.arrays[keys.CONTRIBUTION], poison, length
                )
            pending = store.get(keys.STATE_PENDING)
            if pending is not None:
                pending.arrays["values"] = _replace(pending.arrays["values"], poison, length)
                store.put(keys.STATE_PENDING, pending)
            return reply

        return node

    return wrap


def _replace(vector: np.ndarray, poison: Poison, length: int) -> np.ndarray:
    out = np.array(vector, dtype=np.float64)
    out[:length] = poison(out[:length].copy())
    return out


def contribution_on(
    af: AttackedFederation, model: Any, inputs: np.ndarray, labels: np.ndarray, device: str = "cpu"
) -> np.ndarray:
    """The teacher part a client with ``model`` and training ``labels`` sends for ``inputs``.

    The client's own steps (``fedkd.fl`` client work): logits, clipped at ``±clip·T``, the
    teacher rule's weighted terms, scaled by ``1 / pool size``.
    """
    from fedkd.distill import client_contribution, predict_logits

    config, split = af.config, af.data.split
    logits = predict_logits(model, inputs, device=device).astype(np.float64)
    bound = config.secagg.clip * config.teacher.temperature
    contribution = client_contribution(
        np.clip(logits, -bound, bound),
        config=config.teacher,
        label_counts=np.bincount(labels, minlength=split.num_classes),
        num_samples=len(labels),
    )
    return contribution.to_vector() / float(len(split.private))


def client_model(af: AttackedFederation, partition_id: int) -> Any:
    """A client's own (FedMD) model, as its node stored it after its last round."""
    import torch

    from fedkd.fl.client_work import new_client_model

    saved = af.stores[partition_id].get(keys.STATE_MODEL)
    if saved is None:
        raise RuntimeError(f"client {partition_id} kept no model (is the run in FedMD mode?)")
    model = new_client_model(af.config, af.data, partition_id)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in saved.arrays.items()})
    return model
