"""The real thing: ``flwr run`` with a local SuperLink, Ray-simulated SuperNodes, our app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments.launch import flwr_run, superlink_running

pytestmark = pytest.mark.slow


@pytest.fixture
def flower_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Own Flower home and ports: never touch a SuperLink the developer has running.
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    monkeypatch.setenv("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39291")
    monkeypatch.setenv("FLWR_LOCAL_CONTROL_API_PORT", "39293")
    return tmp_path


def test_flwr_run_secure_and_plaintext(flower_home: Path) -> None:
    common = {
        "num-rounds": 2,
        "local-epochs": 1,
        "warmup-epochs": 0,
        "distill-epochs": 3,
        "out-dir": str(flower_home / "runs"),
    }
    secure = flwr_run({**common, "run-name": "secure"}, num_supernodes=4, echo=False, timeout=900)
    assert secure.returncode == 0 and secure.results is not None
    assert not superlink_running(), "the launcher must stop the SuperLink it started"
    plain = flwr_run(
        {**common, "run-name": "plain", "secagg": False}, num_supernodes=4, echo=False, timeout=900
    )
    assert plain.returncode == 0 and plain.results is not None

    history = json.loads((secure.results / "history.json").read_text())
    assert [row["survivors"] for row in history] == [4, 4]
    assert history[-1]["student_accuracy"] > 0.5  # ~0.1 before the first round
    assert history[-1]["bytes_up"] > 0 and history[-1]["seconds"] > 0
    for name in ("round-001.npy", "round-002.npy"):
        np.testing.assert_allclose(
            np.load(secure.results / "teachers" / name),
            np.load(plain.results / "teachers" / name),
            atol=1e-5,
        )
