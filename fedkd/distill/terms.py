"""Loss terms: the pieces a training recipe sums, each reading the student's outputs and a batch.

A term is a callable ``term(step) -> scalar`` with a ``weight``; :func:`fedkd.distill.recipe.fit`
adds ``weight * term(step)`` over its terms for every batch. ``step.student`` holds the student's
named outputs (``"logits"`` and, for a :class:`~fedkd.models.FeatureModel`, its hidden features);
``step.batch`` holds the staged fields of the batch (``"x"``, ``"labels"``, ``"class_mask"``) and
the teacher's precomputed outputs under ``"teacher:<name>"``.

The terms, each the paper's loss (the maths is in :mod:`fedkd.distill.losses`):

- :class:`CrossEntropy` -- hard labels (rows labelled ``-1`` are unlabelled and skipped; an
  optional per-row class mask gives task-aware heads).
- :class:`SoftTargets` -- Hinton KD at ``T`` with ``T**2`` scaling, optionally over a subset of
  the classes (Learning without Forgetting distils the old classes only).
- :class:`Hint` -- FitNets / TinyBERT hidden-state matching through a learned projection.
- :class:`AttentionTransfer` -- Zagoruyko & Komodakis spatial attention maps.
- :class:`DistributionMatch` -- KL between two distributions, e.g. attention pooling weights.
- :class:`Relational` -- RKD distance and angle losses (Park et al. 2019).
- :class:`Proximal` -- FedProx's ``mu / 2 * ||w - w0||^2`` towards the starting weights.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedkd.distill.losses import (
    HintProjection,
    attention_transfer_loss,
    check_temperature,
    hint_loss,
    kd_loss,
    rkd_angle_loss,
    rkd_distance_loss,
)

TEACHER_PREFIX = "teacher:"
UNLABELLED = -1  # label of a transfer-set row without a hard label
_MASKED_LOGIT = -1e9


def teacher_key(name: str) -> str:
    """The batch field that holds the teacher's output ``name``."""
    return TEACHER_PREFIX + name


@dataclass(frozen=True)
class Step:
    """What a term sees of one batch: the student's outputs and the staged batch fields."""

    student: dict[str, Tensor]
    batch: dict[str, Tensor]

    def output(self, name: str) -> Tensor:
        """The student's output ``name`` (a ``KeyError`` names the outputs there are)."""
        if name not in self.student:
            raise KeyError(f"the student has no output {name!r}; it has {sorted(self.student)}")
        return self.student[name]

    def field(self, name: str) -> Tensor:
        """The batch field ``name`` (a ``KeyError`` names the fields there are)."""
        if name not in self.batch:
            raise KeyError(f"the batch has no field {name!r}; it has {sorted(self.batch)}")
        return self.batch[name]

    def teacher(self, name: str) -> Tensor:
        """The teacher's precomputed output ``name``."""
        return self.field(teacher_key(name))


@dataclass
class LossTerm(abc.ABC):
    """Base of the terms: a ``weight`` and the learned modules trained with the student."""

    weight: float = 1.0

    def modules(self) -> list[nn.Module]:
        """Modules whose parameters the optimiser trains beside the student's (default none)."""
        return []

    def fields(self) -> set[str]:
        """Batch fields the term reads (checked before training starts)."""
        return set()

    @abc.abstractmethod
    def __call__(self, step: Step) -> Tensor:
        """The term's loss on one step's batch (the loop multiplies it by ``weight``)."""


def _columns(logits: Tensor, classes: tuple[int, ...] | None) -> Tensor:
    return logits if classes is None else logits[:, list(classes)]  # (B, |classes|)


@dataclass
class CrossEntropy(LossTerm):
    """Cross-entropy on the hard labels of the labelled rows (label ``-1``: unlabelled).

    With ``mask`` (a field of ``(B, classes)`` booleans) logits outside each row's allowed
    classes are masked out: task-aware (multi-head) training with one shared output layer.
    """

    output: str = "logits"
    labels: str = "labels"
    mask: str | None = None

    def fields(self) -> set[str]:
        return {self.labels} | ({self.mask} if self.mask else set())

    def __call__(self, step: Step) -> Tensor:
        logits, labels = step.output(self.output), step.field(self.labels)
        if self.mask is not None:
            logits = logits.masked_fill(~step.field(self.mask), _MASKED_LOGIT)
        labelled = labels != UNLABELLED
        if not bool(labelled.any()):
            return logits.sum() * 0.0  # no labelled row in this batch
        return F.cross_entropy(logits[labelled], labels[labelled])


@dataclass
class SoftTargets(LossTerm):
    """Hinton KD ``KL(p_T || q_T) T**2`` against the teacher's logits, over ``classes``."""

    temperature: float = 4.0
    output: str = "logits"
    teacher_output: str = "logits"
    classes: tuple[int, ...] | None = None
    rows: str | None = None  # a boolean field: only these rows have soft targets

    def __post_init__(self) -> None:
        check_temperature(self.temperature)

    def fields(self) -> set[str]:
        return {teacher_key(self.teacher_output)} | ({self.rows} if self.rows else set())

    def __call__(self, step: Step) -> Tensor:
        student = _columns(step.output(self.output), self.classes)
        teacher = _columns(step.teacher(self.teacher_output), self.classes)
        if self.rows is not None:
            chosen = step.field(self.rows)
            if not bool(chosen.any()):
                return student.sum() * 0.0  # no soft-target row in this batch
            student, teacher = student[chosen], teacher[chosen]
        return kd_loss(student, teacher, temperature=self.temperature)


