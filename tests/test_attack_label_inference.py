"""Label inference: plaintext contributions reveal a client's histogram, sums hide it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedkd.attacks import label_inference as li
from fedkd.attacks.common import StudyOptions, tv_distance
from fedkd.distill import TeacherConfig, client_contribution

TINY = {"model": "mlp", "warmup-epochs": 3, "local-epochs": 1, "distill-epochs": 1}


def test_weights_estimator_is_exact_for_one_client_and_blurs_for_a_sum() -> None:
    rng = np.random.default_rng(0)
    config = TeacherConfig(rule="dsfl", class_weighting=True, entropy_weighting=True)
    counts = [np.array([30, 0, 5, 1]), np.array([0, 20, 0, 20])]
    parts = [
        client_contribution(
            rng.normal(size=(6, 4)), config=config, label_counts=c, num_samples=int(c.sum())
        ).to_vector()
        for c in counts
    ]
    one = li.estimate(parts[0], 6, 4, "weights")
    assert tv_distance(one, counts[0]) < 1e-12
    both = li.estimate(parts[0] + parts[1], 6, 4, "weights")
    assert tv_distance(both, counts[0]) > 0.3
    with pytest.raises(ValueError, match="unknown estimator"):
        li.estimate(parts[0], 6, 4, "nope")


@pytest.fixture(scope="module")
def class_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[li.Collected, li.Sizes]:
    options = StudyOptions(out=tmp_path_factory.mktemp("li"), overrides=TINY)
    size = li.Sizes(clients=4, rounds=10, groups=4, group_sizes=(1, 4))
    return li.collect(options, 0, "class", size), size


def test_plaintext_weights_reveal_the_histogram_and_the_full_sum_does_not(
    class_run: tuple[li.Collected, li.Sizes],
) -> None:
    run, size = class_run
    groups = li.group_attack(run, size, seed=0)
    baseline = li.baselines(run.truth)["uniform"]
    assert groups["weights"][1] < 1e-9 < baseline
    assert groups["weights"][4] > groups["weights"][1] + 0.1  # the sum of all four hides each


def test_differencing_the_rounds_sums_recovers_each_client(
    class_run: tuple[li.Collected, li.Sizes],
) -> None:
    run, size = class_run
    solved = li.differencing_attack(run, size)
    assert solved["rank"] == size.clients  # sampled rounds identify every client
    assert solved["weights"] < 1e-6  # exact recovery from sums alone


def test_a_real_secure_round_returns_the_plaintext_sum(
    class_run: tuple[li.Collected, li.Sizes], tmp_path: Path
) -> None:
    run, _ = class_run
    options = StudyOptions(out=tmp_path, overrides=TINY)
    assert li.secure_check(options, 0, run, members=3) < 1e-6
