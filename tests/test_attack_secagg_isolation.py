"""Isolation attacks: fedkd with a roster refuses them all; without one, and Flower, leak."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.attacks import secagg_isolation as runner
from experiments.attacks.flower_isolation import overlapping_lists
from fedkd.attacks import StudyOptions
from fedkd.attacks import secagg_isolation as si


def test_roster_refuses_every_attack_and_curious_mode_leaks_exactly(tmp_path: Path) -> None:
    result = runner.run(StudyOptions(out=tmp_path, quick=True))
    (seed0,) = result.results["per_seed"]
    ours = {name: row["fedkd + roster"]["verdict"] for name, row in seed0.items()}
    assert ours.pop("honest round (reference)") == "sum of all only"
    assert "recovered" not in ours.values()
    curious = {name: row["fedkd, no roster"] for name, row in seed0.items()}
    for name in ("split views", "key substitution"):  # the attacks are real
        assert curious[name]["verdict"] == "recovered"
        assert curious[name]["relative_error"] < 1e-6
    for name in ("overlapping survivor/dropped lists", "key substitution"):
        flower = seed0[name]["Flower SecAgg+"]
        assert flower["verdict"] == "recovered" and flower["relative_error"] < 1e-4, name
    assert seed0["overlapping survivor/dropped lists"]["fedkd, no roster"]["verdict"] == "refused"


def test_flower_overlapping_lists_recover_the_target_not_a_neighbour() -> None:
    vectors = si.inputs(6, 12, seed=3)
    got = overlapping_lists(vectors, target=0, neighbours=None, threshold=4, clip=si.CLIP)
    assert np.abs(got - vectors[0]).max() < 1e-3
    assert np.abs(got - vectors[1]).max() > 1.0
