"""End-to-end sanity of the compression mode on tiny data (1-2 epochs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from experiments import compression as script
from fedkd.modes.common import RESULTS_FILE, add_config_arguments, config_from_args
from fedkd.modes.compression import STUDENT_METHODS, CompressionConfig, gap_closed, run_compression

TINY_FLAGS = [
    "--dataset",
    "synthetic",
    "--teacher-epochs",
    "1",
    "--student-epochs",
    "1",
    "--student-train-size",
    "60",
    "--seeds",
    "0",
    "1",
    "--latency-repeats",
    "2",
    "--latency-batch-size",
    "16",
    "--student-kwargs",
    '{"hidden": [8]}',
    "--teacher-kwargs",
    '{"channels": [8, 16], "hidden": 16}',
]


def test_cli_writes_results_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert script.main([*TINY_FLAGS, "--out-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "kd_hint" in printed and "gap closed" in printed
    payload = json.loads((tmp_path / RESULTS_FILE).read_text())
    config, results = payload["config"], payload["results"]
    assert config["seeds"] == [0, 1] and config["student_kwargs"] == {"hidden": [8]}
    assert [s["name"] for s in results["students"]] == list(STUDENT_METHODS)
    for model in [results["teacher"], *results["students"]]:
        assert 0.0 <= model["accuracy_mean"] <= 1.0
        assert all(0.0 <= a <= 1.0 for a in model["accuracies"])
        assert model["parameters"] > 0 and model["size_bytes"] > 0 and model["latency_ms"] > 0
    assert len(results["students"][0]["accuracies"]) == 2
    assert results["teacher"]["parameters"] > results["students"][0]["parameters"]
    assert results["compression_ratio"] > 1.0
    assert results["hint_teacher_feature"] == "conv2" and results["hint_student_feature"] == "fc1"
    for key in ("kd_gap_closed", "kd_hint_gap_closed"):
        assert results[key] is None or isinstance(results[key], float)
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    assert (tmp_path / "tradeoff.png").stat().st_size > 0


def test_gap_closed_share_and_guard() -> None:
    assert gap_closed(0.9, 0.8, 1.0) == pytest.approx(0.5)
    assert gap_closed(0.7, 0.8, 1.0) == pytest.approx(-0.5)
    with pytest.warns(UserWarning, match="gap"):
        assert gap_closed(0.9, 0.9, 0.901) is None


def test_unknown_hint_feature_is_named(tmp_path: Path) -> None:
    config = CompressionConfig(
        dataset="synthetic",
        teacher_epochs=0,
        student_epochs=0,
        seeds=(0,),
        hint_student_feature="conv9",
        teacher_kwargs={"channels": [4], "hidden": 4},
    )
    with pytest.raises(ValueError, match="conv9.*fc1"):
        run_compression(config, tmp_path)


def test_cli_reports_bad_model_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--dataset", "synthetic", "--student-model", "nope", "--out-dir", str(tmp_path)]
    assert script.main(flags) == 2
    assert "nope" in capsys.readouterr().err


def test_flags_map_onto_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, CompressionConfig)
    args = parser.parse_args(
        [
            "--student-train-size",
            "none",
            "--seeds",
            "3",
            "4",
            "--download",
            "--teacher-kwargs",
            '{"channels": [4]}',
            "--alpha",
            "0.5",
        ]
    )
    config = config_from_args(CompressionConfig, args)
    assert config.student_train_size is None and config.seeds == (3, 4) and config.download
    assert config.teacher_kwargs == {"channels": [4]} and config.alpha == 0.5
    assert config.temperature == CompressionConfig().temperature  # untouched default
    with pytest.raises(SystemExit):
        parser.parse_args(["--teacher-kwargs", "[1, 2]"])  # not a JSON object
