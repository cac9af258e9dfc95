"""The privacy budget a node keeps for itself, and what "the same federation" means to it.

A server that asks for more rounds than the run was calibrated for, or starts another run,
would spend a client's epsilon beyond its target if the budget were the server's to keep. So
each node keeps its own, in its ledger (:mod:`fedkd.fl.ledger`), per federation:

* **Federation.** A node with its operator's roster (a deployment, ``fedkd keys``) counts
  every run under that roster as one federation (``roster:<digest>``), whatever the run config
  says. A deployed node in curious mode (its operator allowed it) counts all its runs as one
  (``deployment``). A simulated node (Flower's simulation engine, or in process) is a
  partition of a simulated population: the run-config keys that decide its data and identity
  (:data:`POPULATION_KEYS`, the number of partitions, the roster mode) name its federation
  (``simulation:<digest>``); another population is other data, hence other clients.
* **Budget.** Client-level (epsilon, delta) of the teacher release, DP-SGD's (epsilon, delta)
  of local training, and the number of rounds. The operator's node config sets any of them
  (``dp-epsilon``, ``dp-delta``, ``client-dp-epsilon``, ``client-dp-delta``, ``num-rounds``);
  the rest are pinned by the first run of the federation that asks for them. A run whose own
  settings are looser (a larger epsilon, delta or round count, or no DP where the budget has
  it) is refused at its first request.
* **Spending.** Before each release the node composes its recorded releases with the new one
  (dp-accounting's PLD, at the sampling fraction the noise was calibrated for) and refuses one
  that would exceed the budget; a round beyond the budget's round count is refused too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fedkd.fl.config import FedConfig
from fedkd.fl.ledger import LedgerRefusal, Release, Training, digest

# The run-config keys that decide a simulated node's data (with the seed, its shard).
POPULATION_KEYS = (
    "dataset",
    "data-root",
    "split-private",
    "split-public",
    "split-test",
    "partitioner",
    "alpha",
    "synthetic-samples",
    "seed",
)
# Node-config keys an operator sets a budget with (the run-config keys of the same meaning).
OPERATOR_KEYS = {
    "dp-epsilon": "epsilon",
    "dp-delta": "delta",
    "client-dp-epsilon": "dpsgd_epsilon",
    "client-dp-delta": "dpsgd_delta",
    "num-rounds": "rounds",
}
BUDGET_FIELDS = ("epsilon", "delta", "dpsgd_epsilon", "dpsgd_delta", "rounds")
SLACK = 1e-6  # relative: calibration and float rounding may land a hair above a target


def simulated_federation(config: FedConfig, num_partitions: int) -> str:
    """``simulation:<digest>`` of a simulated population (see the module docstring)."""
    run = config.to_dict()
    population = {k: run[k] for k in POPULATION_KEYS}
    population["num-partitions"] = num_partitions
    population["secagg-roster"] = config.secagg.roster
    return "simulation:" + digest(json.dumps(population, sort_keys=True))[:32]


def operator_budget(node_config: Mapping[str, Any]) -> dict[str, Any]:
    """The budget components the operator set in node config (checked: numbers in range)."""
    found: dict[str, Any] = {}
    for key, name in OPERATOR_KEYS.items():
        if key not in node_config:
            continue
        value = node_config[key]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"node config '{key}' must be a number, got {value!r}") from None
        ok = number >= 1 if name == "rounds" else number > 0 and math.isfinite(number)
        if name.endswith("delta"):
            ok = 0 < number < 1
        if not ok:
            raise ValueError(f"node config '{key}' = {value!r} is out of range")
        found[name] = int(number) if name == "rounds" else number
    return found


def run_budget(
    config: FedConfig, *, client_epsilon: float | None, dpsgd_epsilon: float | None
) -> dict[str, Any]:
    """What a run asks for: its targets (or the epsilon its given noise implies, passed in)."""
    dp = config.dp
    asked: dict[str, Any] = {k: None for k in BUDGET_FIELDS}
    if dp.enabled:
        asked["epsilon"], asked["delta"] = client_epsilon, dp.delta
    if dp.client_dp_sgd:
        asked["dpsgd_epsilon"], asked["dpsgd_delta"] = dpsgd_epsilon, dp.client_delta
    if dp.enabled or dp.client_dp_sgd:
        asked["rounds"] = config.num_rounds
    return asked


def looser(asked: Mapping[str, Any], budget: Mapping[str, Any]) -> list[str]:
    """How the run's ``asked`` budget exceeds the node's ``budget`` (empty: it does not)."""
    problems = []
    for name in BUDGET_FIELDS:
        limit, wanted = budget.get(name), asked.get(name)
        if limit is None:
            continue
        if wanted is None:
            problems.append(f"the run has no {_label(name)} (this node's budget: {limit:g})")
        elif wanted > limit * (1 + SLACK):
            problems.append(f"{_label(name)} {wanted:g} > this node's {limit:g}")
    return problems


def _label(name: str) -> str:
    return {
        "epsilon": "client-level epsilon (dp-epsilon)",
        "delta": "client-level delta (dp-delta)",
        "dpsgd_epsilon": "DP-SGD epsilon (client-dp-epsilon)",
        "dpsgd_delta": "DP-SGD delta (client-dp-delta)",
        "rounds": "round count (num-rounds)",
    }[name]


def is_budgeted(budget: Mapping[str, Any]) -> bool:
    """Whether the federation has a budget (then each round is released at most once)."""
    return any(budget.get(k) is not None for k in ("epsilon", "dpsgd_epsilon", "rounds"))


def check_round(budget: Mapping[str, Any], server_round: int) -> None:
    """Refuse a round past the budget's round count."""
    rounds = budget.get("rounds")
    if rounds is not None and server_round > rounds:
        raise LedgerRefusal(
            "budget",
            f"round {server_round} is past this node's {rounds} rounds for this federation",
        )


