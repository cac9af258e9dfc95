"""The continual-learning mode: Split tasks, both scenarios, accuracy matrix and forgetting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import continual as script
from fedkd.data import ArrayDataset
from fedkd.modes.common import RESULTS_FILE, stratified_subset
from fedkd.modes.continual import (
    METHODS,
    ContinualConfig,
    _masks,
    average_forgetting,
    run_continual,
)


def test_cli_reports_matrix_accuracy_and_forgetting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [
        "--dataset",
        "synthetic",
        "--tasks",
        "0,1",
        "2,3",
        "4,5",
        "--epochs",
        "1",
        "--seeds",
        "0",
        "1",
        "--replay-per-task",
        "10",
        "--model-kwargs",
        '{"hidden": [16]}',
        "--out-dir",
        str(tmp_path),
    ]
    assert script.main(flags) == 0
    printed = capsys.readouterr().out
    assert "forgetting" in printed and "published" in printed
    results = json.loads((tmp_path / RESULTS_FILE).read_text())["results"]
    assert results["tasks"] == [[0, 1], [2, 3], [4, 5]]
    outcomes = results["outcomes"]
    assert [(o["scenario"], o["method"]) for o in outcomes] == [
        (s, m) for s in ("task", "class") for m in METHODS
    ]
    for outcome in outcomes:
        matrix = np.array(outcome["accuracy_matrix"])
        assert matrix.shape == (3, 3) and np.all((matrix >= 0) & (matrix <= 1))
        assert outcome["average_accuracy"]["n"] == 2
        assert outcome["average_accuracy"]["mean"] == pytest.approx(matrix[-1].mean())
        assert outcome["forgetting"]["ci_low"] <= outcome["forgetting"]["mean"]
    # class-incremental fine-tuning forgets the first task
    finetune = next(o for o in outcomes if o["scenario"] == "class" and o["method"] == "finetune")
    matrix = np.array(finetune["accuracy_matrix"])
    assert matrix[-1, 0] < matrix[0, 0] and finetune["forgetting"]["mean"] > 0
    assert (tmp_path / "continual.png").stat().st_size > 0


def test_average_forgetting_is_the_drop_from_the_best_earlier_accuracy() -> None:
    matrix = np.array([[0.9, 0.0, 0.0], [0.7, 0.95, 0.0], [0.5, 0.85, 0.99]])
    assert average_forgetting(matrix) == pytest.approx(((0.9 - 0.5) + (0.95 - 0.85)) / 2)
    assert average_forgetting(np.array([[0.8]])) == 0.0


def test_task_masks_allow_each_rows_own_task() -> None:
    mask = _masks(np.array([0, 3, 2]), [(0, 1), (2, 3)], 4)
    assert mask.tolist() == [
        [True, True, False, False],
        [False, False, True, True],
        [False, False, True, True],
    ]


def test_replay_buffer_is_stratified_and_bounded() -> None:
    data = ArrayDataset(x=np.zeros((100, 1, 2, 2), np.float32), y=np.repeat(np.arange(5), 20))
    buffer = stratified_subset(data, 10, seed=0)
    assert len(buffer) == 10
    assert np.bincount(buffer.y).tolist() == [2, 2, 2, 2, 2]
    assert len(stratified_subset(data, 500, seed=0)) == 100


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("tasks", ("0,1", "1,2"), "disjoint"),
        ("tasks", ("0,1",), "two or more"),
        ("tasks", ("a,b", "2"), "comma-separated"),
        ("methods", ("ewc",), "ewc"),
        ("scenarios", ("domain",), "domain"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, field: str, value: object, match: str) -> None:
    config = ContinualConfig(dataset="synthetic", **{field: value})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=match):
        run_continual(config, tmp_path)
