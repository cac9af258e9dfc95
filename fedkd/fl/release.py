"""The node's side of a release: its ledger, its budget and its rules, step by step.

:func:`fedkd.fl.client.train` calls, in order: :func:`admit_run` (trust mode, budget, round
count) before any work on private data; :func:`admit_training` before DP-SGD trains;
:func:`prepare_release` once the contribution is computed (the clip and noise it releases,
keyed by the node's secret, and the client-level epsilon check). The secure stages then call
:func:`participant_names` (share keys), :meth:`ReleaseLedger.record_release` (masked input,
before anything is masked) and :func:`survivor_names` with :meth:`ReleaseLedger.certify`
(consistency; unmask in curious mode). Every refusal is a
:class:`~fedkd.fl.ledger.LedgerRefusal`, which the client answers as one refused request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedkd.fl import keys, node_budget
from fedkd.fl.config import SECURE_METHODS, FedConfig
from fedkd.fl.identities import SIMULATED
from fedkd.fl.ledger import LedgerRefusal, Release, ReleaseLedger, Training, default_root, digest
from fedkd.fl.node import NodeInfo
from fedkd.secagg import auth
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.identity import Roster
from fedkd.secagg.wire import ShareKeysRequest


@dataclass
class NodeBudget:
    """A node's ledger, the federation a request belongs to, and its budget there."""

    ledger: ReleaseLedger
    federation: str
    budget: dict[str, Any]

    @property
    def budgeted(self) -> bool:
        return node_budget.is_budgeted(self.budget)


def node_name(node: NodeInfo, identity: str = "") -> str:
    """The ledger directory's name: ``identity-<name>`` for a node with its operator's
    identity (its roster name), else ``partition-<p>-of-<n>``."""
    if identity and node.node_config.get(keys.NODE_SECAGG_IDENTITY):
        safe = identity if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", identity) else digest(identity)
        return f"identity-{safe}"
    return f"partition-{node.partition_id}-of-{node.num_partitions}"


def ledger_root(node: NodeInfo) -> str:
    """Where the node's ledgers live: node config ``state-dir``, else ``$FEDKD_HOME/nodes``."""
    return str(node.node_config.get(keys.NODE_STATE_DIR, "")) or str(default_root())


def open_ledger(node: NodeInfo, identity: str = "") -> ReleaseLedger:
    """The node's ledger (under :func:`ledger_root`)."""
    return ReleaseLedger.open(ledger_root(node), node_name(node, identity))


def refusal_text(node: NodeInfo, refusal: LedgerRefusal) -> str:
    """The refusal as the node reports it. A simulated node adds where its memory lives: it
    outlives the run on purpose (a server must not difference a round repeated in a new run),
    so a second simulation of the same population, say with another DP setting, meets it."""
    if node.deployed or refusal.rule == "trust":
        return str(refusal)
    return (
        f"{refusal} [simulated nodes keep their release ledgers across runs, under "
        f"{ledger_root(node)}; a fresh FEDKD_HOME (or node config state-dir) simulates new nodes]"
    )


def federation_of(node: NodeInfo, config: FedConfig, roster: Roster | None) -> str:
    """What "the same federation" is for this node (:mod:`fedkd.fl.node_budget`)."""
    if node.node_config.get(keys.NODE_SECAGG_ROSTER) and roster is not None:
        return "roster:" + roster.digest().hex()
    if node.deployed:
        return "deployment"
    return node_budget.simulated_federation(config, node.num_partitions)


def fixed_participants(node: NodeInfo) -> bool:
    """Node config ``fixed-participants``: one participant set per federation (opt-in)."""
    value = node.node_config.get(keys.NODE_FIXED_PARTICIPANTS, "false")
    return str(value).lower() in ("true", "1")


def check_trust(node: NodeInfo, config: FedConfig) -> None:
    """A deployed node refuses simulated identities, and curious mode unless its operator
    allowed it (``allow-curious=true``)."""
    if not node.deployed or not (config.method in SECURE_METHODS and config.secagg.enabled):
        return  # no secure aggregation, no identities to trust
    if config.secagg.roster == SIMULATED:
        raise LedgerRefusal(
            "trust",
            "this SuperNode is deployed, and 'simulated' identities are derivable by whoever "
            "runs the server; run with secagg-roster=<roster.json from 'fedkd keys'> and start "
            "the SuperNode with its own secagg-identity and secagg-roster",
        )
    allowed = str(node.node_config.get(keys.NODE_ALLOW_CURIOUS, "false")).lower() in ("true", "1")
    if not config.secagg.roster and not allowed:
        raise LedgerRefusal(
            "trust",
            "this SuperNode is deployed and the run has no roster (curious-server mode, which "
            "protects nothing against a server that deviates); its operator may allow it with "
            "--node-config 'allow-curious=true'",
        )


def admit_run(
    node: NodeInfo,
    config: FedConfig,
    identity: str,
    roster: Roster | None,
    server_round: int,
    asked: Mapping[str, Any],
) -> NodeBudget:
    """Pin (or read) the federation's budget; refuse a looser run or a round past its count.

    ``asked`` is the run's own budget (:func:`fedkd.fl.node_budget.run_budget`); ``identity``
    the node's roster name (names its ledger directory in a deployment).
    """
    check_trust(node, config)
    ledger = open_ledger(node, identity)
    federation = federation_of(node, config, roster)
    operator = node_budget.operator_budget(node.node_config)
    pinned = ledger.pin_budget(federation, {**dict(asked), "source": f"run {node.run_id}"})
    budget = {k: pinned.get(k) for k in node_budget.BUDGET_FIELDS} | operator
    problems = node_budget.looser(asked, budget)
    if problems:
        raise LedgerRefusal(
            "budget", "the run asks for more than this node allows: " + "; ".join(problems)
        )
    node_budget.check_round(budget, server_round)
    return NodeBudget(ledger, federation, budget)


