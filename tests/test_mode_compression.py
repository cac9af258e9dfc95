"""The compression mode: transfer sets, the T sweep, hints, gap closed with seeds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments import compression as script
from fedkd.data import ArrayDataset
from fedkd.distill.terms import UNLABELLED
from fedkd.modes.common import RESULTS_FILE, add_config_arguments, config_from_args
from fedkd.modes.compression import (
    CompressionConfig,
    gap_closed,
    resolve_teacher,
    run_compression,
)
from fedkd.modes.students import make_transfer_set

TINY_FLAGS = [
    "--dataset", "synthetic", "--teacher-epochs", "1", "--student-epochs", "2",
    "--low-label-size", "30", "--validation-size", "40", "--temperatures", "1", "4",
    "--seeds", "0", "1", "--latency-repeats", "2", "--latency-batch-size", "16",
    "--epoch-samples", "0", "--student-kwargs", '{"channels": [4, 4], "hidden": 8}',
    "--teacher-kwargs", '{"channels": [8, 16], "hidden": 16}',
]  # fmt: skip


def test_cli_writes_results_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert script.main([*TINY_FLAGS, "--out-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "kd_hint_T4" in printed and "gap closed" in printed and "identical-copy" in printed
    results = json.loads((tmp_path / RESULTS_FILE).read_text())["results"]
    names = [(m["setting"], m["method"]) for m in results["methods"]]
    methods = ["alone", "kd_T1", "kd_T4", "kd_hint_T4"]
    assert names == [(s, m) for s in ("hinton", "low_label") for m in methods]
    for m in results["methods"]:
        acc = m["accuracy"]
        assert acc["n"] == 2 and len(acc["values"]) == 2
        assert acc["ci_low"] <= acc["mean"] <= acc["ci_high"]
        assert acc["std"] == pytest.approx(float(np.std(acc["values"], ddof=1)))
        assert 1 <= m["best_epoch"]["mean"] <= 2
    alone = [m for m in results["methods"] if m["method"] == "alone"]
    assert all(m["gain_over_alone"]["mean"] == 0.0 and m["gap_closed"] is None for m in alone)
    # synthetic: 1,200 private rows, 10% held out (above --validation-size 40), 400 public rows
    assert results["validation_rows"] == 120
    assert results["labelled"] == {"hinton": 1080, "low_label": 30}
    assert results["transfer_size"] == {"hinton": 1480, "low_label": 1480}
    assert results["hint_features"] == ["fc", "fc"]  # the small CNN's last hidden state
    soft = {(q["data"], q["temperature"]): q for q in results["soft_targets"]}
    assert sorted(soft) == [("test", 1.0), ("test", 4.0), ("train", 1.0), ("train", 4.0)]
    for data in ("train", "test"):  # softmax(z / T) flattens as T grows
        cold, warm = soft[(data, 1.0)], soft[(data, 4.0)]
        assert cold["top_probability"]["mean"] >= warm["top_probability"]["mean"]
        assert 0 <= cold["entropy"]["mean"] <= warm["entropy"]["mean"] <= np.log(10) + 1e-9
    assert soft[("test", 1.0)]["accuracy"]["values"] == results["teacher_accuracy"]["values"]
    teacher, student = results["footprints"]
    assert teacher["parameters"] > student["parameters"] and teacher["flops"] > student["flops"]
    assert results["latency"]["control_ratio"] > 0
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    capsys.readouterr()
    assert script.main(["table", str(tmp_path / RESULTS_FILE)]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| hinton") or
            line.startswith("| low_label")]  # fmt: skip
    assert len(rows) == 8 and "| kd_hint_T4 |" in rows[-1]
    assert f"{results['teacher_accuracy']['mean']:.4f} ± " in table
    assert f"| student | {student['parameters']:,} |" in table


def test_transfer_sets_label_a_stratified_subset() -> None:
    pool = ArrayDataset(
        x=np.random.rand(100, 1, 2, 2).astype(np.float32), y=np.repeat(np.arange(5), 20)
    )
    public = ArrayDataset(x=np.random.rand(30, 1, 2, 2).astype(np.float32), y=np.zeros(30, int))
    low = make_transfer_set(pool, public, labelled_size=10, transfer="private", seed=0)
    assert len(low.x) == 100 and low.num_labelled == 10
    assert np.bincount(low.labelled().y).tolist() == [2] * 5
    assert np.all((low.labels == UNLABELLED) | (low.labels == pool.y))
    both = make_transfer_set(pool, public, labelled_size=10, transfer="private+public", seed=0)
    assert len(both.x) == 130 and both.num_labelled == 10
    only = make_transfer_set(pool, public, labelled_size=10, transfer="labelled", seed=0)
    assert len(only.x) == 10 and only.num_labelled == 10
    full = make_transfer_set(pool, public, labelled_size=None, transfer="private", seed=0)
    assert full.num_labelled == 100
    with pytest.raises(ValueError, match="transfer set"):
        make_transfer_set(pool, public, labelled_size=10, transfer="public", seed=0)


def test_gap_closed_share_and_guard() -> None:
    assert gap_closed(0.9, 0.8, 1.0) == pytest.approx(0.5)
    assert gap_closed(0.7, 0.8, 1.0) == pytest.approx(-0.5)
    with pytest.warns(UserWarning, match="gap"):
        assert gap_closed(0.9, 0.9, 0.901) is None


def test_unknown_hint_feature_and_setting_are_named(tmp_path: Path) -> None:
    config = CompressionConfig(
        dataset="synthetic", teacher_epochs=0, student_epochs=0, seeds=(0,),
        hint_student_feature="conv9", validation_size=40,
        teacher_kwargs={"channels": [4], "hidden": 4},
    )  # fmt: skip
    with pytest.raises(ValueError, match="conv9.*conv1, conv2, conv3, fc"):
        run_compression(config, tmp_path)
    with pytest.raises(ValueError, match="settings"):
        run_compression(CompressionConfig(dataset="synthetic", settings=("big",)), tmp_path)


def test_cli_reports_bad_model_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--dataset", "synthetic", "--student-model", "nope", "--out-dir", str(tmp_path)]
    assert script.main(flags) == 2
    assert "nope" in capsys.readouterr().err


def test_flags_map_onto_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, CompressionConfig)
    args = parser.parse_args(
        ["--hint-temperature", "none", "--seeds", "3", "4", "--download", "--teacher-kwargs",
         '{"channels": [4]}', "--alpha", "0.5", "--temperatures", "2", "8"]
    )  # fmt: skip
    config = config_from_args(CompressionConfig, args)
    assert config.hint_temperature is None and config.seeds == (3, 4) and config.download
    assert config.teacher_kwargs == {"channels": [4]} and config.alpha == 0.5
    assert [m.name for m in config.methods()] == ["alone", "kd_T2", "kd_T8"]
    assert config.low_label_size == CompressionConfig().low_label_size  # untouched default
    with pytest.raises(SystemExit):
        parser.parse_args(["--teacher-kwargs", "[1, 2]"])  # not a JSON object


def test_table_refuses_an_unfinished_run(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    path.write_text(json.dumps({"config": {}, "results": {"stage": "seed 0"}}))
    with pytest.raises(ValueError, match="unfinished"):
        script.print_tables([str(path)])
    assert script.main(["table"]) == 2


def test_default_student_is_a_compression_of_the_cpu_teacher() -> None:
    from fedkd.models import build_model, count_parameters
    from fedkd.modes.latency import count_flops

    config = CompressionConfig()
    shape = (1, 28, 28)
    teacher = build_model(resolve_teacher("auto", "cpu"), input_shape=shape, num_classes=10)
    student = build_model(
        config.student_model, input_shape=shape, num_classes=10, **config.student_kwargs
    )
    batch = torch.zeros(2, *shape)
    assert count_parameters(teacher) > 20 * count_parameters(student)
    assert count_flops(teacher, batch) > 10 * count_flops(student, batch)


def test_auto_teacher_is_the_larger_resnet_only_on_a_gpu() -> None:
    assert resolve_teacher("auto", "cpu") == "cnn"
    assert resolve_teacher("mobilenet_v2", "cpu") == "mobilenet_v2"
    assert CompressionConfig().teacher_model == "auto"
