"""End-to-end sanity of the continual-learning mode on tiny data (1 epoch per task)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import continual as script
from fedkd.data import ArrayDataset
from fedkd.modes.common import RESULTS_FILE, stratified_subset
from fedkd.modes.continual import METHODS, ContinualConfig, run_continual


def test_cli_reports_forgetting_per_method(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [
        "--dataset",
        "synthetic",
        "--epochs-a",
        "1",
        "--epochs-b",
        "1",
        "--seeds",
        "0",
        "1",
        "--replay-size",
        "20",
        "--out-dir",
        str(tmp_path),
    ]
    assert script.main(flags) == 0
    assert "forgetting_A" in capsys.readouterr().out
    results = json.loads((tmp_path / RESULTS_FILE).read_text())["results"]
    assert [o["method"] for o in results["after_b"]] == list(METHODS)
    assert 0.0 <= results["after_a_accuracy_a"] <= 1.0
    assert 0.0 <= results["after_a_accuracy_b"] <= 1.0
    for outcome in results["after_b"]:
        for key in ("accuracy_a", "accuracy_b", "accuracy_all", "task_aware_accuracy_a"):
            assert 0.0 <= outcome[key] <= 1.0
        assert len(outcome["per_seed_forgetting"]) == 2
        assert -1.0 <= outcome["forgetting_a"] <= 1.0
        # forgetting is defined as accuracy on A after task A minus after task B
        assert outcome["forgetting_a"] == pytest.approx(
            results["after_a_accuracy_a"] - outcome["accuracy_a"]
        )
    assert (tmp_path / "continual.png").stat().st_size > 0


def test_replay_buffer_is_stratified_and_bounded() -> None:
    data = ArrayDataset(x=np.zeros((100, 1, 2, 2), np.float32), y=np.repeat(np.arange(5), 20))
    buffer = stratified_subset(data, 10, seed=0)
    assert len(buffer) == 10
    assert np.bincount(buffer.y).tolist() == [2, 2, 2, 2, 2]
    assert len(stratified_subset(data, 3, seed=0)) == 3  # fewer than the classes: uniform draw
    assert len(stratified_subset(data, 500, seed=0)) == 100
    assert stratified_subset(data, None, seed=0) is data


def test_overlapping_tasks_are_refused(tmp_path: Path) -> None:
    config = ContinualConfig(dataset="synthetic", task_a_classes=(0, 1), task_b_classes=(1, 2))
    with pytest.raises(ValueError, match="disjoint"):
        run_continual(config, tmp_path)
