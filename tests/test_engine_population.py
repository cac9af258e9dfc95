"""Populations drawn on demand, derived rosters, and a round whose cost is its cohort's."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkd.data.population import Population, PopulationSpec
from fedkd.engines.worker import ClientWorker
from fedkd.fl.cohort import SECAGG_PLUS_FROM, plus_neighbours, round_neighbours, threshold_for
from fedkd.fl.config import parse_run_config
from fedkd.fl.data import federated_data, public_digest
from fedkd.fl.experiment import FIRST_NODE_ID, open_run
from fedkd.fl.federation import Federation
from fedkd.fl.identities import DerivedRoster, client_identity, server_roster
from fedkd.fl.rounds import fedkd_round, secagg_round_config
from fedkd.fl.server_work import new_student
from fedkd.secagg import ClientState, SecAggConfig
from fedkd.secagg.errors import ConfigMismatch
from fedkd.secagg.identity import Roster, simulated_identities
from fedkd.secagg.protocol import ADVERTISE, serve_stage, stage_envelope
from fedkd.secagg.wire import AdvertiseRequest
from fedkd.transport import Envelope, ExchangeResult, Refusal

LABELS = np.repeat(np.arange(10), 100)  # a pool of 1,000 samples, 100 per class


# ------------------------------------------------------------------------------ population
@settings(max_examples=40, deadline=None)
@given(
    client=st.integers(0, 10**9 - 1),
    seed=st.integers(0, 2**32),
    alpha=st.floats(0.05, 10.0),
    mean=st.floats(1.0, 200.0),
    sigma=st.sampled_from([0.0, 0.5, 1.5]),
)
def test_a_shard_is_a_pure_function_of_seed_and_client(
    client: int, seed: int, alpha: float, mean: float, sigma: float
) -> None:
    spec = PopulationSpec(10**9, alpha, mean, sigma, seed)
    first, again = Population(LABELS, spec, 10), Population(LABELS, spec, 10)
    shard = first.shard(client)
    assert np.array_equal(shard, again.shard(client))  # no state: another process agrees
    assert len(shard) == first.shard_size(client) >= 1
    assert shard.min() >= 0 and shard.max() < len(LABELS)
    counts = np.bincount(LABELS[shard], minlength=10)
    assert np.array_equal(counts, first.label_counts(client))


def test_sizes_and_label_mixes_follow_their_distributions() -> None:
    clients = range(4000)
    poisson = Population(LABELS, PopulationSpec(10**6, 0.5, 40.0, 0.0, 1), 10)
    sizes = np.array([poisson.shard_size(c) for c in clients])
    assert abs(sizes.mean() - 40.0) < 0.5 and abs(sizes.var() - 40.0) < 4.0  # Poisson(40)
    heavy = Population(LABELS, PopulationSpec(10**6, 0.5, 40.0, 1.0, 1), 10)
    logs = np.log([heavy.shard_size(c) for c in clients])
    assert abs(logs.std() - 1.0) < 0.05  # log-normal sigma 1 (rounding aside)
    assert abs(logs.mean() - (math.log(40.0) - 0.5)) < 0.05  # mean 40: mu = ln 40 - 1/2
    mixes = np.array([poisson.label_mix(c) for c in clients])
    # Dirichlet(0.5, ..., 0.5) over 10 classes: each share has mean 1/10 and variance
    # (1/10)(9/10) / (10 * 0.5 + 1) = 0.015.
    assert np.allclose(mixes.mean(axis=0), 0.1, atol=0.01)
    assert np.allclose(mixes.var(axis=0), 0.09 / 6, atol=0.002)


def test_skewed_shards_hold_few_classes_and_clients_overlap() -> None:
    def dominant(alpha: float) -> float:  # median share of a client's largest class
        population = Population(LABELS, PopulationSpec(10**6, alpha, 50.0, 0.0, 2), 10)
        counts = [population.label_counts(c) for c in range(200)]
        return float(np.median([c.max() / c.sum() for c in counts]))

    assert dominant(0.05) > 0.7 > 0.3 > dominant(100.0)  # one class vs near-uniform (0.1)
    skewed = Population(LABELS, PopulationSpec(10**6, 0.05, 50.0, 0.0, 2), 10)
    shards = [set(skewed.shard(c).tolist()) for c in range(200)]
    assert any(a & b for i, a in enumerate(shards) for b in shards[i + 1 :])  # with replacement


def test_bad_population_settings_are_named() -> None:
    with pytest.raises(ValueError, match="alpha"):
        PopulationSpec(10, 0.0)
    with pytest.raises(ValueError, match="outside the population"):
        Population(LABELS, PopulationSpec(10, 1.0), 10).shard(10)
    with pytest.raises(ValueError, match="shard-size"):
        parse_run_config({"partitioner": "population", "shard-size": 0.5})


def test_a_million_clients_on_digits_cost_the_pool_only() -> None:
    config = {"partitioner": "population", "min-clients": 2}
    data = federated_data(parse_run_config(config), 10**6)
    assert data.num_partitions == 10**6 and data.parts == ()
    assert len(data.client_train(999_999)) == data.shard_size(999_999) >= 1
    open_run({**config, "out-dir": "/tmp/unused-fedkd-run"}, 10**6)  # preflight accepts it


# ------------------------------------------------------------------------------ rosters
def test_derived_roster_is_the_simulated_identities_member_by_member() -> None:
    roster = server_roster("simulated", run_id=5, num_partitions=10**12)
    assert isinstance(roster, DerivedRoster) and len(roster.keys) == 10**12
    eager = simulated_identities(b"fedkd simulated out-of-band identities v1", 5, ["0", "77"])
    for name, identity in eager.items():
        assert roster.keys[name] == identity.public_key
    identity, held = client_identity(
        "simulated", {}, run_id=5, partition_id=77, num_partitions=10**12
    )
    assert held == roster and identity is not None and identity.public_key == eager["77"].public_key
    message = b"round keys"
    assert roster.verifies("77", message, identity.sign(message))
    assert not roster.verifies("78", message, identity.sign(message))  # another member's key


@pytest.mark.parametrize("alias", ["077", "+77", " 77", "77.0", "-1", "1000000000000", "x"])
def test_a_name_outside_the_roster_is_no_member(alias: str) -> None:
    """A Sybil spelling of a member's number ("077" for "77") names nobody."""
    roster = DerivedRoster(5, 10**12)
    identity, _ = client_identity("simulated", {}, run_id=5, partition_id=77, num_partitions=100)
    assert alias not in roster.keys and not roster.verifies(alias, b"m", identity.sign(b"m"))


