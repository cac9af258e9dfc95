"""End-to-end sanity of the uncertainty mode on tiny data (1 epoch)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from experiments import uncertainty as script
from fedkd.data import ArrayDataset
from fedkd.metrics import negative_log_likelihood, softmax
from fedkd.modes.common import RESULTS_FILE
from fedkd.modes.stats import spread
from fedkd.modes.uncertainty import (
    PREDICTORS,
    PredictorReport,
    blend_pairs,
    compare,
    fit_temperature,
    mutual_information,
)


def test_cli_reports_calibration_and_uncertainty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [
        "--dataset",
        "synthetic",
        "--teacher-epochs",
        "1",
        "--student-epochs",
        "1",
        "--label-budget",
        "60",
        "--validation-size",
        "50",
        "--ensemble-seeds",
        "0",
        "1",
        "--blend-pairs",
        "40",
        "--teacher-kwargs",
        '{"channels": [8, 16], "hidden": 16}',
        "--out-dir",
        str(tmp_path),
    ]
    assert script.main(flags) == 0
    printed = capsys.readouterr().out
    assert "kd_ts" in printed and "claims that survive" in printed
    results = json.loads((tmp_path / RESULTS_FILE).read_text())["results"]
    reports = {r["predictor"]: r for r in results["predictors"]}
    assert list(reports) == list(PREDICTORS)
    log_classes = math.log(10)
    for report in reports.values():
        assert report["accuracy"]["n"] == 2 and 0.0 <= report["ensemble_accuracy"] <= 1.0
        assert 0.0 <= report["ece"]["mean"] <= 1.0
        assert report["nll"]["mean"] >= 0.0 and 0.0 <= report["brier"]["mean"] <= 2.0
        for key in ("clean", "blended", "noise"):
            assert 0.0 <= report[f"entropy_{key}"] <= log_classes + 1e-9
            assert 0.0 <= report[f"mutual_information_{key}"] <= log_classes + 1e-9
        assert len(report["temperatures"]) == 2
    for name in ("hard", "kd"):  # scaling keeps the argmax of the same students
        assert reports[name]["accuracy"]["values"] == reports[f"{name}_ts"]["accuracy"]["values"]
        assert all(t > 0 for t in reports[f"{name}_ts"]["temperatures"])
    diffs = results["versus_baseline"]
    assert set(diffs) == {"hard", "kd", "kd_ts"}
    expected = np.subtract(reports["kd_ts"]["ece"]["values"], reports["hard_ts"]["ece"]["values"])
    np.testing.assert_allclose(diffs["kd_ts"]["ece"]["values"], expected)
    assert isinstance(results["claims"], list)
    assert (tmp_path / "reliability.png").stat().st_size > 0
    assert (tmp_path / "uncertainty.png").stat().st_size > 0


def test_fit_temperature_recovers_a_known_scale() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(2000, 5)) * 3
    labels = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])
    fitted = fit_temperature(true_logits * 2.5, labels)  # overconfident by a factor 2.5
    assert fitted == pytest.approx(2.5, rel=0.15)
    assert negative_log_likelihood(softmax(true_logits * 2.5, fitted), labels) < (
        negative_log_likelihood(softmax(true_logits * 2.5), labels)
    )


def test_blends_mix_two_different_classes() -> None:
    values = [1.0, 2.0, 4.0, 8.0]  # class c is the constant image 2**c
    x = np.stack([np.full((1, 2, 2), v, np.float32) for v in values])
    data = ArrayDataset(x=x, y=np.arange(4))
    blended = blend_pairs(data, 50, seed=0)
    assert blended.shape == (50, 1, 2, 2)
    # an equal mix of two different powers of two is never one of them: no same-class pair
    assert not np.any(np.isin(blended[:, 0, 0, 0], values))


def test_mutual_information_zero_for_agreeing_members() -> None:
    probs = softmax(np.random.default_rng(1).normal(size=(6, 3)))
    assert mutual_information(np.stack([probs, probs])) == pytest.approx(0.0, abs=1e-12)
    disagree = np.stack([np.eye(3)[[0, 1]], np.eye(3)[[1, 0]]]) * 0.98 + 0.02 / 3
    assert mutual_information(disagree) > 0.5


def _report(name: str, ece: list[float]) -> PredictorReport:
    same = spread([0.9, 0.9, 0.9])
    return PredictorReport(name, same, spread(ece), same, same, [1.0] * 3, *[0.0] * 7, 0.9)


def test_claims_need_an_interval_that_excludes_zero() -> None:
    base = _report("hard_ts", [0.05, 0.06, 0.07])
    clear = _report("kd_ts", [0.02, 0.03, 0.04])  # 0.03 lower on every seed
    noisy = _report("kd", [0.02, 0.09, 0.05])
    diffs, claims = compare([base, clear, noisy])
    assert diffs["kd_ts"]["ece"].mean == pytest.approx(-0.03)
    assert claims == [c for c in claims if c.startswith("kd_ts better than hard_ts on ece")]
    assert len(claims) == 1
