"""Tests of the distillation losses in fedkd.distill.losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkd.distill import (
    HintProjection,
    attention_transfer_loss,
    hint_loss,
    kd_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    soft_target_ce,
)


def _hand_kl_times_t2(student: list[float], teacher: list[float], temperature: float) -> float:
    """KL(softmax(t/T) || softmax(s/T)) * T^2 for one sample, in plain Python."""

    def softmax(z: list[float]) -> list[float]:
        exps = [math.exp(v / temperature) for v in z]
        return [e / sum(exps) for e in exps]

    p, q = softmax(teacher), softmax(student)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True)) * temperature**2


# --------------------------------------------------------------------------- kd_loss


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    assert kd_loss(logits, logits.clone(), temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits, logits + 7.0, temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    assert kd_loss(logits, other, temperature=3.0).item() > 1e-3


def test_kd_loss_two_class_hand_computed_value() -> None:
    # T = 1: p = softmax([0, ln 3]) = [1/4, 3/4], q = softmax([0, 0]) = [1/2, 1/2]
    # KL = 1/4 ln(1/2) + 3/4 ln(3/2)
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[0.0, math.log(3.0)]])
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert kd_loss(student, teacher, temperature=1.0).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0, 10.0])
def test_kd_loss_matches_hand_kl_with_t_squared_factor(temperature: float) -> None:
    student = [[1.0, -0.5, 2.0], [0.0, 0.3, -1.0]]
    teacher = [[2.0, 0.5, -1.0], [0.7, 0.1, 0.4]]
    pairs = zip(student, teacher, strict=True)
    expected = np.mean([_hand_kl_times_t2(s, t, temperature) for s, t in pairs])
    got = kd_loss(torch.tensor(student), torch.tensor(teacher), temperature=temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_gradient_magnitude_is_comparable_across_temperatures() -> None:
    # For large T the gradient wrt the student logits tends to (s - t) / C (zero-mean logits):
    # the T^2 factor cancels the 1/T^2 shrinkage, so the norm stays put as T grows.
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(16, 10, generator=gen)
    teacher = teacher - teacher.mean(dim=1, keepdim=True)
    norms = []
    for temperature in (4.0, 16.0, 64.0):
        student = torch.randn(16, 10, generator=torch.Generator().manual_seed(1))
        student = (student - student.mean(dim=1, keepdim=True)).requires_grad_()
        kd_loss(student, teacher, temperature=temperature).backward()
        assert student.grad is not None
        norms.append(student.grad.norm().item())
    assert max(norms) / min(norms) < 1.5
    # Without the T^2 factor the norms would shrink by 16x per step; check it is really there.
    assert norms[2] > norms[0] / 2


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_kd_loss_rejects_non_positive_temperature_with_warning(temperature: float) -> None:
    logits = torch.zeros(2, 3)
    with pytest.warns(UserWarning, match="temperature"), pytest.raises(ValueError, match="> 0"):
        kd_loss(logits, logits, temperature=temperature)


def test_kd_loss_shape_errors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="batch, classes"):
        kd_loss(torch.zeros(3), torch.zeros(3))


def test_kd_loss_stays_finite_with_extreme_teacher_logits() -> None:
    student = torch.zeros(2, 3, requires_grad=True)
    teacher = torch.tensor([[0.0, -1e4, -1e4], [-138.0, 0.0, -69.0]])
    loss = kd_loss(student, teacher, temperature=1.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert student.grad is not None and torch.isfinite(student.grad).all()


# --------------------------------------------------------------------------- soft_target_ce


def test_soft_target_ce_equals_cross_entropy_for_one_hot_targets() -> None:
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert soft_target_ce(logits, one_hot).item() == pytest.approx(expected.item(), rel=1e-6)


def test_soft_target_ce_is_entropy_plus_kl() -> None:
    # CE(p, q) = H(p) + KL(p || q); at T = 1 the KL part is kd_loss.
    gen = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    probs = teacher.softmax(dim=1)
    entropy = -(probs * probs.log()).sum(dim=1).mean()
    expected = entropy + kd_loss(student, teacher, temperature=1.0)
    assert soft_target_ce(student, probs).item() == pytest.approx(expected.item(), rel=1e-5)


def test_soft_target_ce_temperature_and_shape() -> None:
    logits = torch.tensor([[2.0, 0.0]])
    target = torch.tensor([[1.0, 0.0]])
    expected = -torch.log_softmax(logits / 2.0, dim=1)[0, 0].item()
    assert soft_target_ce(logits, target, temperature=2.0).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="same shape"):
        soft_target_ce(torch.zeros(2, 3), torch.zeros(3, 3))


# --------------------------------------------------------------------------- FitNets hints


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape"),
    [
        ((4, 8, 8), (16, 8, 8)),
        ((4, 8, 8), (16, 4, 4)),
        ((4, 4, 4), (6, 8, 8)),
        ((32,), (64,)),
        ((4, 8, 8), (64,)),
        ((32,), (2, 4, 4)),
    ],
)
def test_hint_projection_output_shapes(
    student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]
) -> None:
    projection = HintProjection(student_shape, teacher_shape)
    student = torch.randn(3, *student_shape)
    teacher = torch.randn(3, *teacher_shape)
    assert projection(student).shape == (3, *teacher_shape)
    loss = hint_loss(student, teacher, projection)
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is not None for p in projection.parameters())


def test_hint_projection_uses_1x1_conv_and_pooling_for_maps() -> None:
    projection = HintProjection((4, 8, 8), (16, 4, 4))
    assert isinstance(projection.project, torch.nn.Conv2d)
    assert projection.project.kernel_size == (1, 1)
    assert isinstance(projection.resize, torch.nn.AdaptiveAvgPool2d)
    assert isinstance(HintProjection((4, 8, 8), (16, 8, 8)).resize, torch.nn.Identity)
    assert isinstance(HintProjection((8,), (3,)).project, torch.nn.Linear)


def test_hint_loss_is_zero_when_projection_matches() -> None:
    projection = HintProjection((5,), (5,))
    assert isinstance(projection.project, torch.nn.Linear)
    with torch.no_grad():
        projection.project.weight.copy_(torch.eye(5))
        projection.project.bias.zero_()
    feat = torch.randn(4, 5)
    assert hint_loss(feat, feat.clone(), projection).item() == pytest.approx(0.0, abs=1e-12)


def test_hint_shape_errors() -> None:
    projection = HintProjection((4, 8, 8), (16, 8, 8))
    with pytest.raises(ValueError, match="student features of shape"):
        projection(torch.zeros(2, 5, 8, 8))
    with pytest.raises(ValueError, match="does not match the teacher"):
        hint_loss(torch.zeros(2, 4, 8, 8), torch.zeros(2, 16, 4, 4), projection)
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(D,\)"):
        HintProjection((4, 8), (4,))


# --------------------------------------------------------------------------- attention transfer


def test_attention_transfer_zero_for_equal_maps_even_with_other_channels() -> None:
    feat = torch.randn(3, 4, 6, 6)
    assert attention_transfer_loss(feat, feat.clone()).item() == pytest.approx(0.0, abs=1e-10)
    # Channel count and scale do not change the normalised map of mean |f|^2.
    teacher = torch.cat([feat, feat], dim=1) * 3.0
    assert attention_transfer_loss(feat, teacher).item() == pytest.approx(0.0, abs=1e-10)


def test_attention_transfer_positive_and_spatial_resize() -> None:
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(2, 4, 4, 4, generator=gen, requires_grad=True)
    teacher = torch.randn(2, 8, 8, 8, generator=gen)
    loss = attention_transfer_loss(student, teacher)
    loss.backward()
    assert loss.item() > 0
    assert student.grad is not None and torch.isfinite(student.grad).all()
    # a spatially constant map stays constant after interpolation: zero loss across sizes
    flat_small, flat_large = torch.ones(2, 3, 4, 4), torch.ones(2, 5, 8, 8)
    assert attention_transfer_loss(flat_small, flat_large).item() == pytest.approx(0, abs=1e-10)
    assert attention_transfer_loss(flat_large, flat_small).item() == pytest.approx(0, abs=1e-10)


def test_attention_transfer_shape_errors() -> None:
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        attention_transfer_loss(torch.zeros(2, 8), torch.zeros(2, 4, 4, 4))
    with pytest.raises(ValueError, match="batch sizes differ"):
        attention_transfer_loss(torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 4, 4))


# --------------------------------------------------------------------------- relational KD


def _random_orthogonal(dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(0.01, 100.0),
    shift=st.floats(-50.0, 50.0),
)
def test_rkd_losses_invariant_to_rotation_translation_scaling(
    seed: int, scale: float, shift: float
) -> None:
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(8, 6, generator=gen, dtype=torch.float64)
    student = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    moved = scale * teacher @ _random_orthogonal(6, seed) + shift
    for loss_fn in (rkd_distance_loss, rkd_angle_loss):
        assert loss_fn(moved, teacher).item() == pytest.approx(0.0, abs=1e-9)
        reference = loss_fn(student, teacher).item()
        assert reference > 1e-4
        assert loss_fn(student, moved).item() == pytest.approx(reference, rel=1e-6, abs=1e-9)


def test_rkd_losses_detect_changed_geometry_and_give_gradients() -> None:
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 5, generator=gen)
    student = teacher.clone()
    student[0] += 3.0  # move one point: distances and angles change
    student.requires_grad_()
    for loss_fn in (rkd_distance_loss, rkd_angle_loss):
        loss = loss_fn(student, teacher)
        assert loss.item() > 1e-4
        (grad,) = torch.autograd.grad(loss, student)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_rkd_shape_errors() -> None:
    with pytest.raises(ValueError, match="batch sizes differ"):
        rkd_distance_loss(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least 2"):
        rkd_distance_loss(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="at least 3"):
        rkd_angle_loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="batch, dim"):
        rkd_angle_loss(torch.zeros(4), torch.zeros(4))
