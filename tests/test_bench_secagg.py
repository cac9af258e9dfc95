"""Tests of the secure-aggregation benchmark and its Flower SecAgg+ harness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import bench_secagg, flower_secaggplus

REQUIRED = (
    "n",
    "d",
    "dropout",
    "fedkd_server_s",
    "fedkd_client_s",
    "flower_server_s",
    "flower_client_s",
    "plaintext_s",
    "keystream_s",
    "fedkd_bytes_up_per_client",
    "fedkd_bytes_down_per_client",
    "flower_bytes_up_per_client",
    "flower_bytes_down_per_client",
)


def test_flower_exact_sums_like_plaintext() -> None:
    rng = np.random.default_rng(3)
    inputs = [rng.normal(0.0, 4.0, 64) for _ in range(6)]
    dropped = [2]
    result = flower_secaggplus.run_flower_exact(
        inputs, neighbours=None, threshold=4, dropped=dropped, clip=64.0
    )
    survivors = [x for i, x in enumerate(inputs) if i not in dropped]
    assert result.mean is not None and not result.estimated
    # Flower's quantization step is 2 * clip / 2**22 per value (stochastic rounding).
    assert np.abs(result.mean - np.mean(survivors, axis=0)).max() < 2 * 64.0 / 2**22
    assert (result.survivors, result.dropped, result.num_shares) == (5, 1, 6)
    assert result.server_seconds["unmask"] > 0 and result.client_seconds["share_keys"] > 0
    assert result.bytes_up_per_client > 64 * 8
    assert result.bytes_down_per_client > 0


def test_flower_estimate_has_every_stage() -> None:
    result = flower_secaggplus.estimate_flower(
        8, 32, neighbours=4, threshold=3, dropped=[1], clip=8.0, samples_alive=1
    )
    assert result.estimated and result.mean is None and result.num_shares == 5
    stages = set(flower_secaggplus.STAGES) | {"total"}
    assert set(result.server_seconds) == stages == set(result.client_seconds)
    assert all(value >= 0 for value in result.server_seconds.values())
    assert result.server_seconds["unmask"] > 0 and result.client_seconds["total"] > 0


def test_flower_shares_refuses_odd_neighbourhoods() -> None:
    assert flower_secaggplus.flower_shares(10, None) == 10
    assert flower_secaggplus.flower_shares(10, 9) == 10
    assert flower_secaggplus.flower_shares(10, 4) == 5
    with pytest.raises(ValueError, match="even neighbour count"):
        flower_secaggplus.flower_shares(10, 3)


def test_dropped_clients_is_seeded_and_sized() -> None:
    assert bench_secagg.dropped_clients(50, 0.1, 0) == bench_secagg.dropped_clients(50, 0.1, 0)
    assert len(bench_secagg.dropped_clients(50, 0.1, 0)) == 5
    assert bench_secagg.dropped_clients(10, 0.0, 0) == []
    with pytest.raises(ValueError, match="accepted"):
        bench_secagg.dropped_clients(10, 1.0, 0)


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_secagg.main(["--quick", "--repeat", "1", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench_secagg.json").read_text())
    rows = report["rows"]
    grid = bench_secagg.QUICK_GRID
    assert len(rows) == len(grid["n"]) * len(grid["d"]) * len(grid["dropout"])
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["versions"]["flwr"]
    for row in rows:
        missing = [key for key in REQUIRED if key not in row]
        assert not missing, missing
        for key in (
            "fedkd_server_s",
            "fedkd_client_s",
            "flower_server_s",
            "flower_client_s",
            "plaintext_s",
            "keystream_s",
        ):
            assert row[key] > 0, (key, row)
        assert row["fedkd_max_abs_err"] < row["n"] * 2 * 64.0 / 2**20
        assert row["survivors"] + row["dropped"] == row["n"]
    modes = {row["flower_mode"] for row in rows}
    assert modes == {"exact", "est."}
    exact = [row for row in rows if row["flower_mode"] == "exact"]
    assert all(row["flower_max_abs_err"] < row["n"] * 2 * 64.0 / 2**22 for row in exact)
    table = (tmp_path / "bench_secagg.md").read_text()
    assert "est." in table and "before masked input" in table
    assert table.count("\n| ") == len(rows) + 1
    assert "Flower/fedkd srv" in capsys.readouterr().out
