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


def test_the_table_pools_every_paired_draw() -> None:
    def row(eps: float, central: list[float], distributed: list[float]) -> dict[str, object]:
        models = {"central": central, "distributed": distributed}
        return {
            "epsilon_target": eps,
            "teacher": models,
            "student": models,
            "student_difference": [0.0, 0.0],
            "teacher_difference": [0.0, 0.0],
            "epsilon_recorded": {"central": [1.0], "distributed": [1.0]},
            "draws": len(central),
        }

    rows = [row(8, [0.5, 0.6], [0.52, 0.61]), row(16, [0.7, 0.8], [0.69, 0.83])]
    mean, half = dp_placements.paired([0.02, 0.01, -0.01, 0.03])
    pooled = dp_placements.table(rows).splitlines()[-1]
    assert pooled.startswith("| pooled |") and f"{100 * mean:+.2f} ± {100 * half:.2f}" in pooled
    assert "| pooled" not in dp_placements.table(rows[:1])