@dataclass
class Hint(LossTerm):
    """FitNets hint: ``MSE(projection(student feature), teacher feature)``."""

    output: str = "fc1"
    teacher_output: str = "fc"
    projection: nn.Module = field(default_factory=nn.Identity)

    def modules(self) -> list[nn.Module]:
        return [self.projection]

    def fields(self) -> set[str]:
        return {teacher_key(self.teacher_output)}

    def __call__(self, step: Step) -> Tensor:
        return hint_loss(
            step.output(self.output), step.teacher(self.teacher_output), self.projection
        )


def hint_term(
    *,
    weight: float,
    output: str,
    teacher_output: str,
    student_shape: Sequence[int],
    teacher_shape: Sequence[int],
) -> Hint:
    """A :class:`Hint` with a fresh :class:`HintProjection` between the two feature shapes."""
    projection = HintProjection(student_shape, teacher_shape)
    return Hint(weight=weight, output=output, teacher_output=teacher_output, projection=projection)


@dataclass
class AttentionTransfer(LossTerm):
    """Attention transfer between a student and a teacher ``(B, C, H, W)`` feature."""

    output: str = "conv2"
    teacher_output: str = "conv2"

    def fields(self) -> set[str]:
        return {teacher_key(self.teacher_output)}

    def __call__(self, step: Step) -> Tensor:
        return attention_transfer_loss(step.output(self.output), step.teacher(self.teacher_output))


@dataclass
class DistributionMatch(LossTerm):
    """``KL(teacher || student)`` of two ``(B, L)`` probability rows, batch mean."""

    output: str = "pooling"
    teacher_output: str = "pooling"

    def fields(self) -> set[str]:
        return {teacher_key(self.teacher_output)}

    def __call__(self, step: Step) -> Tensor:
        student = step.output(self.output).clamp_min(1e-12).log()
        teacher = step.teacher(self.teacher_output).clamp_min(1e-12)
        return F.kl_div(student, teacher, reduction="batchmean")


@dataclass
class Relational(LossTerm):
    """RKD: ``distance_weight * distance + angle_weight * angle`` losses of the outputs.

    ``outputs`` are concatenated (``per_output=False``) or matched one by one and summed.
    Batches of fewer than 3 rows contribute nothing (the angle needs triplets).
    """

    outputs: tuple[str, ...] = ("logits",)
    distance_weight: float = 1.0
    angle_weight: float = 2.0
    per_output: bool = False

    def fields(self) -> set[str]:
        return {teacher_key(name) for name in self.outputs}

    def _pairs(self, step: Step) -> list[tuple[Tensor, Tensor]]:
        students = [step.output(n) for n in self.outputs]
        teachers = [step.teacher(n) for n in self.outputs]
        if self.per_output:
            return list(zip(students, teachers, strict=True))
        return [(torch.cat(students, dim=1), torch.cat(teachers, dim=1))]

    def __call__(self, step: Step) -> Tensor:
        pairs = self._pairs(step)
        if pairs[0][0].shape[0] < 3:
            return pairs[0][0].sum() * 0.0
        distance = self.distance_weight
        angle = self.angle_weight
        losses = [
            distance * rkd_distance_loss(s, t) + angle * rkd_angle_loss(s, t) for s, t in pairs
        ]
        return torch.stack(losses).sum()


def kd_mix(
    *, temperature: float, hard_label_weight: float, mask: str | None = None
) -> list[LossTerm]:
    """Hinton's objective ``(1 - a) KD_T + a CE`` as two terms (CE dropped when ``a = 0``)."""
    if not 0.0 <= hard_label_weight <= 1.0:
        raise ValueError(f"hard_label_weight must be in [0, 1], got {hard_label_weight}")
    terms: list[LossTerm] = [SoftTargets(1.0 - hard_label_weight, temperature=temperature)]
    if hard_label_weight > 0:
        terms.append(CrossEntropy(hard_label_weight, mask=mask))
    return terms


@dataclass
class Proximal(LossTerm):
    """FedProx's proximal term ``mu / 2 * ||w - w_anchor||^2`` over a model's parameters
    (Li et al., MLSys 2020): local training is pulled towards the weights it started from.

    Build it with :meth:`around` right after the global weights are loaded and before the
    first step; the anchor is a detached copy, so it stays fixed while the model moves.
    """

    mu: float = 0.0
    params: list[nn.Parameter] = field(default_factory=list)
    anchor: list[Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.mu >= 0.0:  # also refuses NaN
            raise ValueError(f"proximal mu must be >= 0, got {self.mu}")
        if len(self.params) != len(self.anchor):
            raise ValueError("Proximal needs one anchor tensor per parameter")

    @classmethod
    def around(cls, model: nn.Module, mu: float) -> Proximal:
        """The term anchored at ``model``'s current trainable parameters."""
        params = [p for p in model.parameters() if p.requires_grad]
        return cls(mu=mu, params=params, anchor=[p.detach().clone() for p in params])

    def __call__(self, step: Step) -> Tensor:
        del step  # reads the model's parameters, not the batch
        squares = [
            (p - a.to(p.device)).pow(2).sum() for p, a in zip(self.params, self.anchor, strict=True)
        ]
        if not squares:  # a model without trainable parameters has nothing to pull back
            return torch.zeros(())
        return 0.5 * self.mu * torch.stack(squares).sum()
