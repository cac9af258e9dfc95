"""server.strategy: fedkd's rounds as a Flower strategy (``FedKD(...).start(grid=grid)``).

fedkd's own ServerApp is that strategy, so every Flower run (``tests/test_e2e_flwr.py``, the
deployments) drives ``start``; here: the settings it takes and the ``Result`` it returns.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedkd.engines import run_federation
from server.strategy import FedKD, flower_result

TINY = {"num-rounds": 2, "local-epochs": 1, "warmup-epochs": 1, "distill-epochs": 1}


def test_settings_are_run_config_keys_checked_before_any_message() -> None:
    strategy = FedKD({"method": "fedavg", "num-rounds": 4}, local_epochs=3, num_rounds=2)
    assert strategy.run_config == {"method": "fedavg", "num-rounds": 2, "local-epochs": 3}
    assert strategy.config.num_rounds == 2 and strategy.results is None
    with pytest.raises(ValueError, match="'teacher-rule' = 'vote'"):
        FedKD(teacher_rule="vote")
    with pytest.raises(ValueError, match="unknown run config key 'rounds'"):
        FedKD(rounds=3)


def test_a_run_becomes_flowers_result(tmp_path: Path) -> None:
    recorder = run_federation({**TINY, "out-dir": str(tmp_path)}, 3, engine="inprocess")
    result = flower_result(recorder)
    assert sorted(result.evaluate_metrics_serverapp) == [1, 2]
    last = result.evaluate_metrics_serverapp[2]
    assert last["student_accuracy"] == pytest.approx(recorder.rows[-1].student_accuracy)
    assert "dp_epsilon" not in last  # NaN without DP: left out, not sent as NaN
    assert result.train_metrics_clientapp[1]["survivors"] == 3.0
    student = torch.load(recorder.path / "student.pt", weights_only=True)
    arrays = result.arrays.to_torch_state_dict()
    assert arrays.keys() == student.keys()
    assert all(torch.equal(arrays[name], student[name]) for name in student)