def test_clients_refuse_a_round_bound_to_another_roster() -> None:
    """The digest commits to the run and the size: a server that binds the round to another
    roster (another run's, a larger one, or a file listing the same keys) is refused."""
    identity, roster = client_identity(
        "simulated", {}, run_id=5, partition_id=0, num_partitions=100
    )
    assert identity is not None and roster is not None
    others = [
        DerivedRoster(6, 100),
        DerivedRoster(5, 101),
        Roster({name: roster.keys[name] for name in ("0", "1")}),
    ]
    assert len({roster.digest(), *(other.digest() for other in others)}) == 4
    for other in others:
        config = SecAggConfig(
            run_id=5, round=1, participants=(0, 1, 2), threshold=2, neighbours=2, clip=1.0,
            vector_length=4, roster_digest=other.digest(),
        )  # fmt: skip
        state = ClientState(0, identity=identity, roster=roster)
        request = stage_envelope(ADVERTISE, AdvertiseRequest(config).to_bytes(), 1)
        with pytest.raises(ConfigMismatch, match="roster digest"):
            serve_stage(state, request)


# ------------------------------------------------------------------------------ cohorts
def test_secagg_plus_from_the_cutoff_with_logarithmic_degree() -> None:
    assert round_neighbours(SECAGG_PLUS_FROM - 1, 0, 0.66) == SECAGG_PLUS_FROM - 2  # full
    degrees = [round_neighbours(n, 0, 0.66) for n in (100, 1000, 10**4, 10**6)]
    assert degrees == sorted(degrees) and degrees[-1] < 64 and all(k % 2 == 0 for k in degrees)
    assert round_neighbours(1000, 6, 0.66) == 6 and round_neighbours(5, 6, 0.66) == 4
    for n in (100, 10**6):  # the bounds the module states hold at the chosen degree
        from scipy.stats import binom

        k = plus_neighbours(n, 0.66)
        t = threshold_for(k, 0.66)
        assert n * binom.sf(t - 2, k, 0.05) < 2**-40
        assert n * binom.sf(k + 1 - t, k + 1, 0.05) < 2**-20


