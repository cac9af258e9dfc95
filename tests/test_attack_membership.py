"""Membership inference: LiRA and the loss threshold find members of an overfit client."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedkd.attacks import membership as mi
from fedkd.attacks.common import StudyOptions
from fedkd.attacks.mia import lira, roc

TINY = {"model": "mlp", "warmup-epochs": 40, "local-epochs": 1, "distill-epochs": 2}


def test_lira_separates_shifted_confidences_and_a_no_op_does_not() -> None:
    rng = np.random.default_rng(0)
    n, s = 400, 8
    members = np.arange(n) < n // 2
    difficulty = rng.normal(0, 3, n)  # per-sample offsets LiRA must calibrate away
    inside = np.argsort(rng.random((s, n)), axis=0) < s // 2
    shadows = difficulty + 1.5 * inside + rng.normal(0, 0.3, (s, n))
    target = difficulty + 1.5 * members + rng.normal(0, 0.3, n)
    online = roc(lira(target, shadows, inside, online=True), members)
    offline = roc(lira(target, shadows, inside, online=False), members)
    raw = roc(target, members)  # the uncalibrated score: difficulty drowns the signal
    assert online.auc > 0.95 and offline.auc > 0.95 and raw.auc < 0.8
    assert online.tpr_at_1 > raw.tpr_at_1
    shuffled = roc(lira(rng.permutation(target), shadows, inside, online=True), members)
    assert abs(shuffled.auc - 0.5) < 0.1


def test_lira_refuses_samples_without_out_shadows() -> None:
    with pytest.raises(ValueError, match="OUT shadows"):
        lira(np.zeros(3), np.zeros((2, 3)), np.ones((2, 3), bool), online=False)


@pytest.mark.slow
def test_both_attacks_find_members_of_a_real_overfit_client(tmp_path: Path) -> None:
    options = StudyOptions(out=tmp_path, overrides=TINY)
    figures = mi.one_seed(options, 0, mi.Sizes(clients=2, rounds=1, shadows=8))
    client = figures["client model (fedkd run)"]
    # non-members are label-matched, so the raw loss is weak; LiRA's calibration finds members
    assert client["lira-online"].auc > max(0.55, client["loss"].auc)
    recipe = figures["client recipe (leave-one-out)"]
    assert recipe["lira-online"].negatives > 1000  # enough non-members to read low FPRs
    assert recipe["lira-offline"].auc > recipe["loss"].auc > 0.5  # calibration helps
    assert recipe["lira-online"].tpr_at_1 > recipe["loss"].tpr_at_1
