"""Supervised training, distillation, evaluation and batched prediction on numpy arrays.

:func:`train_supervised` and :func:`distill` are the training recipe of
:mod:`fedkd.distill.recipe` with the hard-label term, and with Hinton's KD + CE mix. Inputs are
numpy arrays: ``x`` float32 ``(N, C, H, W)`` and labels int64 ``(N,)``. Distillation on CUDA
runs under ``torch.autocast`` (bf16 where supported, else fp16 with a gradient scaler); the losses
themselves are computed in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedkd.distill.recipe import (
    FitConfig,
    TrainReport,
    Validation,
    fit,
    predict_outputs,
    teacher_outputs,
)
from fedkd.distill.staging import (
    FLOAT32,
    OPTIMIZERS,
    check_inputs,
    check_labels,
    precision_for,
    resolve_device,
)
from fedkd.distill.terms import (
    UNLABELLED,
    CrossEntropy,
    LossTerm,
    Proximal,
    SoftTargets,
    kd_mix,
    teacher_key,
)
from fedkd.progress import ProgressReporter

if TYPE_CHECKING:
    from fedkd.data import ArrayDataset

__all__ = [
    "OPTIMIZERS",
    "EvalReport",
    "TrainReport",
    "distill",
    "evaluate",
    "predict_logits",
    "resolve_device",
    "train_supervised",
    "train_with_soft_targets",
]


@dataclass
class EvalReport:
    """Accuracy and mean cross-entropy of a model on labelled data."""

    accuracy: float
    loss: float
    num_samples: int


def train_supervised(
    model: nn.Module,
    data: ArrayDataset,
    *,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
    optimizer: str = "adam",
    validation: ArrayDataset | None = None,
    patience: int | None = None,
    proximal_mu: float = 0.0,
) -> TrainReport:
    """Train ``model`` with Adam (or ``optimizer="sgd"``, momentum 0.9) on the cross-entropy
    of ``data``'s labels (plus FedProx's proximal term when ``proximal_mu > 0``).

    Parameters
    ----------
    model
        Any module mapping ``(B, C, H, W)`` to logits ``(B, classes)``; moved to ``device`` and
        left in train mode.
    data
        Labelled data, ``x`` float32 ``(N, C, H, W)``, ``y`` int64 ``(N,)``.
    epochs, batch_size, lr, weight_decay
        Optimisation settings (``epochs``: the most run when early stopping).
    device
        See :func:`resolve_device`.
    seed
        Seeds the shuffling order (a dedicated ``torch.Generator``).
    progress
        Print one line per epoch to stderr.
    optimizer
        ``"adam"`` or ``"sgd"``.
    validation
        Labelled slice scored after each epoch; the best epoch's weights are kept.
    patience
        With ``validation``: stop after this many epochs without a better score.
    proximal_mu
        FedProx: add ``mu / 2 * ||w - w0||^2``, ``w0`` the weights ``model`` has on entry
        (the pushed global weights); 0 trains on the cross-entropy alone.

    Returns
    -------
    TrainReport
    """
    if not proximal_mu >= 0.0:  # also refuses NaN
        raise ValueError(f"proximal_mu must be >= 0, got {proximal_mu}")
    x = check_inputs(data.x, "data.x")
    y = check_labels(data.y, x.shape[0], "data.y")
    config = FitConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        optimizer=optimizer,
        seed=seed,
        patience=patience,
    )
    terms: list[LossTerm] = [CrossEntropy()]
    if proximal_mu > 0:  # anchored before the first step: the weights training started from
        terms.append(Proximal.around(model, proximal_mu))
    return fit(
        model,
        {"x": x, "labels": y},
        terms,
        config,
        device=device,
        precision=FLOAT32,
        validation=_validation(validation),
        progress=ProgressReporter(epochs, description="train", enabled=progress),
    )


def _validation(data: ArrayDataset | None) -> Validation | None:
    if data is None:
        return None
    x = check_inputs(data.x, "validation.x")
    return Validation(x, check_labels(data.y, x.shape[0], "validation.y"))


def _teacher_fields(
    x: np.ndarray,
    teacher_logits: np.ndarray | None,
    teacher_model: nn.Module | None,
    device: torch.device,
) -> dict[str, np.ndarray]:
    if (teacher_logits is None) == (teacher_model is None):
        raise ValueError("give exactly one of teacher_logits and teacher_model")
    if teacher_model is not None:
        return teacher_outputs(teacher_model, x, ["logits"], device=device)
    targets = np.ascontiguousarray(teacher_logits, dtype=np.float32)
    if targets.ndim != 2 or targets.shape[0] != x.shape[0]:
        raise ValueError(
            f"teacher_logits must have shape ({x.shape[0]}, classes), got {targets.shape}"
        )
    if not np.all(np.isfinite(targets)):
        raise ValueError("teacher_logits contain NaN or infinite values")
    return {teacher_key("logits"): targets}


def distill(
    student: nn.Module,
    inputs: np.ndarray,
    *,
    teacher_logits: np.ndarray | None = None,
    teacher_model: nn.Module | None = None,
    temperature: float = 4.0,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 1e-3,
    labels: np.ndarray | None = None,
    hard_label_weight: float = 0.0,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
    amp: bool | None = None,
    validation: ArrayDataset | None = None,
    patience: int | None = None,
    min_epoch_samples: int = 0,
) -> TrainReport:
    """Train ``student`` to match a teacher's soft targets on ``inputs`` (Hinton KD).

    The loss per batch is ``(1 - a) * kd_loss(student, teacher, T) + a * CE(student, labels)``
    with ``a = hard_label_weight``; rows labelled ``-1`` are unlabelled (KD only).

    Parameters
    ----------
    student
        The model trained (moved to ``device``, left in train mode).
    inputs
        ``(N, C, H, W)`` float32 transfer set, e.g. the public set.
    teacher_logits, teacher_model
        Exactly one: ``(N, classes)`` precomputed teacher logits (e.g. from
        :func:`ensemble_teacher`), or a teacher network run once in eval mode over ``inputs``.
    temperature
        Distillation temperature ``T > 0``.
    epochs, batch_size, lr
        Optimisation settings (Adam).
    labels, hard_label_weight
        ``(N,)`` int64 hard labels and their weight ``a`` in ``[0, 1]`` (labels needed if a > 0).
    device, seed, progress
        See :func:`resolve_device`; the seed of the shuffling order; print a line per epoch.
    amp
        Mixed precision on CUDA: ``None`` or ``True`` use ``torch.autocast`` (bf16 if supported,
        else fp16 with a ``GradScaler``); ``False`` keeps float32. Ignored on the CPU.
    validation, patience, min_epoch_samples
        Early stopping on a labelled slice, as in :func:`train_supervised`; an epoch of a smaller
        transfer set repeats it (fresh shuffles) until it has served ``min_epoch_samples``.

    Returns
    -------
    TrainReport
    """
    x = check_inputs(inputs, "inputs")
    terms = kd_mix(temperature=temperature, hard_label_weight=hard_label_weight)
    if hard_label_weight > 0 and labels is None:
        raise ValueError("hard_label_weight > 0 needs labels (N,)")
    resolved = resolve_device(device)
    arrays = {"x": x, **_teacher_fields(x, teacher_logits, teacher_model, resolved)}
    if hard_label_weight > 0 and labels is not None:
        arrays["labels"] = check_labels(labels, x.shape[0])
    config = FitConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        patience=patience,
        min_epoch_samples=min_epoch_samples,
    )
    return fit(
        student,
        arrays,
        terms,
        config,
        device=resolved,
        precision=precision_for(resolved, amp),
        validation=_validation(validation),
        progress=ProgressReporter(epochs, description="distill", enabled=progress),
    )


def predict_logits(
    model: nn.Module,
    x: np.ndarray,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """Logits of ``model`` on ``x``, batched, in eval mode without gradients.

    The model's train/eval mode is restored afterwards.

    Parameters
    ----------
    model
        Maps ``(B, C, H, W)`` to ``(B, classes)``; moved to ``device``.
    x
        ``(N, C, H, W)`` float32 inputs, ``N >= 1``.
    device
        See :func:`resolve_device`.
    batch_size
        Samples per forward pass.

    Returns
    -------
    np.ndarray
        ``(N, classes)`` float32.
    """
    return predict_outputs(model, x, ["logits"], device=device, batch_size=batch_size)["logits"]


def evaluate(
    model: nn.Module,
    data: ArrayDataset,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 512,
) -> EvalReport:
    """Accuracy and mean cross-entropy of ``model`` on labelled ``data``.

    Parameters
    ----------
    model
        The classifier (eval mode during the pass, its mode restored afterwards).
    data
        ``x`` float32 ``(N, C, H, W)``, ``y`` int64 ``(N,)``, ``N >= 1``.
    device
        See :func:`resolve_device`.
    batch_size
        Samples per forward pass.

    Returns
    -------
    EvalReport
    """
    x = check_inputs(data.x, "data.x")
    y = check_labels(data.y, x.shape[0], "data.y")
    logits = predict_logits(model, x, device=device, batch_size=batch_size)
    if y.max() >= logits.shape[1] or y.min() < 0:
        raise ValueError(
            f"labels must lie in [0, {logits.shape[1]}) for a model with {logits.shape[1]} "
            f"outputs; got range [{y.min()}, {y.max()}]"
        )
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y))
    accuracy = float((logits.argmax(axis=1) == y).mean())
    return EvalReport(accuracy=accuracy, loss=float(loss), num_samples=int(y.shape[0]))


SOFT_ROWS = "soft"  # batch field: the row is a public-set sample with a teacher target


def train_with_soft_targets(
    model: nn.Module,
    data: ArrayDataset,
    public_x: np.ndarray,
    teacher_logits: np.ndarray,
    *,
    kd_weight: float = 1.0,
    temperature: float = 1.0,
    public_samples: int = 0,
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 1e-3,
    optimizer: str = "adam",
    device: str | torch.device | None = None,
    seed: int = 0,
) -> TrainReport:
    """Train on the private labels and, in the same steps, on the teacher's public targets.

    One shuffled set holds the private rows (cross-entropy on their labels) and public rows
    (``kd_weight`` x Hinton KD at ``temperature`` against ``teacher_logits``, no labels), so
    every step pulls towards both: what the federation knows about the classes a client does
    not hold is rehearsed while it fits the classes it does -- the remedy for client drift
    under label skew that digest-then-revisit (FedMD) lacks, since its revisit epochs forget
    what the digest taught.

    Parameters
    ----------
    model
        Trained in place (moved to ``device``, left in train mode).
    data
        The private shard (``x``, ``y``).
    public_x, teacher_logits
        ``(P, ...)`` public inputs and ``(P, classes)`` the pushed teacher's logits on them.
    kd_weight
        Weight of the soft-target term (the hard-label term has weight 1).
    public_samples
        Public rows drawn (without replacement, seeded) per call; 0 takes all of them.
    epochs, batch_size, lr, optimizer, device, seed
        As in :func:`train_supervised`.
    """
    if not kd_weight >= 0.0:
        raise ValueError(f"kd_weight must be >= 0, got {kd_weight}")
    x = check_inputs(data.x, "data.x")
    y = check_labels(data.y, x.shape[0], "data.y")
    px = check_inputs(public_x, "public_x")
    targets = _teacher_fields(px, teacher_logits, None, resolve_device("cpu"))[
        teacher_key("logits")
    ]
    if 0 < public_samples < px.shape[0]:
        chosen = np.sort(np.random.default_rng(seed).choice(px.shape[0], public_samples, False))
        px, targets = px[chosen], targets[chosen]
    arrays = {
        "x": np.concatenate([x, px]),
        "labels": np.concatenate([y, np.full(px.shape[0], UNLABELLED, dtype=np.int64)]),
        teacher_key("logits"): np.concatenate(
            [np.zeros((x.shape[0], targets.shape[1]), np.float32), targets]
        ),
        SOFT_ROWS: np.concatenate([np.zeros(x.shape[0], bool), np.ones(px.shape[0], bool)]),
    }
    terms: list[LossTerm] = [CrossEntropy()]
    if kd_weight > 0:
        terms.append(SoftTargets(kd_weight, temperature=temperature, rows=SOFT_ROWS))
    config = FitConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed)
    return fit(model, arrays, terms, config, device=device, precision=FLOAT32)