def release_epsilon(
    budget: Mapping[str, Any], previous: Sequence[Release], new: Release
) -> float | None:
    """Client-level epsilon after ``new`` (each distinct vector counted once); refuse past the
    budget. ``None`` when the budget has no client-level component."""
    limit = budget.get("epsilon")
    if limit is None:
        return None
    if new.noise_multiplier is None:
        raise LedgerRefusal("budget", "a release without client-level noise exceeds any epsilon")
    events = {r.vector: (r.noise_multiplier, r.sampling) for r in previous if r.noise_multiplier}
    events[new.vector] = (new.noise_multiplier, new.sampling)
    epsilon = _composed_epsilon(list(events.values()), float(budget["delta"]))
    if epsilon > limit * (1 + SLACK):
        raise LedgerRefusal(
            "budget",
            f"this release would bring the client-level epsilon to {epsilon:.3f} > this node's "
            f"{limit:g} (delta {budget['delta']:g}) for this federation",
        )
    return epsilon


def training_epsilon(
    budget: Mapping[str, Any], previous: Sequence[Training], new: Training
) -> float | None:
    """DP-SGD epsilon after ``new`` (each distinct training counted once); refuse past the
    budget. ``None`` when the budget has no DP-SGD component."""
    from fedkd.dp.dpsgd import epsilon_of_history

    limit = budget.get("dpsgd_epsilon")
    if limit is None:
        return None
    entries = {t.input: t for t in previous}
    entries[new.input] = new
    history = [(t.noise_multiplier, t.sample_rate, t.steps) for t in entries.values()]
    epsilon = epsilon_of_history(history, float(budget["dpsgd_delta"]))
    if epsilon > limit * (1 + SLACK):
        raise LedgerRefusal(
            "budget",
            f"this round's DP-SGD steps would bring its epsilon to {epsilon:.3f} > this "
            f"node's {limit:g} (delta {budget['dpsgd_delta']:g}) for this federation",
        )
    return epsilon


def _composed_epsilon(events: list[tuple[float | None, float | None]], delta: float) -> float:
    import dp_accounting

    from fedkd.dp.accounting import epsilon_of, round_event

    composed = dp_accounting.ComposedDpEvent(
        [round_event(float(z or 0.0), float(q or 1.0)) for z, q in events]
    )
    return epsilon_of(composed, delta)
