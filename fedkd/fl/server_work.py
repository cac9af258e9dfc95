"""Server-side work of a round that needs no transport: sampling, teacher, distillation, eval."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from fedkd.data import DataSplit
from fedkd.distill import distill, evaluate, resolve_device, teacher_from_sum
from fedkd.fl.config import FedConfig
from fedkd.metrics import accuracy
from fedkd.models import FeatureModel, build_model


def sample_clients(
    node_ids: list[int], *, fraction: float, minimum: int, rng: np.random.Generator
) -> list[int]:
    """Sample ``max(minimum, ceil(fraction * n))`` distinct nodes (all of them if fewer)."""
    count = min(len(node_ids), max(minimum, math.ceil(fraction * len(node_ids))))
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
    """
    start = time.perf_counter()
    settings = config.distill
    device = resolve_device(None if settings.device == "auto" else settings.device)
    loss = math.nan
    if settings.epochs > 0:
        report = distill(
            student,
            split.public.x,
            teacher_logits=teacher_logits,
            temperature=settings.temperature,
            epochs=settings.epochs,
            batch_size=settings.batch_size,
            lr=settings.lr,
            device=device,
            seed=config.seed * 7_919 + server_round,
        )
        loss = report.losses[-1]
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
