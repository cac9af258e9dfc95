"""The shared training recipe: one loop over loss terms, early stopping, term checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedkd.data import DataSplit
from fedkd.distill.recipe import (
    FitConfig,
    Validation,
    fit,
    model_outputs,
    predict_outputs,
    teacher_outputs,
    validation_accuracy,
)
from fedkd.distill.terms import (
    UNLABELLED,
    CrossEntropy,
    DistributionMatch,
    Relational,
    SoftTargets,
    Step,
    hint_term,
    kd_mix,
)
from fedkd.models import build_model


def _mlp(split: DataSplit, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", input_shape=split.input_shape, num_classes=10, hidden=[32])


def test_cross_entropy_recipe_learns_digits(digits: DataSplit) -> None:
    model = _mlp(digits)
    arrays = {"x": digits.private.x, "labels": digits.private.y}
    report = fit(model, arrays, [CrossEntropy()], FitConfig(epochs=15, lr=3e-3), device="cpu")
    assert report.epochs == 15 and report.losses[-1] < report.losses[0]
    accuracy = validation_accuracy(
        model, Validation(digits.test.x, digits.test.y), torch.device("cpu")
    )
    assert accuracy > 0.85


def test_early_stopping_keeps_the_best_epoch(digits: DataSplit) -> None:
    model = _mlp(digits)
    arrays = {"x": digits.private.x, "labels": digits.private.y}
    val = Validation(digits.public.x, digits.public.y)
    config = FitConfig(epochs=200, lr=1e-2, patience=3)
    report = fit(model, arrays, [CrossEntropy()], config, device="cpu", validation=val)
    assert report.epochs < 200  # stopped
    assert report.best_epoch is not None
    assert report.epochs - report.best_epoch == 3
    best = max(report.validation_scores)
    assert report.validation_scores[report.best_epoch - 1] == best
    assert validation_accuracy(model, val, torch.device("cpu")) == pytest.approx(best)


def test_unlabelled_rows_are_skipped_by_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]], requires_grad=True)
    labels = torch.tensor([0, UNLABELLED])
    loss = CrossEntropy()(Step({"logits": logits}, {"labels": labels}))
    expected = nn.functional.cross_entropy(logits[:1], labels[:1])
    assert float(loss) == pytest.approx(float(expected))
    none = CrossEntropy()(Step({"logits": logits}, {"labels": torch.tensor([-1, -1])}))
    assert float(none) == 0.0 and none.requires_grad


def test_class_mask_gives_task_aware_cross_entropy() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0, 0.0]])
    mask = torch.tensor([[False, False, True, True]])
    step = Step({"logits": logits}, {"labels": torch.tensor([2]), "class_mask": mask})
    masked = CrossEntropy(mask="class_mask")(step)
    expected = nn.functional.cross_entropy(logits[:, 2:], torch.tensor([0]))
    assert float(masked) == pytest.approx(float(expected))
    assert float(CrossEntropy()(step)) > float(masked)  # class 1 competes without the mask


def test_soft_targets_over_a_class_subset_ignore_other_columns() -> None:
    student = torch.tensor([[1.0, 2.0, 9.0]])
    teacher = torch.tensor([[1.0, 2.0, -9.0]])
    step = Step({"logits": student}, {"teacher:logits": teacher})
    assert float(SoftTargets(temperature=2.0, classes=(0, 1))(step)) == pytest.approx(0.0)
    assert float(SoftTargets(temperature=2.0)(step)) > 1.0


def test_missing_fields_and_empty_terms_are_named(digits: DataSplit) -> None:
    model = _mlp(digits)
    with pytest.raises(ValueError, match="teacher:logits"):
        fit(model, {"x": digits.test.x}, [SoftTargets()], FitConfig(epochs=1))
    with pytest.raises(ValueError, match="at least one loss term"):
        fit(model, {"x": digits.test.x}, [], FitConfig(epochs=1))
    with pytest.raises(ValueError, match="patience"):
        FitConfig(patience=0)
    with pytest.raises(ValueError, match="hard_label_weight"):
        kd_mix(temperature=2.0, hard_label_weight=1.5)


def test_kd_from_teacher_outputs_and_hint_projection_learns(digits: DataSplit) -> None:
    teacher = _mlp(digits, seed=1)
    fit(
        teacher,
        {"x": digits.private.x, "labels": digits.private.y},
        [CrossEntropy()],
        FitConfig(epochs=10, lr=3e-3),
    )
    fields = teacher_outputs(teacher, digits.private.x, ["logits", "fc1"])
    assert set(fields) == {"teacher:logits", "teacher:fc1"}
    student = build_model("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[16])
    hint = hint_term(
        weight=1.0, output="fc1", teacher_output="fc1", student_shape=(16,), teacher_shape=(32,)
    )
    before = [p.detach().clone() for p in hint.projection.parameters()]
    terms = [*kd_mix(temperature=4.0, hard_label_weight=0.0), hint]
    fit(student, {"x": digits.private.x, **fields}, terms, FitConfig(epochs=10, lr=3e-3))
    after = list(hint.projection.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    agreement = np.mean(
        predict_outputs(student, digits.test.x, ["logits"])["logits"].argmax(1)
        == predict_outputs(teacher, digits.test.x, ["logits"])["logits"].argmax(1)
    )
    assert agreement > 0.8  # learnt from the teacher's soft targets alone


def test_min_epoch_samples_repeats_a_small_set(digits: DataSplit) -> None:
    small = digits.private.subset(np.arange(50))
    model = _mlp(digits)
    seen: list[float] = []

    class Counter:
        def step(self, *, loss: float | None = None, samples: int = 0, **_: float) -> str:
            seen.append(samples)
            return ""

    config = FitConfig(epochs=2, batch_size=10, min_epoch_samples=120)
    fit(model, {"x": small.x, "labels": small.y}, [CrossEntropy()], config, progress=Counter())  # type: ignore[arg-type]
    assert seen == [150, 150]  # three shuffles of 50 per epoch


def test_relational_and_distribution_terms_vanish_on_their_targets() -> None:
    outputs = {"a": torch.randn(6, 3), "b": torch.randn(6, 2)}
    batch = {f"teacher:{k}": v.clone() for k, v in outputs.items()}
    for per_output in (False, True):
        term = Relational(outputs=("a", "b"), per_output=per_output)
        assert float(term(Step(outputs, batch))) == pytest.approx(0.0, abs=1e-6)
    weights = torch.softmax(torch.randn(4, 5), dim=1)
    step = Step({"pooling": weights}, {"teacher:pooling": weights.clone()})
    assert float(DistributionMatch()(step)) == pytest.approx(0.0, abs=1e-6)
    other = Step({"pooling": weights}, {"teacher:pooling": weights.flip(1)})
    assert float(DistributionMatch()(other)) > 0.0


def test_model_outputs_accepts_tensors_dicts_and_feature_models(digits: DataSplit) -> None:
    x = torch.from_numpy(digits.test.x[:3])
    assert set(model_outputs(_mlp(digits), x)) == {"fc1", "logits"}
    assert set(model_outputs(nn.Flatten(), x)) == {"logits"}
    with pytest.raises(TypeError, match="not a tensor"):
        model_outputs(nn.Identity().__class__(), x.tolist())  # type: ignore[arg-type]