# ------------------------------------------------------------------------------ O(cohort)
class WorkerTransport:
    """Library clients for any population: one ClientWorker, nothing per absent node."""

    def __init__(self, run_config: Mapping[str, object], population: int, folder: str) -> None:
        self.population = population
        self.worker = ClientWorker(
            run_config, population, 0, None, folder, 1 << 20, f"{folder}/nodes"
        )

    def nodes(self) -> Sequence[int]:
        return range(FIRST_NODE_ID, FIRST_NODE_ID + self.population)

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        result = ExchangeResult()
        for node, request in requests.items():
            answer = self.worker.answer(node, request)
            if isinstance(answer.reply, Envelope):
                result.replies[node] = answer.reply
            else:
                reason = answer.reply
                result.failures[node] = reason.reason if isinstance(reason, Refusal) else reason
        return result


def test_a_secure_round_over_a_trillion_clients_costs_its_cohort(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Sampling, the roster, secure aggregation and DP bookkeeping touch the cohort only:
    a round over 10^12 registered clients (none materialised) completes in seconds."""
    population = 10**12
    run_config = {
        "partitioner": "population", "fraction": 1e-12, "min-clients": 4, "num-rounds": 1,
        "model": "mlp", "local-epochs": 1, "warmup-epochs": 0, "distill-epochs": 1,
        "eval-clients": False, "out-dir": str(tmp_path / "runs"), "shard-size": 20.0,
    }  # fmt: skip
    run = open_run(run_config, population)
    transport = WorkerTransport(run_config, population, str(tmp_path / "state"))
    roster = server_roster("simulated", run_id=0, num_partitions=population)
    digest = public_digest(run.split)
    fed = Federation(transport, run.config, run.split, run.recorder, 0, digest, roster=roster)
    outcome = fedkd_round(fed, new_student(run.config, run.split), None, 1)
    record, teacher = outcome.record, outcome.teacher
    assert record.status == "ok" and record.survivors == 4 and teacher is not None
    assert secagg_round_config(fed, 1, [1, 2, 3, 4]).roster_digest == roster.digest()
    stats = transport.worker.stats()
    assert stats.nodes_served == 4 * 5 and stats.nodes_with_state == 4  # train + 4 stages


def test_node_state_config_fields_survive_dataclass_replace() -> None:
    """The new run-config keys round-trip through the flat config (pyproject lists them)."""
    config = parse_run_config(
        {"partitioner": "population", "shard-size": 12.5, "client-device": "auto"}
    )
    again = parse_run_config(config.to_dict())
    assert dataclasses.asdict(again) == dataclasses.asdict(config)


def test_a_remembered_verification_is_bound_to_signer_message_and_signature() -> None:
    """Simulated clients of one worker share signature checks: a signature valid for one
    message, or for one signer, still fails for another after it was remembered."""
    roster = DerivedRoster(9, 1000)
    signer, _ = client_identity("simulated", {}, run_id=9, partition_id=3, num_partitions=1000)
    assert signer is not None
    good = signer.sign(b"survivors 1 2 3")
    for _ in range(2):  # first computed, then remembered
        assert roster.verifies("3", b"survivors 1 2 3", good)
        assert not roster.verifies("3", b"survivors 1 2", good)
        assert not roster.verifies("4", b"survivors 1 2 3", good)
        assert not roster.verifies("3", b"survivors 1 2 3", bytes(64))
