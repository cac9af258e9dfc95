"""The real thing: ``flwr run`` with a local SuperLink, Ray-simulated SuperNodes, our app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedkd.cli.launch import LAUNCH_TAG, flwr_run
from fedkd.cli.processes import tagged_processes

pytestmark = pytest.mark.slow


def test_flwr_run_secure_and_plaintext(tmp_path: Path) -> None:
    common = {
        "num-rounds": 2,
        "local-epochs": 1,
        "warmup-epochs": 0,
        "distill-epochs": 3,
        "out-dir": str(tmp_path / "runs"),
        "secagg-bits": 40,  # the secure teacher must equal the plaintext one to 1e-5
    }
    secure = flwr_run({**common, "run-name": "secure"}, num_supernodes=4, echo=False, timeout=900)
    assert secure.ok and secure.status == "finished:completed", secure.cause
    assert secure.results is not None and secure.cause == "" and secure.tag
    # only this launch's processes: another test worker's launch is not this one's
    assert not tagged_processes(LAUNCH_TAG, secure.tag), "the launch must stop every process"
    assert secure.flwr_home is not None and not secure.flwr_home.exists()
    plain = flwr_run(
        {**common, "run-name": "plain", "secagg": False}, num_supernodes=4, echo=False, timeout=900
    )
    assert plain.ok and plain.results is not None, plain.cause
    assert plain.ports != secure.ports  # each launch picks its own free ports

    history = json.loads((secure.results / "history.json").read_text())
    assert [row["survivors"] for row in history] == [4, 4]
    assert history[-1]["student_accuracy"] > 0.5  # ~0.1 before the first round
    assert history[-1]["bytes_up"] > 0 and history[-1]["seconds"] > 0
    first, second = (np.load(run.results / "teachers" / "round-001.npy") for run in (secure, plain))
    np.testing.assert_allclose(first, second, atol=1e-5)
    # Round 2 starts from students distilled on teachers 1e-7 apart (FedDF pushes them), and
    # training amplifies that: the same teacher up to a few public samples.
    a, b = (np.load(run.results / "teachers" / "round-002.npy") for run in (secure, plain))
    assert np.mean(a.argmax(1) == b.argmax(1)) > 0.9
    # The same round as library code in this process (no Flower, no Ray): the same teachers
    # and the same student, so what the in-process tests check is what Flower runs.
    from fedkd.fl.config import FedConfig
    from fedkd.fl.experiment import simulate

    library = simulate({**FedConfig().to_dict(), **common, "run-name": "library"}, 4)
    for name in ("round-001.npy", "round-002.npy"):
        np.testing.assert_allclose(
            np.load(library.path / "teachers" / name),
            np.load(secure.results / "teachers" / name),
            atol=1e-6,
        )
    assert library.rows[-1].student_accuracy == history[-1]["student_accuracy"]
