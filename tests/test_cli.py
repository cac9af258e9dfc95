"""The ``fedkd`` command: bad input fails at once with exit code 2, naming the key."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import compare
from fedkd.cli import commands, run_config
from fedkd.cli.commands import main, parse_assignments, print_summary, resume_overrides
from fedkd.fl.config import FedConfig

PROJECT_ROOT = APP = Path(__file__).resolve().parent.parent


def test_unknown_key_fails_fast_as_a_real_command() -> None:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "fedkd.cli", "run", "--set", "num-round=3"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    seconds = time.perf_counter() - start
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "'num-round'" in lines[0] and "num-rounds" in lines[0]
    assert "SuperLink" not in done.stdout  # nothing was started
    assert seconds < 60, f"took {seconds:.1f} s"  # measured ~0.3 s; a loose bound for CI


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("teacher-rule=median", "teacher-rule"),
        ("model=transformer", "model"),
        ("num-rounds=abc", "num-rounds"),
        ("fraction=2.0", "fraction"),
    ],
)
def test_bad_value_fails_before_anything_starts(
    setting: str, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--set", setting]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no `flwr run` line: nothing started
    message = captured.err.strip()
    assert "\n" not in message and f"'{named}'" in message


def test_missing_data_and_too_many_clients_are_caught_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nowhere = tmp_path / "nowhere"
    assert main(["run", "--set", "dataset=idx", f"data-root={nowhere}"]) == 2
    assert str(nowhere) in capsys.readouterr().err
    assert main(["run", "--clients", "5000"]) == 2  # digits has ~1,000 private samples
    assert "5000 clients" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--set", "no-equals-sign"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["run", "--clients", "0"]) == 2
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_parse_assignments_types() -> None:
    parsed = parse_assignments(["a=1", "b=0.5", "c=true", "d=False", "e=cnn", "f=x=y", "g="])
    assert parsed == {"a": 1, "b": 0.5, "c": True, "d": False, "e": "cnn", "f": "x=y", "g": ""}


def test_compare_checks_every_method_first_and_never_reuses_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp"
    assert compare.main(["--methods", "fedavg", "local", "--set", "lr=-1", "--out", str(out)]) == 2
    assert "fedavg:" in capsys.readouterr().err and not out.exists()
    monkeypatch.chdir(tmp_path)
    first = compare.default_out()
    time.sleep(1.1)
    assert compare.default_out() != first and first.name.startswith("compare-")
    assert first.parent == tmp_path.resolve() / "runs"  # under the current folder


def test_print_summary_tolerates_missing_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"round": 1, "student_accuracy": 0.5, "teacher_accuracy": None, "survivors": 3},
        {"round": 2, "student_accuracy": 0.75, "client_accuracy_mean": 0.6, "seconds": 2.5},
    ]
    (tmp_path / "history.json").write_text(json.dumps(rows))
    print_summary(tmp_path)
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].split() == ["round", "student", "teacher", "clients", "surv", "sec"]
    assert table[1].split() == ["1", "0.5000", "-", "-", "3", "-"]
    assert table[2].split() == ["2", "0.7500", "-", "0.6000", "-", "2.5"]


def test_print_summary_says_why_rounds_did_not_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = "train: ledger refuses (round): round 2 was released already"
    rows = [
        {"round": 1, "status": "ok", "student_accuracy": 0.5},
        {"round": 2, "status": "skipped", "reason": "only 0 clients answered",
         "dropped_reasons": [refused, refused, "train: no reply within 60 s"]},
        {"round": 3, "status": "skipped", "reason": "only 0 clients answered",
         "dropped_reasons": [refused]},
    ]  # fmt: skip
    (tmp_path / "history.json").write_text(json.dumps(rows))
    print_summary(tmp_path)
    out = capsys.readouterr().out
    assert "2 of 3 round(s) did not complete:" in out
    assert "2 x skipped: only 0 clients answered" in out
    assert f"most common client reason (3 x): {refused}" in out


def test_print_summary_says_a_dp_runs_client_column_is_noised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"round": 1, "client_accuracy_mean": 2.48, "dp_noise_std": 0.4, "dp_epsilon": 1.5},
        {"round": 2, "client_accuracy_mean": -0.9, "dp_noise_std": 0.4, "dp_epsilon": 3.26},
    ]
    (tmp_path / "history.json").write_text(json.dumps(rows))
    print_summary(tmp_path)
    out = capsys.readouterr().out
    assert "epsilon spent 3.26" in out and "noised release" in out
    plain = [{"round": 1, "dp_noise_std": None, "dp_epsilon": None}]  # history.json without DP
    (tmp_path / "history.json").write_text(json.dumps(plain))
    print_summary(tmp_path)
    assert "noised" not in capsys.readouterr().out


def test_resume_repeats_the_stopped_runs_config_and_clients(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    saved = {"method": "fedavg", "num-rounds": 4, "alpha": 0.1, "out-dir": "/x", "gone-key": 1}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    (tmp_path / "launch.json").write_text(json.dumps({"clients": 3, "federation": []}))
    merged, clients = resume_overrides(tmp_path, {"out-dir": "/y", "num-rounds": 8}, None, APP)
    assert clients == 3 and "gone-key" not in merged  # keys the app no longer has are dropped
    assert merged == {
        "method": "fedavg",
        "num-rounds": 8,
        "alpha": 0.1,
        "out-dir": "/x",
        "resume": str(tmp_path.resolve()),
    }
    with pytest.raises(ValueError, match="--clients 3"):
        resume_overrides(tmp_path, {}, 5, APP)
    assert main(["run", "--resume", str(tmp_path), "--clients", "5"]) == 2


def test_ray_engine_settings_are_checked_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--engine", "ray", "--federation", "num-supernodes=5"]) == 2
    assert "does not apply to the Ray engine" in capsys.readouterr().err
    assert main(["run", "--federation", "client-resources-num-cpus=half"]) == 2
    assert "must be a number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # argparse: not an engine
        main(["run", "--engine", "spark"])
    assert usage.value.code == 2


def test_without_a_checkout_the_defaults_are_the_librarys_and_flower_needs_app(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What an installed wheel sees (no pyproject.toml, no server/ or clients/ beside it)."""
    assert run_config.app_run_config() == FedConfig().to_dict()  # the checkout's table
    monkeypatch.setattr(run_config, "CHECKOUT", None)
    monkeypatch.setattr(commands, "CHECKOUT", None)
    assert run_config.app_run_config() == FedConfig().to_dict()
    for args, named in ((["--engine", "flower"], "--engine flower"),
                        (["--connection", "x"], "--connection")):  # fmt: skip
        assert main(["run", *args]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""  # nothing started
        message = captured.err.strip()
        assert "\n" not in message and named in message and "--app DIR" in message
    assert main(["run", "--engine", "flower", "--app", str(APP), "--set", "lr=-1"]) == 2
    assert "'lr'" in capsys.readouterr().err  # with --app the app's table is read
