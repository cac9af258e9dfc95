"""End-to-end sanity of the linear-probe mode on tiny data (1 epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from experiments import probes as script
from fedkd.modes.common import RESULTS_FILE
from fedkd.modes.probes import pool_to_dim


def test_cli_probes_every_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = [
        "--dataset",
        "synthetic",
        "--teacher-epochs",
        "1",
        "--student-epochs",
        "1",
        "--low-label-size",
        "60",
        "--validation-size",
        "40",
        "--seeds",
        "0",
        "1",
        "--probe-train-size",
        "60",
        "--probe-max-iter",
        "50",
        "--max-probe-dim",
        "64",
        "--teacher-kwargs",
        '{"channels": [8, 16], "hidden": 16}',
        "--student-kwargs",
        '{"channels": [4, 4], "hidden": 8}',
        "--out-dir",
        str(tmp_path),
    ]
    assert script.main(flags) == 0
    assert "alone_student" in capsys.readouterr().out
    results = json.loads((tmp_path / RESULTS_FILE).read_text())["results"]
    assert set(results["model_accuracies"]) == {"teacher", "kd_student", "alone_student"}
    probes = results["probes"]
    # conv1, conv2, fc for each of the three models
    assert [(p["model"], p["feature"]) for p in probes[:3]] == [
        ("teacher", "conv1"),
        ("teacher", "conv2"),
        ("teacher", "fc"),
    ]
    assert len(probes) == 9
    for probe in probes:
        assert 0.0 <= probe["accuracy"]["mean"] <= 1.0 and probe["accuracy"]["n"] == 2
        assert 0.0 < probe["depth"] <= 1.0
        assert 0 < probe["dim"] <= 64
    assert 0.0 <= results["input_accuracy"]["mean"] <= 1.0
    assert all(0.0 <= a["mean"] <= 1.0 for a in results["model_accuracies"].values())
    assert (tmp_path / "probes.png").stat().st_size > 0


def test_pool_to_dim_bounds_conv_features() -> None:
    conv = torch.ones(2, 16, 8, 8)
    assert pool_to_dim(conv, 256).shape == (2, 256)  # 16 channels x 4x4
    assert pool_to_dim(conv, 8).shape == (2, 16)  # more channels than allowed: global pool
    assert pool_to_dim(conv, 4096).shape == (2, 1024)  # small enough: unchanged
    assert pool_to_dim(torch.ones(2, 300), 10).shape == (2, 300)  # vectors are not pooled