def admit_training(nb: NodeBudget, training: Training) -> int:
    """Check and record a DP-SGD training; the seed of its noise and sampling."""
    if not nb.ledger.check_training(training):  # a repeat spends nothing new
        node_budget.training_epsilon(nb.budget, nb.ledger.trainings(nb.federation), training)
    nb.ledger.record_training(training)
    return nb.ledger.seed("dpsgd", nb.federation, training.input)


def dpsgd_history(nb: NodeBudget, *, without: str = "") -> list[tuple[float, float, int]]:
    """The node's DP-SGD accountant entries in this federation, over all its runs (runs of
    equal noise and rate merged, as Opacus' accountant keeps them), but the training whose
    input digest is ``without`` (the one about to run: its accountant adds it itself)."""
    from fedkd.dp.dpsgd import merged_history

    trainings = [t for t in nb.ledger.trainings(nb.federation) if t.input != without]
    return merged_history([(t.noise_multiplier, t.sample_rate, t.steps) for t in trainings])


def training_input(
    request_arrays: Mapping[str, np.ndarray],
    model_state: Mapping[str, np.ndarray] | None,
    run_config: Mapping[str, Any],
    server_round: int,
    partition: int,
) -> str:
    """Digest of everything a DP-SGD training depends on except its noise."""
    parts: list[bytes | str] = [f"round {server_round} partition {partition}"]
    ignored = {"out-dir", "run-name", "resume", "node-wait", "stage-timeout", "num-rounds"}
    parts.append(repr(sorted((k, v) for k, v in run_config.items() if k not in ignored)))
    for name, array in sorted(request_arrays.items()):
        parts += [name, np.ascontiguousarray(array).tobytes()]
    for name, array in sorted((model_state or {}).items()):
        parts += [name, np.ascontiguousarray(array).tobytes()]
    return digest(*parts)


@dataclass(frozen=True)
class Prepared:
    """A contribution ready to leave: its released values and its ledger entry."""

    values: np.ndarray  # (length,) what is summed: clipped, and noised with dp = local
    release: Release  # participants None until the secure stages name them
    noise_seed: int  # seeds distributed DP's Skellam share of this release


def prepare_release(
    nb: NodeBudget,
    node: NodeInfo,
    config: FedConfig,
    raw: np.ndarray,
    server_round: int,
    round_config: SecAggConfig | None,
) -> Prepared:
    """Clip and noise ``raw`` as the run's DP asks (noise keyed by the node's secret and the
    vector, so a repeated release repeats its noise), and check the client-level budget."""
    from fedkd.fl.privacy import client_release, release_noise

    vector = digest("contribution", np.ascontiguousarray(raw, dtype=np.float64).tobytes())
    z, q = release_noise(config, round_config, node.num_partitions)
    local_seed = nb.ledger.seed("gaussian", vector, repr((z, config.dp.clip)))
    values = client_release(config, raw, node.num_partitions, seed=local_seed)
    if round_config is None:
        encoded = digest("clear", values.tobytes())
    else:
        setting = repr((round_config.clip, round_config.bits, round_config.noise_variance))
        encoded = digest("masked", values.tobytes(), setting)
    release = Release(nb.federation, server_round, node.run_id, vector, encoded, None, 0, z, q)
    if round_config is None:  # in the clear: released as the reply leaves
        nb.ledger.check_release(release, budgeted=nb.budgeted)
    elif nb.budgeted:  # masked: the participant set is checked when the keys are known
        nb.ledger.check_round(release)
    node_budget.release_epsilon(nb.budget, nb.ledger.releases(nb.federation), release)
    return Prepared(values, release, nb.ledger.seed("skellam", encoded))


def participant_names(
    request: ShareKeysRequest,
    own: int,
    roster: Roster | None,
    authenticated: Iterable[int],
) -> dict[int, str]:
    """Node id -> name of every participant whose keys are authentic.

    With a roster, a name counts only when its keys are signed by that roster member: the
    secure-aggregation layer authenticated ``authenticated`` (this node's share holders), and
    the others' signatures are checked here. A server that adds a stranger under a member's
    name would otherwise make a set look like the one a vector was first masked for. Without
    a roster, nodes are named by their ids (the curious mode trusts the server for that).
    """
    if roster is None:
        return {k.node_id: f"node-{k.node_id}" for k in request.keys}
    trusted = {own, *authenticated}
    rest = [k for k in request.keys if k.node_id not in trusted]
    refused = auth.check_advertised(roster, rest)
    names = {k.node_id: k.identity for k in request.keys if k.node_id not in refused}
    if len(set(names.values())) != len(names):
        raise LedgerRefusal("vector", "two participants claim one roster identity")
    return names


def survivor_names(survivors: Iterable[int], names: Mapping[int, str]) -> tuple[str, ...]:
    """The survivor set by name; a survivor without an authentic name is refused."""
    unknown = sorted(set(survivors) - set(names))
    if unknown:
        raise LedgerRefusal(
            "survivors", f"survivors {unknown} are not participants with authentic keys"
        )
    return tuple(sorted(names[v] for v in survivors))
