"""Multi-task RKD mode: task labels, structure metric, training step, tiny end-to-end run."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from experiments.rkd import main
from fedkd.models import build_model
from fedkd.modes.rkd import (
    MultiTaskNet,
    RkdConfig,
    available_tasks,
    distance_correlation,
    register_task,
    task_labels,
    train_multitask,
)


def test_task_labels() -> None:
    y = np.arange(10, dtype=np.int64)
    labels = task_labels(("class", "parity", "greater_than_4"), y, 10)
    np.testing.assert_array_equal(labels["class"], y)
    np.testing.assert_array_equal(labels["parity"], [0, 1, 0, 1, 0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(labels["greater_than_4"], [0] * 5 + [1] * 5)
    with pytest.raises(KeyError, match="parity"):
        task_labels(("colour",), y, 10)
    with pytest.raises(ValueError, match="already registered"):
        register_task("parity", lambda labels, k: (labels % 2, 2))
    assert {"class", "parity", "greater_than_4"} <= set(available_tasks())


def test_distance_correlation() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 5))
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    pearson, spearman = distance_correlation(a, 3.0 * a @ rotation + 1.0)  # same geometry
    assert pearson == pytest.approx(1.0) and spearman == pytest.approx(1.0)
    pearson, spearman = distance_correlation(a, rng.normal(size=(30, 5)))  # unrelated
    assert abs(pearson) < 0.3 and abs(spearman) < 0.3


@pytest.mark.parametrize("target", ["concat", "per_head"])
def test_rkd_terms_vanish_for_an_identical_teacher(target: str) -> None:
    torch.manual_seed(0)
    heads = {"class": 4, "parity": 2}
    trunk = build_model("mlp", input_shape=(1, 3, 3), num_classes=6, hidden=(8,))
    student = MultiTaskNet(trunk, 6, heads)
    twin = copy.deepcopy(student)
    other = MultiTaskNet(build_model("mlp", input_shape=(1, 3, 3), num_classes=6), 6, heads)
    x = torch.rand(20, 1, 3, 3).numpy()
    labels = task_labels(("class", "parity"), np.arange(20) % 4, 4)
    config = RkdConfig(epochs=1, batch_size=10, lr=0.0, rkd_target=target, device="cpu")
    val = (x[:5], labels["class"][:5])
    kwargs = {"config": config, "seed": 0, "validation": val}
    alone = train_multitask(student, x, labels, **kwargs).losses  # type: ignore[arg-type]
    with_twin = train_multitask(student, x, labels, teacher=twin, **kwargs).losses  # type: ignore[arg-type]
    with_other = train_multitask(student, x, labels, teacher=other, **kwargs).losses  # type: ignore[arg-type]
    assert with_twin[0] == pytest.approx(alone[0], abs=1e-5)
    assert with_other[0] > alone[0] + 1e-3


def test_rkd_mode_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "rkd"
    code = main(
        [
            "--out",
            str(out),
            "--epochs",
            "2",
            "--num-structure",
            "60",
            "--teacher-channels",
            "8",
            "16",
            "--student-channels",
            "4",
            "8",
            "--tasks",
            "class",
            "parity",
            "--seeds",
            "0",
            "1",
            "--patience",
            "1",
        ]
    )
    assert code == 0
    assert "student_rkd" in capsys.readouterr().out
    payload = json.loads((out / "results.json").read_text())
    results = payload["results"]
    assert results["tasks"] == ["class", "parity"] and results["num_structure"] == 60
    assert results["teacher"]["distance_pearson"]["values"] == pytest.approx([1.0, 1.0])
    for name in ("teacher", "student_task", "student_rkd"):
        report = results[name]
        assert set(report["accuracy"]) == {"class", "parity"}
        assert all(0.0 <= a["mean"] <= 1.0 and a["n"] == 2 for a in report["accuracy"].values())
        assert -1.0 <= report["distance_pearson"]["mean"] <= 1.0 + 1e-9
        assert -1.0 <= report["distance_spearman"]["mean"] <= 1.0 + 1e-9
    assert results["student_task"]["parameters"] == results["student_rkd"]["parameters"]
    assert results["student_rkd"]["parameters"] < results["teacher"]["parameters"]
    for plot in ("task_accuracy.png", "distance_structure.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rkd_mode_rejects_unknown_target(tmp_path) -> None:
    with pytest.raises(ValueError, match="per_head"):
        main(["--out", str(tmp_path), "--rkd-target", "embedding"])
