"""Tests of the training loops in fedkd.distill.train and the progress reporter."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from fedkd.data import ArrayDataset, DataSplit
from fedkd.distill import (
    EvalReport,
    TrainReport,
    distill,
    evaluate,
    predict_logits,
    resolve_device,
    train_supervised,
)
from fedkd.models import build_model
from fedkd.progress import ProgressReporter


def _cnn(split: DataSplit, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", input_shape=split.input_shape, num_classes=split.num_classes)


@pytest.fixture(scope="module")
def trained_teacher(digits: DataSplit) -> tuple[nn.Module, TrainReport]:
    model = _cnn(digits, seed=0)
    report = train_supervised(model, digits.private, epochs=8, batch_size=64, seed=0)
    return model, report


# --------------------------------------------------------------------------- acceptance


def test_cnn_reaches_95_percent_on_digits(
    digits: DataSplit, trained_teacher: tuple[nn.Module, TrainReport]
) -> None:
    model, report = trained_teacher
    result = evaluate(model, digits.test)
    assert result.accuracy >= 0.95, result
    assert result.num_samples == len(digits.test)
    assert report.epochs == 8 and len(report.losses) == 8
    assert report.losses[-1] < report.losses[0] / 10
    assert report.device == str(resolve_device(None)) and report.seconds > 0
    assert model.training  # train_supervised leaves the model in train mode


def test_distill_from_teacher_logits_beats_chance(
    digits: DataSplit, trained_teacher: tuple[nn.Module, TrainReport]
) -> None:
    teacher, _ = trained_teacher
    teacher_logits = predict_logits(teacher, digits.public.x)
    student = _cnn(digits, seed=1)
    before = evaluate(student, digits.test).accuracy
    report = distill(student, digits.public.x, teacher_logits=teacher_logits, epochs=6, seed=0)
    after = evaluate(student, digits.test).accuracy
    assert before < 0.3
    assert after >= 0.85, (before, after)
    assert report.losses[-1] < report.losses[0]


def test_distill_teacher_model_equals_its_logits(
    digits: DataSplit, trained_teacher: tuple[nn.Module, TrainReport]
) -> None:
    teacher, _ = trained_teacher
    inputs = digits.public.x[:128]
    from_model = build_model("mlp", input_shape=digits.input_shape, num_classes=10)
    from_logits = build_model("mlp", input_shape=digits.input_shape, num_classes=10)
    from_logits.load_state_dict(from_model.state_dict())
    a = distill(from_model, inputs, teacher_model=teacher, epochs=2, seed=3)
    logits = predict_logits(teacher, inputs)
    b = distill(from_logits, inputs, teacher_logits=logits, epochs=2, seed=3)
    assert a.losses == pytest.approx(b.losses, rel=1e-6)
    assert teacher.training  # the teacher's mode is restored


def test_distill_hard_label_mix(digits: DataSplit) -> None:
    inputs, labels = digits.public.x[:96], digits.public.y[:96]
    uniform = np.zeros((96, 10), dtype=np.float32)
    student = build_model("mlp", input_shape=digits.input_shape, num_classes=10)
    pure_ce = distill(
        student,
        inputs,
        teacher_logits=uniform,
        labels=labels,
        hard_label_weight=1.0,
        epochs=10,
        batch_size=16,
        lr=3e-3,
    )
    # with a = 1 the loss is the cross-entropy on the labels, so the student learns them
    assert pure_ce.losses[-1] < pure_ce.losses[0]
    assert evaluate(student, ArrayDataset(inputs, labels)).accuracy > 0.5


# --------------------------------------------------------------------------- determinism, progress


def test_train_supervised_is_seeded(digits: DataSplit) -> None:
    small = digits.private.subset(np.arange(200))

    def run(shuffle_seed: int) -> list[float]:
        torch.manual_seed(0)
        model = build_model("mlp", input_shape=digits.input_shape, num_classes=10)
        return train_supervised(model, small, epochs=2, seed=shuffle_seed).losses

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_progress_prints_only_when_enabled(
    digits: DataSplit, capsys: pytest.CaptureFixture[str]
) -> None:
    small = digits.private.subset(np.arange(64))
    model = build_model("mlp", input_shape=digits.input_shape, num_classes=10)
    train_supervised(model, small, epochs=2, progress=False)
    assert capsys.readouterr().err == ""
    train_supervised(model, small, epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "train epoch 1/2 loss=" in err and "train epoch 2/2" in err and "samples/s" in err


def test_progress_reporter_line() -> None:
    stream = io.StringIO()
    bar = ProgressReporter(3, description="fl", unit="round", stream=stream)
    line = bar.step(loss=0.5, samples=10, accuracy=0.9)
    assert line.startswith("fl round 1/3 loss=0.5000 accuracy=0.9")
    assert stream.getvalue() == line + "\n"
    quiet = ProgressReporter(1, enabled=False, stream=stream)
    quiet.step()
    assert stream.getvalue() == line + "\n"
    with pytest.raises(ValueError, match="total"):
        ProgressReporter(-1)


# --------------------------------------------------------------------------- shapes and errors


def test_predict_logits_and_evaluate_shapes(digits: DataSplit) -> None:
    model = build_model("mlp", input_shape=digits.input_shape, num_classes=10)
    model.train()
    logits = predict_logits(model, digits.test.x, batch_size=100)
    assert logits.shape == (len(digits.test), 10) and logits.dtype == np.float32
    assert model.training
    np.testing.assert_allclose(
        predict_logits(model, digits.test.x[:7], batch_size=3), logits[:7], rtol=1e-5, atol=1e-6
    )
    report = evaluate(model, digits.test, batch_size=50)
    assert isinstance(report, EvalReport)
    assert 0.0 <= report.accuracy <= 1.0 and report.num_samples == len(digits.test)
    expected = torch.nn.functional.cross_entropy(
        torch.from_numpy(logits), torch.from_numpy(digits.test.y)
    )
    assert report.loss == pytest.approx(float(expected), rel=1e-5)


def test_empty_data_is_refused(digits: DataSplit) -> None:
    model = build_model("mlp", input_shape=digits.input_shape, num_classes=10)
    empty = digits.test.subset(np.arange(0))
    with pytest.raises(ValueError, match="empty"):
        train_supervised(model, empty)
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, empty)
    with pytest.raises(ValueError, match="empty"):
        predict_logits(model, empty.x)
    with pytest.raises(ValueError, match="empty"):
        distill(model, empty.x, teacher_logits=np.zeros((0, 10), dtype=np.float32))


def test_bad_arguments_are_named(digits: DataSplit) -> None:
    model = build_model("mlp", input_shape=digits.input_shape, num_classes=10)
    x = digits.public.x[:8]
    logits = np.zeros((8, 10), dtype=np.float32)
    with pytest.raises(ValueError, match="exactly one"):
        distill(model, x)
    with pytest.raises(ValueError, match="exactly one"):
        distill(model, x, teacher_logits=logits, teacher_model=model)
    with pytest.raises(ValueError, match=r"teacher_logits must have shape \(8, classes\)"):
        distill(model, x, teacher_logits=logits[:4])
    with pytest.raises(ValueError, match="needs labels"):
        distill(model, x, teacher_logits=logits, hard_label_weight=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        distill(model, x, teacher_logits=logits, hard_label_weight=1.5)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="temperature"):
        distill(model, x, teacher_logits=logits, temperature=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        predict_logits(model, x, batch_size=0)
    with pytest.raises(ValueError, match="integer"):
        distill(model, x, teacher_logits=logits, labels=np.zeros(8), hard_label_weight=0.5)
    with pytest.raises(ValueError, match=r"labels must have shape \(8,\)"):
        distill(model, x, teacher_logits=logits, labels=np.zeros(5, int), hard_label_weight=0.5)
    with pytest.raises(ValueError, match="floating-point"):
        predict_logits(model, np.zeros((2, 1, 8, 8), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        evaluate(model, ArrayDataset(x, np.full(8, 12, dtype=np.int64)))


def test_amp_request_on_cpu_warns_and_runs_in_float32(digits: DataSplit) -> None:
    model = build_model("mlp", input_shape=digits.input_shape, num_classes=10)
    x = digits.public.x[:16]
    with pytest.warns(UserWarning, match="CUDA only"):
        report = distill(
            model, x, teacher_logits=np.zeros((16, 10), np.float32), amp=True, device="cpu"
        )
    assert report.device == "cpu"


def test_resolve_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device().type == expected
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu-9000")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
