"""Consistency certificates against a server that reflects a client's own material (issue 25.1).

The server shows clients different survivor lists (split views) and completes each client's
certificate with what that client sent itself: its signature relabelled as its peers', its
consistency tags returned as theirs. Full SecAgg (a group below t), SecAgg+ (one client's
input, by also choosing whose shares reach the target) and the federated round with the
default run config (``secagg-roster=simulated``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedkd.secagg import attacks
from fedkd.secagg.quantize import Quantizer

D = 6


def _inputs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=4.0, size=D) for _ in range(n)]


def _qsum(inputs: list[np.ndarray], group: tuple[int, ...]) -> np.ndarray:
    quantizer = Quantizer(64.0, 32)
    return sum(
        (quantizer.encode(inputs[v], warn=False).values for v in group), np.zeros(D, np.uint64)
    )


@pytest.mark.parametrize(
    ("n", "t", "group"), [(5, 3, (0, 1)), (10, 6, (0, 1, 2, 3)), (10, 7, (0, 1, 2, 3, 4, 5))]
)
def test_reflected_certificates_full_secagg(n: int, t: int, group: tuple[int, ...]) -> None:
    plan = attacks.split_view_plan(n, t, group)
    assert plan is not None
    inputs = _inputs(n)
    run = attacks.run_attack(
        inputs,
        lambda inner: attacks.ReflectedCertificates(inner, plan),
        threshold=t,
        roster=True,
        server_roster=False,
    )
    assert run.leak.smallest == group  # the attack succeeds
    np.testing.assert_array_equal(run.recovered(), _qsum(inputs, group))


@pytest.mark.parametrize("n", [13, 25])
def test_reflected_certificates_secagg_plus_isolate_one_client(n: int) -> None:
    inputs, target = _inputs(n), 0
    run = attacks.run_attack(
        inputs,
        lambda inner: attacks.ReflectedCertificates(
            inner, plan=lambda config: attacks.sparse_isolation_plan(config, target)
        ),
        neighbours=4,
        threshold=3,
        roster=True,
        server_roster=False,
    )
    assert run.leak.smallest == (target,)
    np.testing.assert_array_equal(run.recovered(), _qsum(inputs, (target,)))


@pytest.mark.slow
def test_reflected_certificates_through_the_federated_round(tmp_path: Path) -> None:
    from fedkd.fl.config import FedConfig
    from fedkd.fl.experiment import FIRST_NODE_ID, simulate
    from fedkd.secagg.leakage import assess

    n, t = 10, 7  # the default threshold share (0.66) of 10 holders
    group = tuple(FIRST_NODE_ID + v for v in range(6))
    plan = attacks.split_view_plan(n, t, range(6))
    assert plan is not None
    views = {FIRST_NODE_ID + v: {FIRST_NODE_ID + w for w in view} for v, view in plan.items()}
    box: list[attacks.ReflectedCertificates] = []

    def attack(inner: attacks.Transport) -> attacks.Transport:
        box.append(attacks.ReflectedCertificates(inner, views))
        box[0].drive_unmask = True  # the round code of this server checks signatures itself
        return box[0]

    config = {
        **FedConfig().to_dict(),
        "num-rounds": 1,
        "local-epochs": 1,
        "warmup-epochs": 1,
        "distill-epochs": 1,
        "eval-clients": False,
        "out-dir": str(tmp_path),
        "run-name": "reflect",
    }
    assert config["secagg-roster"] == "simulated"
    simulate(config, n, wrap=attack)
    leak = assess(box[0].observed)
    assert leak.smallest == group
