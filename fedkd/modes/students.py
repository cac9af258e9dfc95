"""The models the modes compare, each trained by the shared recipe (:mod:`fedkd.distill.recipe`).

- :class:`TransferSet` -- the inputs a student learns from, with hard labels on the labelled
  rows only (``-1`` elsewhere): the labelled fraction and the unlabelled transfer set are knobs.
- :func:`split_validation` -- a labelled slice held out for early stopping (and for fitting a
  temperature).
- :class:`StudentMethod` -- ``alone``, ``kd`` at a temperature, ``kd_hint``: each only the list
  of loss terms it puts into the one loop (:meth:`StudentMethod.terms`).
- :func:`train_teacher` / :func:`train_student` -- one :func:`~fedkd.distill.recipe.fit` call each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from fedkd.data import ArrayDataset
from fedkd.distill.recipe import FitConfig, TrainReport, Validation, fit, teacher_outputs
from fedkd.distill.terms import UNLABELLED, CrossEntropy, LossTerm, hint_term, kd_mix
from fedkd.models import FeatureModel, build_model
from fedkd.modes.common import seed_everything

TRANSFER_SETS = ("labelled", "private", "private+public")


@dataclass(frozen=True)
class TeacherStudentSettings:
    """Data, models and training budget shared by the modes that compare a teacher and students
    (compression, probes, uncertainty); each mode's config extends it."""

    dataset: str = field(default="digits", metadata={"help": "dataset name (fedkd.data)"})
    data_root: str | None = field(default=None, metadata={"help": "data folder (idx, torchvision)"})
    download: bool = field(default=False, metadata={"help": "allow torchvision downloads"})
    split_seed: int = field(default=0, metadata={"help": "seed of the data split"})
    teacher_model: str = field(default="cnn", metadata={"help": "teacher registry name"})
    teacher_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "teacher build kwargs, JSON"}
    )
    student_model: str = field(default="mlp", metadata={"help": "student registry name"})
    student_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"hidden": [32]}, metadata={"help": "student build kwargs, JSON"}
    )
    validation_size: int = field(default=150, metadata={"help": "held-out labelled slice"})
    teacher_epochs: int = field(default=20, metadata={"help": "most teacher epochs"})
    student_epochs: int = field(default=100, metadata={"help": "most epochs of a student"})
    patience: int = field(default=10, metadata={"help": "epochs without a better val. score"})
    epoch_samples: int = field(
        default=2000, metadata={"help": "a smaller set repeats to this many samples per epoch"}
    )
    batch_size: int = field(default=64, metadata={"help": "training batch size"})
    teacher_lr: float = field(default=1e-3, metadata={"help": "Adam learning rate, teacher"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate, students"})
    alpha: float = field(default=0.1, metadata={"help": "hard-label CE weight in the KD loss"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or auto"})


@dataclass(frozen=True)
class TransferSet:
    """Inputs ``x`` ``(N, ...)`` and labels ``(N,)``, ``-1`` on the unlabelled rows."""

    x: np.ndarray
    labels: np.ndarray

    @property
    def num_labelled(self) -> int:
        """Rows with a hard label."""
        return int(np.sum(self.labels != UNLABELLED))

    def labelled(self) -> ArrayDataset:
        """The labelled rows as a dataset (what a student trained alone sees)."""
        keep = np.flatnonzero(self.labels != UNLABELLED)
        return ArrayDataset(x=self.x[keep], y=self.labels[keep])


def make_transfer_set(
    pool: ArrayDataset,
    public: ArrayDataset,
    *,
    labelled_size: int | None,
    transfer: str,
    seed: int,
) -> TransferSet:
    """``labelled_size`` labelled examples of ``pool`` (stratified, seeded; ``None``: all) and
    the unlabelled inputs ``transfer`` adds: ``"labelled"`` none, ``"private"`` the rest of the
    pool, ``"private+public"`` also the public split."""
    if transfer not in TRANSFER_SETS:
        raise ValueError(f"unknown transfer set {transfer!r}; known: {', '.join(TRANSFER_SETS)}")
    labels = np.full(len(pool), UNLABELLED, dtype=np.int64)
    chosen = np.arange(len(pool))
    if labelled_size is not None and labelled_size < len(pool):
        if labelled_size < 1:
            raise ValueError(f"labelled_size must be >= 1 or None (all), got {labelled_size}")
        stratify = pool.y if labelled_size >= len(np.unique(pool.y)) else None
        chosen, _ = train_test_split(
            chosen, train_size=labelled_size, stratify=stratify, random_state=seed
        )
        chosen = np.sort(chosen)
    labels[chosen] = pool.y[chosen]
    if transfer == "labelled":
        return TransferSet(pool.x[chosen], labels[chosen])
    if transfer == "private":
        return TransferSet(pool.x, labels)
    unlabelled = np.full(len(public), UNLABELLED, dtype=np.int64)
    return TransferSet(np.concatenate([pool.x, public.x]), np.concatenate([labels, unlabelled]))


def split_validation(
    data: ArrayDataset, size: int, *, seed: int
) -> tuple[ArrayDataset, ArrayDataset]:
    """``(rest, validation)``: a stratified, seeded labelled slice of ``size`` held out."""
    if not 0 < size < len(data):
        raise ValueError(f"validation_size must lie in [1, {len(data) - 1}], got {size}")
    stratify = data.y if size >= len(np.unique(data.y)) else None
    rest, val = train_test_split(
        np.arange(len(data)), test_size=size, stratify=stratify, random_state=seed
    )
    return data.subset(np.sort(rest)), data.subset(np.sort(val))


def as_validation(data: ArrayDataset) -> Validation:
    """A :class:`~fedkd.distill.recipe.Validation` scoring accuracy on ``data``."""
    return Validation(data.x, data.y)


def new_model(
    name: str, kwargs: dict[str, Any], data_shape: tuple[int, int, int], classes: int, seed: int
) -> FeatureModel:
    """A registry model with weights drawn from ``seed``."""
    seed_everything(seed)
    return build_model(name, input_shape=data_shape, num_classes=classes, **kwargs)


def train_teacher(
    teacher: FeatureModel,
    data: ArrayDataset,
    validation: ArrayDataset,
    fit_config: FitConfig,
    device: str | None,
) -> TrainReport:
    """Hard-label training with early stopping on ``validation``."""
    arrays = {"x": data.x, "labels": data.y}
    report = fit(
        teacher,
        arrays,
        [CrossEntropy()],
        fit_config,
        device=device,
        validation=as_validation(validation),
    )
    teacher.eval()
    return report


@dataclass(frozen=True)
class StudentMethod:
    """How a student learns: ``temperature`` ``None`` means alone on hard labels."""

    name: str
    temperature: float | None = None
    hint: bool = False

    def terms(
        self,
        student: FeatureModel,
        transfer: TransferSet,
        *,
        alpha: float,
        hint_weight: float,
        hint_features: tuple[str, str],
        teacher_fields: dict[str, np.ndarray],
    ) -> list[LossTerm]:
        """The loss terms of this method (KD mix, plus a hint through a fresh projection)."""
        if self.temperature is None:
            return [CrossEntropy()]
        terms = kd_mix(temperature=self.temperature, hard_label_weight=alpha)
        if self.hint:
            student_name, teacher_name = hint_features
            with torch.no_grad():
                probe = torch.from_numpy(np.ascontiguousarray(transfer.x[:2]))
                shape = student.cpu().forward_features(probe)[student_name].shape[1:]
            teacher_shape = teacher_fields[f"teacher:{teacher_name}"].shape[1:]
            terms.append(
                hint_term(
                    weight=hint_weight,
                    output=student_name,
                    teacher_output=teacher_name,
                    student_shape=shape,
                    teacher_shape=teacher_shape,
                )
            )
        return terms


def train_student(
    method: StudentMethod,
    student: FeatureModel,
    transfer: TransferSet,
    teacher_fields: dict[str, np.ndarray],
    *,
    fit_config: FitConfig,
    validation: ArrayDataset,
    alpha: float,
    hint_weight: float = 1.0,
    hint_features: tuple[str, str] = ("fc1", "fc"),
    device: str | None = None,
) -> TrainReport:
    """Train ``student`` by ``method`` on ``transfer`` (alone: its labelled rows only)."""
    if method.temperature is None:
        labelled = transfer.labelled()
        arrays = {"x": labelled.x, "labels": labelled.y}
    else:
        arrays = {"x": transfer.x, "labels": transfer.labels, **teacher_fields}
    terms = method.terms(
        student,
        transfer,
        alpha=alpha,
        hint_weight=hint_weight,
        hint_features=hint_features,
        teacher_fields=teacher_fields,
    )
    report = fit(
        student, arrays, terms, fit_config, device=device, validation=as_validation(validation)
    )
    student.eval()
    return report


def teacher_fields_for(
    teacher: FeatureModel, transfer: TransferSet, names: list[str], device: str | None
) -> dict[str, np.ndarray]:
    """The teacher's outputs ``names`` on the transfer inputs, as ``"teacher:<name>"`` fields."""
    return teacher_outputs(teacher, transfer.x, names, device=device)
