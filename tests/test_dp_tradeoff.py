"""experiments.dp_tradeoff: the grid's run configs and the table built from finished runs."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from experiments import dp_tradeoff


def _args(tmp_path: Path) -> argparse.Namespace:
    """The namespace main() builds for the flags the grid commands use."""
    return argparse.Namespace(
        rounds=3,
        model="cnn_small",
        large_fraction=0.1,
        clip=0.05,
        out=str(tmp_path),
        set=["split-public=200"],
        large_set=["warmup-epochs=100"],
    )


def test_large_federations_get_their_own_settings(tmp_path: Path) -> None:
    args = _args(tmp_path)
    small = dp_tradeoff.run_config(args, 20, "central", 8.0, 0)
    large = dp_tradeoff.run_config(args, 200, "distributed", 4.0, 1)
    assert small["fraction"] == 1.0 and "warmup-epochs" not in small
    assert large["fraction"] == 0.1 and large["warmup-epochs"] == 100
    assert small["split-public"] == large["split-public"] == 200
    assert (small["dp"], small["dp-epsilon"], small["dp-clip"]) == ("central", 8.0, 0.05)
    assert large["dp"] == "distributed" and large["seed"] == 1
    dpsgd = dp_tradeoff.run_config(args, 20, "dpsgd", 2.0, 0)
    assert dpsgd["client-dp-sgd"] is True and dpsgd["client-dp-epsilon"] == 2.0
    assert "dp" not in dpsgd
    assert "dp" not in dp_tradeoff.run_config(args, 20, "central", math.inf, 0)


def _result(clients: int, placement: str, eps: float | None, seed: int, acc: float) -> dict:
    return {
        "clients": clients,
        "placement": placement,
        "epsilon_target": eps,
        "seed": seed,
        "student_accuracy": acc,
        "client_accuracy": acc,
        "dp_epsilon": eps,
    }


def test_the_table_states_where_90_percent_is_kept(tmp_path: Path) -> None:
    runs = [
        _result(20, "central", None, 0, 0.90),
        _result(20, "central", None, 1, 0.80),
        _result(20, "central", 8.0, 0, 0.80),
        _result(20, "central", 8.0, 1, 0.76),
        _result(20, "central", 4.0, 0, 0.30),
        _result(20, "central", 4.0, 1, 0.40),
        _result(20, "local", 8.0, 0, 0.10),
    ]
    for run in runs:
        name = f"{run['clients']}-{run['placement']}-{run['epsilon_target'] or math.inf:g}"
        (tmp_path / f"{name}-s{run['seed']}.json").write_text(json.dumps(run))
    assert dp_tradeoff.main(["--table-only", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| 20 | none (non-private) | inf | 85.0 ± 7.1 |" in table
    assert "| 20 | central | 8 | 78.0 ± 2.8 |" in table
    assert "20 clients, central: 90% of non-private (85.0%) kept at eps = 8" in table
    assert "20 clients, local: 90% of non-private (85.0%) kept at none of the grid" in table
    assert (tmp_path / "tradeoff.png").stat().st_size > 0


def test_table_only_on_an_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        dp_tradeoff.main(["--table-only", "--out", str(tmp_path / "nothing")])
    assert stopped.value.code != 0


def test_distributed_sampled_is_distributed_dp_with_sampled_shares(tmp_path: Path) -> None:
    config = dp_tradeoff.run_config(_args(tmp_path), 200, "distributed-sampled", 8.0, 0)
    assert (config["dp"], config["dp-shares"]) == ("distributed", "sampled")
    assert "dp-shares" not in dp_tradeoff.run_config(_args(tmp_path), 200, "distributed", 8.0, 0)


def test_each_dpsgd_clients_accountant_is_recorded_from_its_store() -> None:
    import numpy as np

    from fedkd.dp.dpsgd import epsilon_of_history
    from fedkd.fl import keys
    from fedkd.fl.client import MemoryStore
    from fedkd.transport import Envelope

    spent, untouched = MemoryStore(), MemoryStore()
    history = np.array([[1.2, 0.1, 300.0]])
    spent.put(keys.STATE_DPSGD, Envelope(keys.STATE_DPSGD, arrays={"history": history}))
    accounts = dp_tradeoff.dpsgd_accounts({3: spent, 4: untouched}, 1e-5)
    assert [a["partition"] for a in accounts] == [3]  # a client without DP-SGD has no account
    (account,) = accounts
    assert account["history"] == [[1.2, 0.1, 300]] and account["delta"] == 1e-5
    assert account["epsilon"] == pytest.approx(epsilon_of_history([(1.2, 0.1, 300)], 1e-5))
    assert account["epsilon_rdp"] > account["epsilon"] > 0  # RDP: the looser cross-check
