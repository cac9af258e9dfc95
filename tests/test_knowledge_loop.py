"""The knowledge loop: local training rehearses the pushed teacher; the student is guarded;
the clients' accuracy spread travels inside the summed vector."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkd.data import ArrayDataset
from fedkd.distill import predict_logits
from fedkd.distill.terms import SoftTargets, Step
from fedkd.distill.train import train_with_soft_targets
from fedkd.fl.config import parse_run_config
from fedkd.fl.contribution import ACCURACY_BINS, STATS, split_sum, stats_block
from fedkd.fl.server_work import _average_into, _holdout, distill_round, new_student
from fedkd.models import build_model


def _agreement(model: torch.nn.Module, x: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean(predict_logits(model, x).argmax(1) == target))


def test_soft_targets_only_on_their_rows() -> None:
    student = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    rows = torch.tensor([True, False])
    step = Step({"logits": student}, {"teacher:logits": teacher, "soft": rows})
    assert float(SoftTargets(temperature=1.0, rows="soft")(step)) == pytest.approx(0.0, abs=1e-6)
    assert float(SoftTargets(temperature=1.0)(step)) > 0.1  # the second row disagrees
    none = Step(
        {"logits": student}, {"teacher:logits": teacher, "soft": torch.zeros(2, dtype=bool)}
    )
    assert float(SoftTargets(temperature=1.0, rows="soft")(none)) == 0.0


def test_rehearsing_the_teacher_keeps_the_classes_a_client_does_not_hold(digits) -> None:
    """A client holding two classes forgets the rest with plain training; with the pushed
    teacher's targets on the public set it keeps agreeing with the teacher on all classes."""
    split = digits
    teacher_model = build_model("mlp", input_shape=split.input_shape, num_classes=10)
    from fedkd.distill import train_supervised

    train_supervised(teacher_model, split.private, epochs=15, seed=0)
    teacher = predict_logits(teacher_model, split.public.x)
    held = np.isin(split.private.y, [0, 1])
    shard = ArrayDataset(split.private.x[held], split.private.y[held])
    results = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = build_model("mlp", input_shape=split.input_shape, num_classes=10)
        model.load_state_dict(teacher_model.state_dict())  # the pushed knowledge, FedDF-style
        train_with_soft_targets(
            model, shard, split.public.x, teacher, kd_weight=weight, epochs=8, seed=1
        )
        results[weight] = _agreement(model, split.test.x, split.test.y)
    assert results[0.0] < 0.6  # two classes of ten: most of the rest forgotten
    assert results[1.0] > results[0.0] + 0.25


def test_a_subsample_of_public_rows_is_seeded(digits) -> None:
    split = digits
    shard = ArrayDataset(split.private.x[:40], split.private.y[:40])
    teacher = np.zeros((len(split.public), 10), np.float32)
    outcomes = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("mlp", input_shape=split.input_shape, num_classes=10)
        report = train_with_soft_targets(
            model, shard, split.public.x, teacher, public_samples=30, epochs=1, seed=3
        )
        outcomes.append(report.losses[-1])
    assert outcomes[0] == outcomes[1]
    with pytest.raises(ValueError, match="kd_weight"):
        train_with_soft_targets(model, shard, split.public.x, teacher, kd_weight=-1.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40))
def test_the_summed_histogram_gives_the_spread_to_one_point(accuracies: list[float]) -> None:
    teacher_part = np.zeros(7)
    total = sum(np.concatenate([teacher_part, stats_block(a, 0.5, 0.0)]) for a in accuracies)
    _, stats = split_sum(total, len(accuracies))
    width = 1.0 / ACCURACY_BINS
    assert abs(stats.accuracy_min - min(accuracies)) <= width
    assert abs(stats.accuracy_max - max(accuracies)) <= width
    assert abs(stats.accuracy_median - float(np.median(accuracies))) <= width + 1e-9 or (
        len(accuracies) % 2 == 0  # an even count: our median is the lower middle's bin
    )
    assert stats.accuracy_mean == pytest.approx(np.mean(accuracies))
    assert len(total) == 7 + len(STATS)


def test_no_evaluation_gives_no_spread() -> None:
    total = np.concatenate([np.zeros(3), stats_block(float("nan"), 1.0, 0.0)])
    _, stats = split_sum(total, 1)
    assert np.isnan(stats.accuracy_min) and np.isnan(stats.accuracy_mean)


def test_holdout_is_seeded_and_disjoint() -> None:
    config = parse_run_config({"distill-patience": 3, "distill-holdout": 0.1})
    train, held = _holdout(config, 200)
    assert len(held) == 20 and not set(train) & set(held) and len(train) + len(held) == 200
    np.testing.assert_array_equal(held, _holdout(config, 200)[1])
    off = parse_run_config({"distill-patience": 0})
    assert len(_holdout(off, 200)[1]) == 0


def test_a_small_public_set_still_gets_a_full_distillation(digits) -> None:
    # 64 public rows are one batch: three plain epochs would be three optimiser steps and leave
    # a fresh student near chance; an epoch covers MIN_EPOCH_ROWS rows, so it learns the teacher.
    small = dataclasses.replace(
        digits, public=ArrayDataset(digits.public.x[:64], digits.public.y[:64])
    )
    teacher = np.eye(small.num_classes, dtype=np.float32)[small.public.y] * 8.0  # sharp, correct
    config = parse_run_config({"model": "cnn_small", "distill-epochs": 3, "distill-patience": 0})
    student = new_student(config, small)
    outcome = distill_round(student, teacher, config, small, server_round=1)
    assert _agreement(student, small.public.x, small.public.y) > 0.9
    assert outcome.student_accuracy > 0.5  # 64 images of 10 digits generalise some way


def test_student_ema_averages_float_weights() -> None:
    model = torch.nn.Linear(2, 1)
    previous = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    current = {k: v.clone() for k, v in model.state_dict().items()}
    _average_into(model, previous, 0.75)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, 0.25 * current[name])


@pytest.mark.parametrize(
    ("key", "value"),
    [("local-kd-weight", -1), ("student-ema", 1.0), ("distill-holdout", 1.0), ("secagg-bits", 0)],
)
def test_bad_loop_settings_are_refused(key: str, value: float) -> None:
    with pytest.raises(ValueError, match=key):
        parse_run_config({key: value})


def test_the_rehearsal_experiment_prints_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    from experiments import rehearsal

    assert rehearsal.main(["--clients", "4", "--show", "1", "--epochs", "1"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0 (")]
    assert len(lines) == 1 and lines[0].count("%") == 4


@pytest.mark.slow
def test_the_bits_experiment_compares_widths(capsys: pytest.CaptureFixture[str]) -> None:
    from experiments import bits_tradeoff

    argv = ["--bits", "12", "40", "--clients", "3", "--rounds", "1"]
    argv += ["--set", "local-epochs=1", "warmup-epochs=1", "distill-epochs=1", "model=mlp"]
    assert bits_tradeoff.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split("|")[1].strip(): line for line in out if line.startswith("| ")}
    assert "12" in rows and "40" in rows
    assert float(rows["40"].split("|")[4]) == 0.0  # the widest run against itself
    assert float(rows["12"].split("|")[5]) < float(rows["40"].split("|")[5])  # fewer kB up
