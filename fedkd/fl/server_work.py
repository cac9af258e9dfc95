"""Server-side work of a round that needs no transport: sampling, teacher, distillation, eval."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fedkd.data import ArrayDataset, DataSplit
from fedkd.distill import distill, evaluate, resolve_device, teacher_from_sum
from fedkd.fl.config import FedConfig
from fedkd.metrics import accuracy
from fedkd.models import FeatureModel, build_model

# Rows one distillation epoch serves at least: a smaller public set is passed over several
# times per epoch (FitConfig.min_epoch_samples). Epochs and the early-stopping patience
# (counted in epochs) then buy a comparable number of optimiser steps whatever the public set's
# size; at 200 rows and batch 64 a plain epoch is 3 steps, and a fresh student stopped in its
# first plateau at 13% while its teacher had 93% (which the FedDF loop then pushed back to
# every client). 1,024 leaves a 2,000-row public set (1,800 after the holdout) at one pass.
MIN_EPOCH_ROWS = 1024


def sample_size(num_nodes: int, *, fraction: float, minimum: int) -> int:
    """How many nodes a round samples: ``max(minimum, ceil(fraction * n))``, at most ``n``."""
    return min(num_nodes, max(minimum, math.ceil(fraction * num_nodes)))


def sample_clients(
    node_ids: Sequence[int], *, fraction: float, minimum: int, rng: np.random.Generator
) -> list[int]:
    """Sample :func:`sample_size` distinct nodes (O(sampled) work: a population of a million
    is a ``range``, and numpy draws a small sample without permuting the whole)."""
    count = sample_size(len(node_ids), fraction=fraction, minimum=minimum)
    chosen = rng.choice(len(node_ids), size=count, replace=False)
    return sorted(node_ids[i] for i in chosen)


def new_student(config: FedConfig, split: DataSplit) -> FeatureModel:
    """The global student, seeded so every method starts from the same weights."""
    torch.manual_seed(config.seed)
    return build_model(
        config.local.model, input_shape=split.input_shape, num_classes=split.num_classes
    )


@dataclass(frozen=True)
class DistillOutcome:
    """What one server distillation step produced."""

    teacher_logits: np.ndarray  # (public, classes) float32
    teacher_accuracy: float  # on the public set's held-back labels
    student_accuracy: float  # on the test set
    distill_loss: float
    seconds: float
    device: str


def _holdout(config: FedConfig, num_public: int) -> tuple[np.ndarray, np.ndarray]:
    """Public-set rows the student distills on, and the seeded slice held out for stopping."""
    rows = np.arange(num_public)
    if config.distill.patience <= 0 or config.distill.holdout <= 0:
        return rows, rows[:0]
    size = max(1, round(config.distill.holdout * num_public))
    held = np.sort(np.random.default_rng([config.seed, 17]).choice(num_public, size, False))
    return np.setdiff1d(rows, held), held


def _average_into(model: torch.nn.Module, previous: dict[str, torch.Tensor], ema: float) -> None:
    """``model``'s float weights become ``ema * previous + (1 - ema) * current``."""
    state = model.state_dict()
    for name, value in state.items():
        if value.is_floating_point():
            value.mul_(1.0 - ema).add_(previous[name].to(value.device), alpha=ema)
    model.load_state_dict(state)


def teacher_from_aggregate(summed: np.ndarray, config: FedConfig, split: DataSplit) -> np.ndarray:
    """Turn the (securely) summed teacher part of the contributions into teacher logits."""
    return teacher_from_sum(
        summed,
        num_public=len(split.public),
        num_classes=split.num_classes,
        config=config.teacher,
    )


def distill_round(
    student: FeatureModel,
    teacher_logits: np.ndarray,
    config: FedConfig,
    split: DataSplit,
    *,
    server_round: int,
) -> DistillOutcome:
    """Distill ``student`` (in place) on the public set against ``teacher_logits``.

    Runs on the GPU when one is present (``device = auto``), with mixed precision there.

    Two guards keep the student from swinging between rounds. With ``distill-patience`` a
    seeded slice of the public set (``distill-holdout``) is held out and scored by agreement
    with the teacher -- its pseudo-labels, never the public labels -- and distillation stops
    at the best epoch. With ``student-ema`` the new weights are averaged with the last
    round's, ``w = ema * w_previous + (1 - ema) * w_distilled``. A public set under
    ``MIN_EPOCH_ROWS`` rows is passed over several times per epoch.
    """
    start = time.perf_counter()
    settings = config.distill
    device = resolve_device(None if settings.device == "auto" else settings.device)
    loss = math.nan
    averaging = settings.ema > 0 and server_round > 1
    previous = {k: v.detach().clone() for k, v in student.state_dict().items()} if averaging else {}
    if settings.epochs > 0:
        train, held = _holdout(config, len(split.public))
        validation = None
        if held.size:
            pseudo = np.argmax(teacher_logits[held], axis=1).astype(np.int64)
            validation = ArrayDataset(split.public.x[held], pseudo)
        report = distill(
            student,
            split.public.x[train],
            teacher_logits=teacher_logits[train],
            temperature=settings.temperature,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            lr=settings.lr,
            device=device,
            seed=config.seed * 7_919 + server_round,
            validation=validation,
            patience=settings.patience or None,
            min_epoch_samples=MIN_EPOCH_ROWS,
        )
        loss = report.losses[-1]
    if averaging:
        _average_into(student, previous, settings.ema)
    student_accuracy = evaluate(student, split.test, device=device).accuracy
    student.to("cpu")  # weights are pushed to clients from host memory
    return DistillOutcome(
        teacher_logits=teacher_logits,
        teacher_accuracy=accuracy(teacher_logits, split.public.y),
        student_accuracy=student_accuracy,
        distill_loss=loss,
        seconds=time.perf_counter() - start,
        device=str(device),
    )
