"""experiments.compare: the grid over seeds and alphas, mean ± std, resuming, the real thing."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from experiments import compare
from fedkd.cli.launch import LaunchResult
from fedkd.fl.config import FedConfig


def _history(method: str, level: float, rounds: int = 3) -> list[dict[str, Any]]:
    """A fake history.json whose accuracies rise to ``level`` at the last round."""
    rows = []
    for r in range(1, rounds + 1):
        share = r / rounds
        rows.append(
            {
                "round": r,
                "method": method,
                "student_accuracy": None if method == "local" else level * share,
                "client_accuracy_mean": None if method == "central" else level * share / 2,
                "client_accuracy_min": None if method == "central" else level * share / 4,
                "client_accuracy_max": None if method == "central" else level * share,
                "bytes_up": 0 if method == "central" else 2_000_000,
                "bytes_down": 0 if method == "central" else 1_000_000,
                "sampled": 0 if method == "central" else 4,
                "seconds": 2.0,
            }
        )
    return rows


def _write_run(folder: Path, config: dict[str, object], history: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**FedConfig().to_dict(), **config}))
    (folder / "history.json").write_text(json.dumps(history))
    (folder / "summary.json").write_text(json.dumps({"rounds": len(history)}))


def test_mean_and_sample_std_over_seeds() -> None:
    mean, std, n = compare.mean_std([0.90, 0.92, 0.94])
    assert mean == pytest.approx(0.92) and std == pytest.approx(0.02) and n == 3
    assert compare.mean_std([0.5, math.nan]) == (0.5, 0.0, 1)  # one seed: no spread
    mean, std, n = compare.mean_std([math.nan])
    assert math.isnan(mean) and n == 0


def test_central_runs_once_per_seed_and_shows_in_every_alpha() -> None:
    specs = compare.grid(["fedavg", "central"], [0, 1], [0.1, 0.5])
    assert [s.name for s in specs] == [
        "fedavg-a0.1-s0",
        "central-s0",
        "fedavg-a0.1-s1",
        "central-s1",
        "fedavg-a0.5-s0",
        "fedavg-a0.5-s1",
    ]
    runs = [
        {
            "method": s.method,
            "alpha": s.alpha,
            "seed": s.seed,
            "figures": compare.run_figures(_history(s.method, 0.9 + 0.02 * s.seed)),
        }
        for s in specs
    ]
    rows = compare.aggregate(runs, [0.1, 0.5])
    assert [(r["alpha"], r["method"]) for r in rows] == [
        (0.1, "fedavg"),
        (0.1, "central"),
        (0.5, "fedavg"),
        (0.5, "central"),
    ]
    central = rows[1]
    assert central["seeds"] == [0, 1] and central["student_final"]["n"] == 2
    assert central["student_final"]["mean"] == pytest.approx(0.91)
    assert central["student_final"]["std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert central["clients_final"]["n"] == 0  # no clients
    assert rows[0]["mb_up"]["mean"] == pytest.approx(2.0) and rows[0]["seconds"]["mean"] == 2.0


def test_table_formats_mean_std_and_missing_figures() -> None:
    runs = [
        {"method": m, "alpha": a, "seed": seed, "figures": compare.run_figures(_history(m, lvl))}
        for m, a, lvl in (("fedkd", 0.1, 0.95), ("local", 0.1, 0.6))
        for seed in (0, 1)
    ] + [{"method": "fedavg", "alpha": 0.1, "seed": 0, "figures": compare.run_figures([])}]
    runs[1]["figures"]["student_final"] = 0.97  # seed 1 of fedkd: 95 and 97 -> 96.0 ± 1.4
    table = compare.markdown_table(compare.aggregate(runs, [0.1]), "test")
    lines = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert lines["| fedkd"].startswith(
        "| fedkd | 96.0 ± 1.4 | 95.0 ± 0.0 | 47.5 ± 0.0 | 23.8 ± 0.0 | 0.500 ± 0.000 | 2.0"
    )  # 2 MB up in a round of 4 clients: 0.5 MB per client
    assert lines["| local"].startswith("| local | - | - | 30.0 ± 0.0 | 15.0 ± 0.0 |")
    assert lines["| fedavg"].startswith("| fedavg | - | - | - | - | - |")  # no round: no figures
    assert lines["| fedkd"].endswith("| 0 1 |") and "**Dirichlet α = 0.1**" in table


class FakeLauncher:
    """Stands in for ``flwr_run``: writes a finished run folder, or ends as told."""

    def __init__(self, outcomes: dict[str, int] | None = None) -> None:
        self.calls: list[str] = []
        self.outcomes = outcomes or {}

    def __call__(self, config: dict[str, object], **kwargs: object) -> LaunchResult:
        name = str(config["run-name"])
        self.calls.append(name)
        folder = Path(str(config["out-dir"])) / name
        code = self.outcomes.get(name, 0)
        if code:
            folder.mkdir(parents=True)
            (folder / "config.json").write_text(json.dumps(config))
            return LaunchResult(code, folder, cause=f"fake end {code}")
        _write_run(folder, config, _history(str(config["method"]), 0.9))
        return LaunchResult(0, folder, status="finished:completed")


def _args(out: Path, *extra: str) -> list[str]:
    return ["--clients", "4", "--rounds", "3", "--out", str(out), "--quiet", *extra]


def test_rerun_skips_finished_runs_and_redoes_incomplete_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp"
    grid = ["--methods", "fedavg", "central", "--seeds", "0", "1", "--alphas", "0.1", "0.5"]
    first = FakeLauncher({"fedavg-a0.5-s1": 1})  # one run fails
    monkeypatch.setattr(compare, "flwr_run", first)
    assert compare.main(_args(out, *grid)) == 1
    assert len(first.calls) == 6
    payload = json.loads((out / "results.json").read_text())
    assert set(payload["failed"]) == {"fedavg-a0.5-s1"} and len(payload["runs"]) == 5
    assert "fedavg-a0.5-s1: did not complete (fake end 1)" in (out / "comparison.md").read_text()

    again = FakeLauncher()
    monkeypatch.setattr(compare, "flwr_run", again)
    assert compare.main(_args(out, *grid)) == 0
    assert again.calls == ["fedavg-a0.5-s1"]  # only the one that did not finish
    assert (out / "fedavg-a0.5-s1.partial-1" / "config.json").is_file()  # kept aside
    payload = json.loads((out / "results.json").read_text())
    assert payload["failed"] == {} and len(payload["runs"]) == 6
    rows = {(r["alpha"], r["method"]): r for r in payload["rows"]}
    assert rows[(0.5, "central")]["seeds"] == [0, 1] and rows[(0.5, "fedavg")]["seeds"] == [0, 1]
    for name in ("comparison.md", "comparison.png", "comparison_bytes.png"):
        assert (out / name).is_file()

    third = FakeLauncher()
    monkeypatch.setattr(compare, "flwr_run", third)
    assert compare.main(_args(out, *grid, "--seeds", "0", "1", "2")) == 0
    assert third.calls == ["fedavg-a0.1-s2", "central-s2", "fedavg-a0.5-s2"]  # a seed added
    # FedProx's mu is FedProx's alone: changing it leaves the finished FedAvg runs valid.
    fourth = FakeLauncher()
    monkeypatch.setattr(compare, "flwr_run", fourth)
    more = ["--methods", "fedavg", "fedprox", "--alphas", "0.1", "--set", "proximal-mu=0.5"]
    assert compare.main(_args(out, *more)) == 0
    assert fourth.calls == ["fedprox-a0.1-s0"]
    saved = json.loads((out / "fedprox-a0.1-s0" / "config.json").read_text())
    assert saved["proximal-mu"] == 0.5


def test_a_finished_run_with_other_settings_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    monkeypatch.setattr(compare, "flwr_run", FakeLauncher())
    assert compare.main(_args(out, "--methods", "central")) == 0
    assert compare.main(_args(out, "--methods", "central", "--rounds", "4")) == 2
    assert "'num-rounds': 3 there, 4 now" in capsys.readouterr().err


def test_one_folder_one_compare_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.lock").write_text("1\n")  # pid 1 is always alive
    launcher = FakeLauncher()
    monkeypatch.setattr(compare, "flwr_run", launcher)
    assert compare.main(_args(out, "--methods", "central")) == 2
    assert "in use by another compare (process 1)" in capsys.readouterr().err
    assert launcher.calls == []
    (out / "compare.lock").write_text("999999999\n")  # a compare that died: taken over
    assert compare.main(_args(out, "--methods", "central")) == 0
    assert launcher.calls == ["central-s0"] and not (out / "compare.lock").exists()


def test_interrupted_comparison_keeps_what_is_done_and_starts_nothing_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cmp"
    launcher = FakeLauncher({"fedprox-a0.5-s0": 130})
    monkeypatch.setattr(compare, "flwr_run", launcher)
    assert compare.main(_args(out, "--methods", "fedavg", "fedprox", "local")) == 130
    assert launcher.calls == ["fedavg-a0.5-s0", "fedprox-a0.5-s0"]
    payload = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in payload["runs"]] == ["fedavg"]


def test_bad_settings_exit_2_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    launcher = FakeLauncher()
    monkeypatch.setattr(compare, "flwr_run", launcher)
    out = tmp_path / "cmp"
    assert compare.main(_args(out, "--set", "proximal-mu=-1")) == 2
    assert "'proximal-mu'" in capsys.readouterr().err
    assert compare.main(_args(out, "--set", "seed=3")) == 2
    assert "'seed' is set by compare itself" in capsys.readouterr().err
    assert compare.main(_args(out, "--alphas", "-1")) == 2
    assert "'alpha'" in capsys.readouterr().err
    assert launcher.calls == [] and not out.exists()


@pytest.mark.slow
def test_compare_runs_fedprox_and_central_for_real_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two real ``flwr run`` launches (FedProx, the library round, and centralized), then
    the same command again: nothing runs, the table is rebuilt from the folders."""
    out = tmp_path / "cmp"
    argv = [
        *("--clients", "3", "--rounds", "2", "--out", str(out), "--quiet"),
        *("--methods", "fedprox", "central", "--seeds", "0", "--alphas", "0.5"),
        *("--set", "local-epochs=1", "warmup-epochs=0", "proximal-mu=0.1"),
    ]
    assert compare.main(argv) == 0
    history = json.loads((out / "fedprox-a0.5-s0" / "history.json").read_text())
    assert [r["method"] for r in history] == ["fedprox", "fedprox"]
    assert history[-1]["student_accuracy"] > 0.3 and history[-1]["survivors"] == 3
    assert json.loads((out / "fedprox-a0.5-s0" / "config.json").read_text())["proximal-mu"] == 0.1

    def no_launch(*args: object, **kwargs: object) -> LaunchResult:
        raise AssertionError("a finished run was launched again")

    monkeypatch.setattr(compare, "flwr_run", no_launch)
    assert compare.main(argv) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["fedprox", "central"]


