"""The paired central-vs-distributed comparison, on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import dp_placements


@pytest.mark.slow
def test_both_placements_release_the_same_clients_at_the_same_epsilon(tmp_path: Path) -> None:
    argv = ["--quick", "--draws", "2", "--eps", "32", "--out", str(tmp_path)]
    argv += ["--set", "warmup-epochs=1", "distill-epochs=1"]
    with pytest.warns(UserWarning, match="> 10"):
        assert dp_placements.main(argv) == 0
    row = json.loads((tmp_path / "eps32-s0.json").read_text())
    central, distributed = (
        row["epsilon_recorded"]["central"],
        row["epsilon_recorded"]["distributed"],
    )
    # dp-shares=sampled and no dropout: the secure sum carries exactly the central variance
    assert central == pytest.approx(distributed) and 0 < central[0] < 32
    assert len(row["student"]["central"]) == len(row["student"]["distributed"]) == 2
    assert all(0 <= a <= 1 for a in row["teacher"]["central"] + row["teacher"]["distributed"])
    assert "| 32 |" in (tmp_path / "table.md").read_text()
    assert dp_placements.main(["--table-only", "--out", str(tmp_path)]) == 0


def test_the_paired_interval_shrinks_with_more_draws() -> None:
    few = dp_placements.paired([0.01, -0.01, 0.02])
    many = dp_placements.paired([0.01, -0.01, 0.02] * 10)
    assert few[0] == pytest.approx(many[0]) and many[1] < few[1]
