"""Mode 1, compression: a large teacher distilled into a small student.

On one split, a student of limited capacity is trained three ways on the same labelled examples:
alone (hard labels), with Hinton KD (soft targets at ``T`` mixed with hard labels), and with KD
plus a FitNets hint (an intermediate student feature regressed onto a teacher feature through a
learned projection). Accuracy, parameters, serialized size and CPU latency are reported, with the
share of the teacher-student gap that distillation closes. Students are averaged over seeds (each
seed draws its own labelled subset and initialisation); the teacher is trained once.

The training helpers (:func:`train_teacher`, :func:`train_alone`, :func:`train_kd`,
:func:`train_kd_hint`) are reused by the probe and uncertainty modes.
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from fedkd.data import ArrayDataset, DataSplit, load_split
from fedkd.distill.losses import HintProjection, hint_loss, kd_loss
from fedkd.distill.train import distill, evaluate, resolve_device, train_supervised
from fedkd.models import FeatureModel, build_model, count_parameters, model_size_bytes
from fedkd.modes.common import (
    cpu_latency_ms,
    prepare_out_dir,
    save_figure,
    seed_everything,
    stratified_subset,
    write_results,
)

STUDENT_METHODS = ("alone", "kd", "kd_hint")
MIN_GAP = 0.005  # below this teacher-alone accuracy gap the "gap closed" share is undefined


@dataclass(frozen=True)
class CompressionConfig:
    """Settings of the compression mode (defaults: ~1-2 minutes on ``digits``, 2 CPU cores)."""

    dataset: str = field(default="digits", metadata={"help": "dataset name (fedkd.data)"})
    data_root: str | None = field(default=None, metadata={"help": "data folder (idx, torchvision)"})
    download: bool = field(default=False, metadata={"help": "allow torchvision downloads"})
    split_seed: int = field(default=0, metadata={"help": "seed of the data split and teacher"})
    teacher_model: str = field(default="cnn", metadata={"help": "teacher registry name"})
    teacher_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "teacher build kwargs, JSON"}
    )
    student_model: str = field(default="mlp", metadata={"help": "student registry name"})
    student_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"hidden": [32]}, metadata={"help": "student build kwargs, JSON"}
    )
    teacher_epochs: int = field(default=15, metadata={"help": "teacher training epochs"})
    student_epochs: int = field(default=150, metadata={"help": "epochs of each student"})
    student_train_size: int | None = field(
        default=200,
        metadata={"help": "labelled private examples the students see (none: all private)"},
    )
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    teacher_lr: float = field(default=1e-3, metadata={"help": "Adam learning rate, teacher"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate, students"})
    temperature: float = field(default=4.0, metadata={"help": "KD temperature T"})
    alpha: float = field(default=0.3, metadata={"help": "hard-label CE weight in the KD loss"})
    hint_weight: float = field(default=1.0, metadata={"help": "weight of the hint loss"})
    hint_teacher_feature: str | None = field(
        default=None, metadata={"help": "teacher feature for the hint (none: middle one)"}
    )
    hint_student_feature: str | None = field(
        default=None, metadata={"help": "student feature guided by the hint (none: middle one)"}
    )
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "student seeds"})
    latency_batch_size: int = field(default=256, metadata={"help": "batch size for latency"})
    latency_repeats: int = field(default=20, metadata={"help": "timed repeats (median)"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or auto"})


def as_compression(config: Any, **overrides: Any) -> CompressionConfig:
    """The :class:`CompressionConfig` a mode's config stands for: every field the two share by
    name is copied, ``overrides`` replace or add the rest (modes that train the same teacher
    and students -- probes, uncertainty -- call this instead of restating each field)."""
    shared = {
        f.name: getattr(config, f.name)
        for f in fields(CompressionConfig)
        if hasattr(config, f.name)
    }
    return CompressionConfig(**{**shared, **overrides})


@dataclass
class ModelSummary:
    """Test accuracy (mean/std over seeds) and footprint of one model."""

    name: str
    accuracy_mean: float
    accuracy_std: float
    accuracies: list[float]
    parameters: int
    size_bytes: int
    latency_ms: float


@dataclass
class CompressionResult:
    """Teacher and students, and how much of the teacher-student gap distillation closes.

    ``kd_gap_closed = (acc_kd - acc_alone) / (acc_teacher - acc_alone)`` on the seed means;
    ``None`` when the gap is below ``MIN_GAP``.
    """

    teacher: ModelSummary
    students: list[ModelSummary]
    kd_gap_closed: float | None
    kd_hint_gap_closed: float | None
    compression_ratio: float
    speedup: float
    hint_teacher_feature: str
    hint_student_feature: str
    student_train_size: int


def train_teacher(
    split: DataSplit,
    *,
    model_name: str,
    model_kwargs: dict[str, Any],
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: str | None,
) -> FeatureModel:
    """Build and train a model with hard labels on the whole private set."""
    seed_everything(seed)
    teacher = build_model(
        model_name, input_shape=split.input_shape, num_classes=split.num_classes, **model_kwargs
    )
    train_supervised(
        teacher,
        split.private,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        device=device,
        seed=seed,
    )
    return teacher.eval()


def _new_student(split: DataSplit, config: CompressionConfig, seed: int) -> FeatureModel:
    seed_everything(seed)
    return build_model(
        config.student_model,
        input_shape=split.input_shape,
        num_classes=split.num_classes,
        **config.student_kwargs,
    )


def train_alone(
    split: DataSplit, data: ArrayDataset, config: CompressionConfig, seed: int
) -> FeatureModel:
    """A student trained on hard labels only."""
    student = _new_student(split, config, seed)
    train_supervised(
        student,
        data,
        epochs=config.student_epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        device=config.device,
        seed=seed,
    )
    return student.eval()


def train_kd(
    split: DataSplit,
    data: ArrayDataset,
    teacher: FeatureModel,
    config: CompressionConfig,
    seed: int,
) -> FeatureModel:
    """A student trained with ``(1 - alpha) * kd_loss + alpha * CE`` against ``teacher``."""
    student = _new_student(split, config, seed)
    distill(
        student,
        data.x,
        teacher_model=teacher,
        temperature=config.temperature,
        epochs=config.student_epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        labels=data.y,
        hard_label_weight=config.alpha,
        device=config.device,
        seed=seed,
    )
    return student.eval()


def middle_feature(model: FeatureModel) -> str:
    """The middle entry of ``model.feature_names`` (the default hint layer)."""
    return model.feature_names[len(model.feature_names) // 2]


def _check_feature(model: FeatureModel, name: str, role: str) -> None:
    if name not in model.feature_names:
        raise ValueError(
            f"{role} feature {name!r} is not a feature of {type(model).__name__}; known: "
            f"{', '.join(model.feature_names)}"
        )


def train_kd_hint(
    split: DataSplit,
    data: ArrayDataset,
    teacher: FeatureModel,
    config: CompressionConfig,
    seed: int,
) -> FeatureModel:
    """A student trained with KD plus ``hint_weight * hint_loss`` on one feature pair."""
    device = resolve_device(config.device)
    student = _new_student(split, config, seed).to(device)
    teacher = teacher.to(device).eval()
    t_name = config.hint_teacher_feature or middle_feature(teacher)
    s_name = config.hint_student_feature or middle_feature(student)
    _check_feature(teacher, t_name, "hint_teacher")
    _check_feature(student, s_name, "hint_student")
    x_all = torch.tensor(data.x)  # copies: the dataset's arrays may be read-only
    y_all = torch.tensor(data.y)
    with torch.no_grad():
        probe = x_all[:2].to(device)
        t_shape = teacher.forward_features(probe)[t_name].shape[1:]
        s_shape = student.forward_features(probe)[s_name].shape[1:]
    projection = HintProjection(s_shape, t_shape).to(device)
    params = list(student.parameters()) + list(projection.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    student.train()
    for _ in range(config.student_epochs):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), config.batch_size):
            batch = order[start : start + config.batch_size]
            x, y = x_all[batch].to(device), y_all[batch].to(device)
            with torch.no_grad():
                t_out = teacher.forward_features(x)
            s_out = student.forward_features(x)
            loss = (1.0 - config.alpha) * kd_loss(
                s_out["logits"], t_out["logits"], temperature=config.temperature
            )
            loss = loss + config.alpha * F.cross_entropy(s_out["logits"], y)
            loss = loss + config.hint_weight * hint_loss(s_out[s_name], t_out[t_name], projection)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return student.eval()


def train_student(
    method: str,
    split: DataSplit,
    data: ArrayDataset,
    teacher: FeatureModel,
    config: CompressionConfig,
    seed: int,
) -> FeatureModel:
    """Train one student by ``method``, one of ``STUDENT_METHODS``."""
    if method == "alone":
        return train_alone(split, data, config, seed)
    if method == "kd":
        return train_kd(split, data, teacher, config, seed)
    if method == "kd_hint":
        return train_kd_hint(split, data, teacher, config, seed)
    raise ValueError(f"unknown student method {method!r}; known: {', '.join(STUDENT_METHODS)}")


def gap_closed(acc_method: float, acc_alone: float, acc_teacher: float) -> float | None:
    """``(acc_method - acc_alone) / (acc_teacher - acc_alone)``; ``None`` if the gap < MIN_GAP."""
    gap = acc_teacher - acc_alone
    if gap < MIN_GAP:
        warnings.warn(
            f"teacher-student accuracy gap is {gap:.4f} (< {MIN_GAP}); the share of the gap "
            "closed is undefined and reported as null",
            stacklevel=2,
        )
        return None
    return (acc_method - acc_alone) / gap


def _summary(
    name: str, model: FeatureModel, accuracies: list[float], batch: torch.Tensor, repeats: int
) -> ModelSummary:
    return ModelSummary(
        name=name,
        accuracy_mean=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        accuracies=accuracies,
        parameters=count_parameters(model),
        size_bytes=model_size_bytes(model),
        latency_ms=cpu_latency_ms(model, batch, repeats=repeats),
    )


def _latency_batch(test: ArrayDataset, size: int) -> torch.Tensor:
    reps = -(-size // len(test))  # ceil: repeat small test sets to fill the batch
    return torch.tensor(np.concatenate([test.x] * reps)[:size])


def _plot(result: CompressionResult, out_dir: Path) -> None:
    models = [result.teacher, *result.students]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = np.arange(len(models))
    ax.bar(
        xs,
        [m.accuracy_mean for m in models],
        yerr=[m.accuracy_std for m in models],
        color=["tab:gray", "tab:red", "tab:blue", "tab:green"][: len(models)],
        alpha=0.7,
    )
    for x, m in zip(xs, models, strict=True):
        ax.scatter([x] * len(m.accuracies), m.accuracies, color="black", s=12, zorder=3)
    ax.set_xticks(xs, [m.name for m in models])
    low = min(min(m.accuracies) for m in models)
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_ylabel("test accuracy")
    ax.set_title("Compression: teacher vs students (dots: seeds)")
    save_figure(fig, out_dir / "accuracy.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in models:
        ax.scatter(
            m.size_bytes,
            m.accuracy_mean,
            s=40 + 20 * m.latency_ms / max(x.latency_ms for x in models),
            label=f"{m.name} ({m.latency_ms:.2f} ms/batch)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("serialized size (bytes)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs size (marker area ~ CPU latency)")
    ax.legend(fontsize=8)
    save_figure(fig, out_dir / "tradeoff.png")


def run_compression(config: CompressionConfig, out_dir: str | Path) -> CompressionResult:
    """Train teacher and students, write ``results.json`` and plots into ``out_dir``.

    Parameters
    ----------
    config : CompressionConfig
        Settings.
    out_dir : str or Path
        Output folder; ``results.json``, ``accuracy.png`` and ``tradeoff.png`` go there.

    Returns
    -------
    CompressionResult
        Summaries of the teacher and the three students.
    """
    if not config.seeds:
        raise ValueError("seeds must list at least one seed")
    out = prepare_out_dir(out_dir)
    split = load_split(
        config.dataset,
        seed=config.split_seed,
        data_root=config.data_root,
        download=config.download,
    )
    # fail fast on a bad student name or kwargs, before the teacher is trained
    _new_student(split, config, config.split_seed)
    teacher = train_teacher(
        split,
        model_name=config.teacher_model,
        model_kwargs=config.teacher_kwargs,
        epochs=config.teacher_epochs,
        batch_size=config.batch_size,
        lr=config.teacher_lr,
        seed=config.split_seed,
        device=config.device,
    )
    teacher_acc = evaluate(teacher, split.test, device=config.device).accuracy
    write_results(out, config, {"stage": "teacher", "teacher_accuracy": teacher_acc})

    accuracies: dict[str, list[float]] = {m: [] for m in STUDENT_METHODS}
    last: dict[str, FeatureModel] = {}
    subset_size = len(split.private)
    for seed in config.seeds:
        data = stratified_subset(split.private, config.student_train_size, seed=seed)
        subset_size = len(data)
        for method in STUDENT_METHODS:
            student = train_student(method, split, data, teacher, config, seed)
            accuracies[method].append(evaluate(student, split.test, device=config.device).accuracy)
            last[method] = student
        write_results(
            out,
            config,
            {
                "stage": f"seed {seed}",
                "teacher_accuracy": teacher_acc,
                "student_accuracies": accuracies,
            },
        )

    batch = _latency_batch(split.test, config.latency_batch_size)
    teacher_summary = _summary("teacher", teacher, [teacher_acc], batch, config.latency_repeats)
    students = [
        _summary(m, last[m], accuracies[m], batch, config.latency_repeats) for m in STUDENT_METHODS
    ]
    alone, kd, kd_hint = (statistics.fmean(accuracies[m]) for m in STUDENT_METHODS)
    result = CompressionResult(
        teacher=teacher_summary,
        students=students,
        kd_gap_closed=gap_closed(kd, alone, teacher_acc),
        kd_hint_gap_closed=gap_closed(kd_hint, alone, teacher_acc),
        compression_ratio=teacher_summary.parameters / students[0].parameters,
        speedup=teacher_summary.latency_ms / students[0].latency_ms,
        hint_teacher_feature=config.hint_teacher_feature or middle_feature(teacher),
        hint_student_feature=config.hint_student_feature or middle_feature(last["alone"]),
        student_train_size=subset_size,
    )
    write_results(out, config, result)
    _plot(result, out)
    return result