def test_table_is_printed_from_results_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(compare, "flwr_run", FakeLauncher())
    out = tmp_path / "cmp"
    assert compare.main(_args(out, "--methods", "fedkd", "fedmd")) == 0
    printed = capsys.readouterr().out
    payload = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in payload["rows"]] == ["fedkd", "fedmd"]
    assert payload["command"].startswith("python -m experiments.compare --clients 4")
    assert compare.main(["--table", str(out / "results.json")]) == 0
    table = capsys.readouterr().out
    assert table.strip() in printed and "| fedmd |" in table
    assert compare.main(["--table", str(tmp_path / "absent.json")]) == 2


def test_variants_set_their_method_and_mode(tmp_path: Path) -> None:
    args = compare.parse_args(_args(tmp_path, "--methods", "fedmd", "feddf", "fedkd"))
    _, configs = compare.run_configs(args, tmp_path)
    chosen = {spec.method: (c["method"], c.get("mode")) for spec, c in configs.items()}
    assert chosen == {
        "fedmd": ("fedkd", "fedmd"),
        "feddf": ("feddf", None),
        "fedkd": ("fedkd", None),
    }


@pytest.mark.slow
def test_inprocess_engine_runs_fedmd_and_feddf(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    argv = [
        *("--clients", "3", "--rounds", "1", "--out", str(out), "--quiet", "--engine", "inprocess"),
        *("--methods", "fedmd", "feddf", "--seeds", "0", "--alphas", "0.5"),
        *("--set", "local-epochs=1", "warmup-epochs=0", "distill-epochs=2", "eval-clients=true"),
    ]
    assert compare.main(argv) == 0
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows["fedmd"]["student_final"]["mean"] > 0.2 and rows["feddf"]["student_final"]["n"] == 1
    # FedDF sends its weights beside its logits: more upload per client than FedMD's logits.
    assert rows["feddf"]["mb_up_client"]["mean"] > rows["fedmd"]["mb_up_client"]["mean"]
    config = json.loads((out / "fedmd-a0.5-s0" / "config.json").read_text())
    assert (config["method"], config["mode"]) == ("fedkd", "fedmd")
