"""Runs in TensorBoard (and MLflow / W&B when installed): what is written is what history says."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fedkd.cli.commands import run_main
from fedkd.fl.config import FedConfig, parse_run_config
from fedkd.fl.experiment import simulate
from fedkd.fl.history import RoundRecord, RunRecorder
from fedkd.fl.preflight import preflight
from fedkd.tracking import SCALARS, parse_log


def tiny(tmp_path: Path, name: str, **overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        **FedConfig().to_dict(),
        "model": "mlp",
        "num-rounds": 2,
        "local-epochs": 1,
        "warmup-epochs": 0,
        "distill-epochs": 1,
        "out-dir": str(tmp_path),
        "run-name": name,
    }
    config.update(overrides)
    return config


def events(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's event files, by tag: (step, value) in step order."""
    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def assert_events_are_history(run: Path) -> dict[str, list[tuple[int, float]]]:
    history = json.loads((run / "history.json").read_text())
    logged = events(run)
    for tag, name in SCALARS:
        expected = [(row["round"], row[name]) for row in history if row[name] is not None]
        expected = [(step, v) for step, v in expected if math.isfinite(v)]
        got = logged.get(tag, [])
        assert [s for s, _ in got] == [s for s, _ in expected], tag
        # event files hold float32
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6), tag
    return logged


def test_a_federated_run_writes_its_history_as_tensorboard_scalars(tmp_path: Path) -> None:
    recorder = simulate(tiny(tmp_path, "tb"), num_clients=3)
    logged = assert_events_are_history(recorder.path)
    for tag in ("accuracy/student", "accuracy/clients_min", "bytes/up", "seconds/secagg"):
        assert [step for step, _ in logged[tag]] == [1, 2]
    assert not any(tag.startswith("dp/") for tag in logged)  # dp = off: no epsilon


def test_central_dp_logs_epsilon_per_round(tmp_path: Path) -> None:
    config = tiny(tmp_path, "dp", **{"dp": "central", "dp-noise-multiplier": 1.0})
    recorder = simulate(config, num_clients=3)
    logged = assert_events_are_history(recorder.path)
    epsilon = [value for _, value in logged["dp/epsilon"]]
    assert len(epsilon) == 2 and 0 < epsilon[0] < epsilon[1]  # spent, and growing


def test_log_none_writes_no_events(tmp_path: Path) -> None:
    recorder = simulate(tiny(tmp_path, "off", log="none", **{"num-rounds": 1}), num_clients=2)
    assert (recorder.path / "history.json").is_file()
    assert not (recorder.path / "tensorboard").exists()


def test_a_resumed_run_appends_to_the_same_events(tmp_path: Path) -> None:
    first = RunRecorder(tmp_path, "resumed", {"method": "fedkd"}, log="tensorboard")
    first.add(RoundRecord(round=1, method="fedkd", student_accuracy=0.5, bytes_up=10))
    first.close()
    again = RunRecorder.reopen(first.path, log="tensorboard")
    again.add(RoundRecord(round=2, method="fedkd", student_accuracy=0.75, bytes_up=20))
    again.close()
    assert len(list((first.path / "tensorboard").iterdir())) == 2  # one event file per process
    logged = events(first.path)
    assert logged["accuracy/student"] == [(1, 0.5), (2, 0.75)]
    assert logged["bytes/up"] == [(1, 10.0), (2, 20.0)]


@pytest.mark.parametrize(
    ("value", "names"),
    [("tensorboard", ("tensorboard",)), ("none", ()), (" mlflow , wandb ", ("mlflow", "wandb"))],
)
def test_log_values(value: str, names: tuple[str, ...]) -> None:
    assert parse_log(value) == names


@pytest.mark.parametrize("value", ["tensorbord", "none,mlflow", ""])
def test_bad_log_values_name_the_key(value: str) -> None:
    with pytest.raises(ValueError, match="run config 'log'"):
        parse_run_config({"log": value})


def hide(monkeypatch: pytest.MonkeyPatch, *packages: str) -> None:
    """Make ``packages`` look not installed, whether or not they are."""
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name in packages else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("package", ["mlflow", "wandb"])
def test_a_missing_tracker_fails_before_the_run(
    package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide(monkeypatch, package)
    with pytest.raises(ValueError, match=f"not installed: pip install {package}$"):
        preflight(tiny(tmp_path, "x", log=f"tensorboard,{package}"), num_clients=2)
    assert not (tmp_path / "x").exists()


def test_fedkd_run_log_flag_checks_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hide(monkeypatch, "wandb")
    code = run_main(["--clients", "2", "--log", "wandb", "--out", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.strip().endswith("pip install wandb")
    assert not any(tmp_path.iterdir())


def test_mlflow_when_installed_logs_the_rows_and_resumes_its_run(tmp_path: Path) -> None:
    tracking = pytest.importorskip("mlflow.tracking")
    first = RunRecorder(tmp_path, "ml", {"method": "fedkd"}, log="mlflow")
    first.add(RoundRecord(round=1, method="fedkd", student_accuracy=0.5, dp_epsilon=1.25))
    first.close()
    again = RunRecorder.reopen(first.path, log="mlflow")
    again.add(RoundRecord(round=2, method="fedkd", student_accuracy=0.75, dp_epsilon=2.5))
    again.close()
    run_id = json.loads((first.path / "tracking.json").read_text())["mlflow_run_id"]
    client = tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    history = client.get_metric_history(run_id, "dp/epsilon")
    assert [(m.step, m.value) for m in history] == [(1, 1.25), (2, 2.5)]
    assert client.get_run(run_id).data.params == {"method": "fedkd"}
