"""The experiments behind docs/results.md and docs/datasets.md, at tiny sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import fedavg_reference, model_choice, split_stats


def test_split_stats_prints_every_partitioner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--clients", "5", "--alphas", "0.1", "1.0", "--seeds", "1", "--out", str(tmp_path)]
    assert split_stats.main(argv) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    by_name = {(r["partitioner"], r["alpha"]): r for r in rows}
    assert len(rows) == 7  # iid, shard, pathological once; the two Dirichlet ones per alpha
    tv = {key: row["label_tv"]["mean"] for key, row in by_name.items()}
    assert tv[("iid", None)] < tv[("dirichlet", 1.0)] < tv[("dirichlet", 0.1)]
    assert "| `dirichlet-balanced` | 0.1 |" in capsys.readouterr().out


@pytest.mark.slow
def test_fedavg_reference_runs_both_on_the_same_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The benchmark of issue 28 at a tiny size: the transcribed reference loop and fedkd's
    library FedAvg on one digits split; the gap is printed and written."""
    argv = ["--clients", "4", "--rounds", "2", "--alpha", "0.5", "--out", str(tmp_path)]
    assert fedavg_reference.main(argv) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    (run,) = result["runs"]
    assert len(run["reference"]) == len(run["fedkd"]) == 2
    assert min(run["reference"][-1], run["fedkd"][-1]) > 0.5  # both learn digits
    assert abs(run["gap"]) < 0.15  # same data, model and settings: close
    assert "gap (points)" in capsys.readouterr().out


@pytest.mark.slow
def test_model_choice_table(tmp_path: Path) -> None:
    argv = [
        *("--models", "cnn_plain", "--methods", "fedavg", "--clients", "3"),
        *("--out", str(tmp_path), "--set", "num-rounds=1", "local-epochs=1"),
    ]
    assert model_choice.main(argv) == 0
    (row,) = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert (row["method"], row["model"]) == ("fedavg", "cnn_plain") and row["mean"] > 0.1
