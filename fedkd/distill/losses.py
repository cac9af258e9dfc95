"""Distillation losses, written to read like the papers they come from.

- :func:`kd_loss` -- Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network".
- :func:`soft_target_ce` -- cross-entropy against given soft targets.
- :class:`HintProjection`, :func:`hint_loss` -- Romero et al. (2015), "FitNets: Hints for Thin
  Deep Nets".
- :func:`attention_transfer_loss` -- Zagoruyko & Komodakis (2017), "Paying More Attention to
  Attention".
- :func:`rkd_distance_loss`, :func:`rkd_angle_loss` -- Park et al. (2019), "Relational Knowledge
  Distillation".

All are pure functions of tensors (the projection of FitNets is the one learned module). None
detaches the teacher: pass ``teacher.detach()`` (or compute it under ``torch.no_grad()``) when
the teacher must not learn.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_EPS = 1e-12


def check_temperature(temperature: float) -> None:
    """Warn, then raise ``ValueError``, unless ``temperature`` is a finite number > 0."""
    if not math.isfinite(temperature) or temperature <= 0:
        warnings.warn(f"distillation temperature must be > 0, got {temperature}", stacklevel=3)
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")


def _check_logit_pair(student: Tensor, teacher: Tensor, teacher_name: str) -> None:
    if student.ndim != 2:
        raise ValueError(
            f"student_logits must have shape (batch, classes), got {tuple(student.shape)}"
        )
    if student.shape != teacher.shape:
        raise ValueError(
            f"student_logits {tuple(student.shape)} and {teacher_name} {tuple(teacher.shape)} "
            "must have the same shape (batch, classes)"
        )


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float = 4.0) -> Tensor:
    """Hinton knowledge-distillation loss ``KL(p_T || q_T) * T**2``.

    ``p_T = softmax(teacher_logits / T)`` and ``q_T = softmax(student_logits / T)``; the KL
    divergence is summed over classes and averaged over the batch. The ``T**2`` factor keeps the
    gradient magnitude comparable across temperatures.

    Parameters
    ----------
    student_logits, teacher_logits
        ``(batch, classes)`` tensors of the same shape.
    temperature
        Softening temperature ``T > 0``.

    Returns
    -------
    Tensor
        Scalar loss (0 when both logits define the same distribution).

    Raises
    ------
    ValueError
        When the shapes differ or are not 2-D, or when ``temperature <= 0`` (after a warning).
    """
    check_temperature(temperature)
    _check_logit_pair(student_logits, teacher_logits, "teacher_logits")
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    log_p = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    return kl * temperature**2


def soft_target_ce(
    student_logits: Tensor, teacher_probs: Tensor, *, temperature: float = 1.0
) -> Tensor:
    """Cross-entropy ``-sum_c p_c log softmax(s / T)_c`` against soft targets, batch mean.

    Unlike :func:`kd_loss` this takes teacher *probabilities* (e.g. an ensemble's mean
    probabilities, or one-hot labels mixed with them) and is not scaled by ``T**2``.

    Parameters
    ----------
    student_logits
        ``(batch, classes)`` student logits.
    teacher_probs
        ``(batch, classes)`` non-negative targets, each row summing to 1.
    temperature
        Temperature ``T > 0`` applied to the student logits.

    Returns
    -------
    Tensor
        Scalar loss.
    """
    check_temperature(temperature)
    _check_logit_pair(student_logits, teacher_probs, "teacher_probs")
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    return -(teacher_probs * log_q).sum(dim=1).mean()


class HintProjection(nn.Module):
    """Learned regressor mapping a student feature onto a teacher feature (FitNets).

    - ``(C, H, W)`` to ``(C', H', W')``: a 1x1 convolution ``C -> C'``, then adaptive average
      pooling to ``(H', W')`` when the spatial sizes differ.
    - ``(D,)`` to ``(D',)``: a linear layer.
    - mixed ranks: the student feature is flattened and a linear layer produces the teacher's
      shape.

    Parameters
    ----------
    student_shape, teacher_shape
        Per-sample feature shapes, without the batch dimension (e.g. ``feat.shape[1:]``).
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> None:
        super().__init__()
        self.student_shape = tuple(int(d) for d in student_shape)
        self.teacher_shape = tuple(int(d) for d in teacher_shape)
        for name, shape in (
            ("student_shape", self.student_shape),
            ("teacher_shape", self.teacher_shape),
        ):
            if len(shape) not in (1, 3) or min(shape) <= 0:
                raise ValueError(
                    f"{name} must be a per-sample shape (C, H, W) or (D,) with positive sizes, "
                    f"got {shape}"
                )
        self.project: nn.Module
        if len(self.student_shape) == 3 and len(self.teacher_shape) == 3:
            self.project = nn.Conv2d(self.student_shape[0], self.teacher_shape[0], 1, bias=False)
            self.resize: nn.Module = (
                nn.AdaptiveAvgPool2d(self.teacher_shape[1:])
                if self.student_shape[1:] != self.teacher_shape[1:]
                else nn.Identity()
            )
        else:
            self.project = nn.Linear(math.prod(self.student_shape), math.prod(self.teacher_shape))
            self.resize = nn.Identity()

    def forward(self, student_feat: Tensor) -> Tensor:
        """Project a ``(batch, *student_shape)`` feature to ``(batch, *teacher_shape)``."""
        if tuple(student_feat.shape[1:]) != self.student_shape:
            raise ValueError(
                f"HintProjection expects student features of shape (batch, {self.student_shape}),"
                f" got {tuple(student_feat.shape)}"
            )
        if isinstance(self.project, nn.Conv2d):
            return self.resize(self.project(student_feat))
        flat = self.project(student_feat.flatten(start_dim=1))
        return flat.view(student_feat.shape[0], *self.teacher_shape)


def hint_loss(student_feat: Tensor, teacher_feat: Tensor, projection: nn.Module) -> Tensor:
    """FitNets hint loss: ``MSE(projection(student_feat), teacher_feat)``.

    Parameters
    ----------
    student_feat
        ``(batch, ...)`` student hidden feature (the "guided" layer).
    teacher_feat
        ``(batch, ...)`` teacher hidden feature (the "hint" layer).
    projection
        Usually a :class:`HintProjection`; its output must have the teacher feature's shape.

    Returns
    -------
    Tensor
        Scalar mean squared error.
    """
    projected = projection(student_feat)
    if projected.shape != teacher_feat.shape:
        raise ValueError(
            f"projected student feature {tuple(projected.shape)} does not match the teacher "
            f"feature {tuple(teacher_feat.shape)}; build HintProjection(student_feat.shape[1:], "
            "teacher_feat.shape[1:])"
        )
    return F.mse_loss(projected, teacher_feat)


def _attention_map(feat: Tensor, p: float, size: tuple[int, int]) -> Tensor:
    """``(B, C, H, W)`` -> L2-normalised ``(B, h*w)`` map of ``mean_c |f_c|^p`` at ``size``."""
    amap = feat.abs().pow(p).mean(dim=1, keepdim=True)  # (B, 1, H, W)
    if tuple(amap.shape[2:]) != size:
        amap = F.interpolate(amap, size=size, mode="bilinear", align_corners=False)
    return F.normalize(amap.flatten(start_dim=1), p=2, dim=1, eps=_EPS)  # (B, h*w)


def attention_transfer_loss(
    student_feat: Tensor, teacher_feat: Tensor, *, p: float = 2.0
) -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis): match normalised spatial attention maps.

    The attention map of a ``(B, C, H, W)`` feature is ``Q = mean_c |A_c|^p``, flattened and
    L2-normalised; the loss is the mean squared difference of student and teacher maps. Channel
    counts may differ; when the spatial sizes differ the smaller map is bilinearly interpolated
    to the larger one.

    Parameters
    ----------
    student_feat, teacher_feat
        ``(batch, channels, height, width)`` features with the same batch size.
    p
        Exponent of the activation magnitude (the paper uses 2).

    Returns
    -------
    Tensor
        Scalar loss, 0 when the maps agree.
    """
    for name, feat in (("student_feat", student_feat), ("teacher_feat", teacher_feat)):
        if feat.ndim != 4:
            raise ValueError(
                f"{name} must have shape (batch, channels, height, width), got {tuple(feat.shape)}"
            )
    if student_feat.shape[0] != teacher_feat.shape[0]:
        raise ValueError(
            f"batch sizes differ: student {student_feat.shape[0]}, teacher {teacher_feat.shape[0]}"
        )
    if p <= 0:
        raise ValueError(f"p must be > 0, got {p}")
    s_hw = (int(student_feat.shape[2]), int(student_feat.shape[3]))
    t_hw = (int(teacher_feat.shape[2]), int(teacher_feat.shape[3]))
    size = max(s_hw, t_hw, key=lambda hw: hw[0] * hw[1])
    diff = _attention_map(student_feat, p, size) - _attention_map(teacher_feat, p, size)
    return diff.pow(2).mean()


def _check_embedding_pair(student: Tensor, teacher: Tensor, min_batch: int) -> None:
    if student.ndim < 2 or teacher.ndim < 2:
        raise ValueError(
            "embeddings must have shape (batch, dim...), got student "
            f"{tuple(student.shape)} and teacher {tuple(teacher.shape)}"
        )
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"batch sizes differ: student {student.shape[0]}, teacher {teacher.shape[0]}"
        )
    if student.shape[0] < min_batch:
        raise ValueError(
            f"relational losses need a batch of at least {min_batch} samples, got "
            f"{student.shape[0]}"
        )


def _pairwise_distances(emb: Tensor) -> Tensor:
    """``(B, D)`` -> ``(B, B)`` Euclidean distances, zero diagonal, finite gradients."""
    centred = emb - emb.mean(dim=0, keepdim=True)  # translation-free, better conditioned Gram
    sq_norm = centred.pow(2).sum(dim=1)
    sq_dist = sq_norm[:, None] + sq_norm[None, :] - 2.0 * centred @ centred.T
    dist = sq_dist.clamp(min=_EPS).sqrt()
    off_diagonal = 1.0 - torch.eye(emb.shape[0], device=emb.device, dtype=emb.dtype)
    return dist * off_diagonal


def _normalised_distances(emb: Tensor) -> Tensor:
    dist = _pairwise_distances(emb.flatten(start_dim=1))
    num_pairs = emb.shape[0] * (emb.shape[0] - 1)
    mean_dist = dist.sum() / num_pairs
    return dist / mean_dist.clamp(min=_EPS)


def rkd_distance_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """RKD distance-wise loss (Park et al. 2019).

    Pairwise distances of each batch are divided by their mean over distinct pairs, so the loss
    is invariant to rotation, translation and scaling of either embedding; the student's and the
    teacher's normalised distances are compared with the Huber (smooth L1) loss.

    Parameters
    ----------
    student_emb, teacher_emb
        ``(batch, dim)`` embeddings (dims may differ; extra dims are flattened); batch >= 2.

    Returns
    -------
    Tensor
        Scalar loss.
    """
    _check_embedding_pair(student_emb, teacher_emb, min_batch=2)
    return F.smooth_l1_loss(_normalised_distances(student_emb), _normalised_distances(teacher_emb))


def _angles(emb: Tensor) -> Tensor:
    """``(B, D)`` -> ``(B*B*B,)`` cosines of angle ``(e_i - e_j, e_k - e_j)`` at every ``j``."""
    flat = emb.flatten(start_dim=1)
    diff = flat[None, :, :] - flat[:, None, :]  # (B_j, B_i, D): e_i - e_j
    unit = F.normalize(diff, p=2, dim=2, eps=_EPS)
    return torch.bmm(unit, unit.transpose(1, 2)).flatten()  # (B_j, B_i, B_k)


def rkd_angle_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """RKD angle-wise loss (Park et al. 2019).

    For every triplet ``(i, j, k)`` the cosine of the angle at ``j`` between the normalised
    difference vectors ``e_i - e_j`` and ``e_k - e_j`` is compared between student and teacher
    with the Huber (smooth L1) loss. Invariant to rotation, translation and scaling.

    Parameters
    ----------
    student_emb, teacher_emb
        ``(batch, dim)`` embeddings (dims may differ; extra dims are flattened); batch >= 3.
        Memory grows as ``batch**2 * dim``.

    Returns
    -------
    Tensor
        Scalar loss.
    """
    _check_embedding_pair(student_emb, teacher_emb, min_batch=3)
    return F.smooth_l1_loss(_angles(student_emb), _angles(teacher_emb))
