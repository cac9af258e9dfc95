"""Multi-task relational KD: students that keep the geometry of a multi-task teacher's outputs.

The teacher is a shared trunk (a registry model whose output layer is a shared embedding) with
one linear head per task. Tasks are derived from the class label: ``"class"`` (the digit, K-way),
``"parity"`` (even / odd) and ``"greater_than_4"`` (class index > 4). Two students with a smaller
trunk start from the same weights: one trained with the task losses only, one with the task
losses plus the RKD distance and angle losses (Park et al. 2019) between its outputs and the
teacher's, where an "output" is the concatenation of all head logits (``rkd_target="concat"``) or
each head's logits separately (``"per_head"``).

Reported with seeds (the teacher retrained per seed; every model stops early on a validation
slice scored on the first task): each task's test accuracy, and how well each student preserves
the teacher's pairwise-distance structure -- the Pearson and Spearman correlation between the
teacher's and the student's pairwise Euclidean distances of concatenated outputs on test samples.
Training is the shared recipe (:mod:`fedkd.distill.recipe`): one cross-entropy term per head, plus
a :class:`~fedkd.distill.terms.Relational` term for the RKD student.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr, spearmanr
from torch import Tensor, nn

from fedkd.data import load_split
from fedkd.distill import resolve_device
from fedkd.distill.recipe import FitConfig, TrainReport, Validation, fit, teacher_outputs
from fedkd.distill.terms import CrossEntropy, LossTerm, Relational
from fedkd.models import build_model, count_parameters
from fedkd.modes.common import save_figure, seed_everything, write_results
from fedkd.modes.stats import Spread, spread
from fedkd.modes.students import split_validation

# A task maps class labels (N,) and the class count to (task labels (N,), task class count).
TaskLabeller = Callable[[np.ndarray, int], tuple[np.ndarray, int]]
_TASKS: dict[str, TaskLabeller] = {
    "class": lambda y, k: (y, k),
    "parity": lambda y, k: (y % 2, 2),
    "greater_than_4": lambda y, k: ((y > 4).astype(np.int64), 2),
}
RKD_TARGETS = ("concat", "per_head")
MODELS = ("teacher", "student_task", "student_rkd")


def register_task(name: str, labeller: TaskLabeller) -> None:
    """Add a task derived from the class label; duplicate names are refused."""
    if name in _TASKS:
        raise ValueError(f"task {name!r} is already registered; known: {sorted(_TASKS)}")
    _TASKS[name] = labeller


def available_tasks() -> list[str]:
    """Names of the registered tasks."""
    return sorted(_TASKS)


def task_labels(tasks: tuple[str, ...], y: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Labels of every task for class labels ``y``; unknown task names raise ``KeyError``."""
    return {name: _labeller(name)(y, num_classes)[0].astype(np.int64) for name in tasks}


def _labeller(name: str) -> TaskLabeller:
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; known: {available_tasks()}")
    return _TASKS[name]


@dataclass(frozen=True)
class RkdConfig:
    """Settings of the multi-task RKD mode (defaults: ~1 minute on 2 CPU cores)."""

    dataset: str = field(default="digits", metadata={"help": "dataset name for load_split"})
    data_root: str | None = field(default=None, metadata={"help": "data folder (idx/torchvision)"})
    tasks: tuple[str, ...] = field(
        default=("class", "parity", "greater_than_4"), metadata={"help": "heads of the models"}
    )
    trunk_model: str = field(default="cnn", metadata={"help": "registry model of the trunks"})
    teacher_channels: tuple[int, ...] = (32, 64, 128)
    teacher_hidden: int = 128
    teacher_embedding: int = field(default=64, metadata={"help": "teacher shared embedding"})
    student_channels: tuple[int, ...] = (8, 16, 32)
    student_hidden: int = 32
    student_embedding: int = field(default=16, metadata={"help": "student shared embedding"})
    rkd_target: str = field(default="concat", metadata={"help": "concat | per_head"})
    distance_weight: float = field(default=1.0, metadata={"help": "RKD distance loss weight"})
    angle_weight: float = field(default=2.0, metadata={"help": "RKD angle loss weight"})
    epochs: int = field(default=60, metadata={"help": "most epochs of every model"})
    patience: int = field(default=10, metadata={"help": "epochs without a better val. score"})
    validation_size: int = field(default=150, metadata={"help": "held-out labelled slice"})
    batch_size: int = 64
    lr: float = 1e-3
    num_structure: int = field(default=500, metadata={"help": "test samples for distances"})
    split_seed: int = field(default=0, metadata={"help": "seed of the data split"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "seeds (teacher too)"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or auto"})


@dataclass(frozen=True)
class MultiTaskReport:
    """Test accuracy per task, size and distance-structure agreement with the teacher, over seeds.

    ``distance_pearson`` / ``distance_spearman`` correlate the model's pairwise distances of
    concatenated outputs with the teacher's (1.0 for the teacher itself).
    """

    name: str
    accuracy: dict[str, Spread]
    parameters: int
    distance_pearson: Spread
    distance_spearman: Spread


@dataclass(frozen=True)
class RkdResult:
    """What :func:`run_rkd` measured: the teacher, the task-only and the RKD student."""

    tasks: list[str]
    teacher: MultiTaskReport
    student_task: MultiTaskReport
    student_rkd: MultiTaskReport
    num_structure: int
    out_dir: str


class MultiTaskNet(nn.Module):
    """Shared trunk (registry model ending in an embedding) + ReLU + one linear head per task."""

    def __init__(self, trunk: nn.Module, embedding: int, heads: dict[str, int]) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleDict({name: nn.Linear(embedding, k) for name, k in heads.items()})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Logits of every head, ``{task: (B, K_task)}``."""
        shared = F.relu(self.trunk(x))  # (B, embedding)
        return {name: head(shared) for name, head in self.heads.items()}


def concat_outputs(outputs: dict[str, Tensor]) -> Tensor:
    """All head logits side by side, ``(B, sum K_task)``."""
    return torch.cat(list(outputs.values()), dim=1)


def distance_correlation(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman correlation of the pairwise Euclidean distances of ``(N, D)`` rows."""
    da, db = pdist(a.astype(np.float64)), pdist(b.astype(np.float64))
    return float(pearsonr(da, db)[0]), float(spearmanr(da, db)[0])


def _build(
    config: RkdConfig, *, student: bool, input_shape: tuple[int, int, int], heads: dict[str, int]
) -> MultiTaskNet:
    embedding = config.student_embedding if student else config.teacher_embedding
    kwargs: dict[str, object] = {}
    if config.trunk_model == "cnn":
        kwargs = {
            "channels": config.student_channels if student else config.teacher_channels,
            "hidden": config.student_hidden if student else config.teacher_hidden,
        }
    trunk = build_model(
        config.trunk_model, input_shape=input_shape, num_classes=embedding, **kwargs
    )
    return MultiTaskNet(trunk, embedding, heads)


def multitask_terms(
    tasks: tuple[str, ...], config: RkdConfig, *, relational: bool
) -> list[LossTerm]:
    """One cross-entropy term per head (labels ``"labels:<task>"``), plus RKD when asked."""
    terms: list[LossTerm] = [CrossEntropy(output=t, labels=f"labels:{t}") for t in tasks]
    if relational:
        terms.append(
            Relational(
                outputs=tasks,
                distance_weight=config.distance_weight,
                angle_weight=config.angle_weight,
                per_output=config.rkd_target == "per_head",
            )
        )
    return terms


def train_multitask(
    model: MultiTaskNet,
    x: np.ndarray,
    labels: dict[str, np.ndarray],
    *,
    config: RkdConfig,
    seed: int,
    validation: tuple[np.ndarray, np.ndarray],
    teacher: MultiTaskNet | None = None,
) -> TrainReport:
    """Train on the tasks' cross-entropies (+ the RKD term with a teacher) by the shared recipe.

    Parameters
    ----------
    model : MultiTaskNet
        The model to train (in place).
    x : np.ndarray
        Inputs ``(N, C, H, W)`` float32.
    labels : dict[str, np.ndarray]
        Labels ``(N,)`` of every head of ``model``.
    config : RkdConfig
        Epochs, patience, batch size, learning rate, RKD target and weights.
    seed : int
        Seed of the shuffling.
    validation : tuple of arrays
        Inputs and labels of the first task, for early stopping.
    teacher : MultiTaskNet, optional
        Fixed teacher; when given its outputs are matched by the RKD term.

    Returns
    -------
    TrainReport
    """
    tasks = tuple(labels)
    arrays = {"x": x, **{f"labels:{t}": v for t, v in labels.items()}}
    if teacher is not None:
        arrays.update(teacher_outputs(teacher, x, tasks, device=config.device))
    fit_config = FitConfig(
        config.epochs, config.batch_size, config.lr, seed=seed, patience=config.patience
    )
    report = fit(
        model,
        arrays,
        multitask_terms(tasks, config, relational=teacher is not None),
        fit_config,
        device=config.device,
        validation=Validation(validation[0], validation[1], output=tasks[0]),
    )
    model.eval()
    return report


@torch.no_grad()
def _predict(model: MultiTaskNet, x: np.ndarray, device: torch.device) -> dict[str, np.ndarray]:
    model.to(device).eval()
    chunks = [model(torch.from_numpy(x[i : i + 512]).to(device)) for i in range(0, len(x), 512)]
    return {n: torch.cat([c[n] for c in chunks]).float().cpu().numpy() for n in chunks[0]}


def _measure(
    model: MultiTaskNet,
    test_x: np.ndarray,
    test_labels: dict[str, np.ndarray],
    teacher_concat: np.ndarray | None,
    num_structure: int,
    device: torch.device,
) -> tuple[dict[str, float], tuple[float, float], np.ndarray]:
    """Per-task accuracy, distance correlations with the teacher and concatenated outputs."""
    outputs = _predict(model, test_x, device)
    accuracy = {n: float((outputs[n].argmax(1) == test_labels[n]).mean()) for n in outputs}
    concat = np.concatenate(list(outputs.values()), axis=1)[:num_structure]
    reference = concat if teacher_concat is None else teacher_concat
    return accuracy, distance_correlation(reference, concat), concat


def _summarise(
    name: str, model: MultiTaskNet, runs: list[tuple[dict[str, float], tuple[float, float]]]
) -> MultiTaskReport:
    tasks = list(runs[0][0])
    return MultiTaskReport(
        name,
        {t: spread([r[0][t] for r in runs]) for t in tasks},
        count_parameters(model),
        spread([r[1][0] for r in runs]),
        spread([r[1][1] for r in runs]),
    )


def _plot_accuracy(reports: list[MultiTaskReport], tasks: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(reports)
    for i, report in enumerate(reports):
        positions = np.arange(len(tasks)) + (i - (len(reports) - 1) / 2) * width
        ax.bar(positions, [report.accuracy[t].mean for t in tasks], width, label=report.name)
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="lower right")
    save_figure(fig, path)


def _plot_structure(
    teacher: np.ndarray,
    students: list[tuple[MultiTaskReport, np.ndarray]],
    path: Path,
    max_points: int = 4000,
) -> None:
    dt = pdist(teacher.astype(np.float64))
    keep = np.random.default_rng(0).permutation(len(dt))[:max_points]
    fig, axes = plt.subplots(1, len(students), figsize=(4.5 * len(students), 4), squeeze=False)
    for ax, (report, outputs) in zip(axes[0], students, strict=True):
        ds = pdist(outputs.astype(np.float64))
        ax.scatter(dt[keep] / dt.mean(), ds[keep] / ds.mean(), s=2, alpha=0.3)
        ax.set_title(
            f"{report.name}: pearson {report.distance_pearson.mean:.3f}, "
            f"spearman {report.distance_spearman.mean:.3f}",
            fontsize=8,
        )
        ax.set_xlabel("teacher pairwise distance / mean")
        ax.set_ylabel("student pairwise distance / mean")
    save_figure(fig, path)


def _run_seed(
    seed: int,
    config: RkdConfig,
    data: dict[str, Any],
    device: torch.device,
) -> tuple[dict[str, tuple[dict[str, float], tuple[float, float]]], dict[str, Any]]:
    seed_everything(seed)
    teacher = _build(config, student=False, input_shape=data["shape"], heads=data["heads"])
    train_multitask(
        teacher, data["x"], data["labels"], config=config, seed=seed, validation=data["validation"]
    )
    t_acc, t_corr, t_concat = _measure(
        teacher, data["test_x"], data["test_labels"], None, data["num_structure"], device
    )
    runs = {"teacher": (t_acc, t_corr)}
    extras: dict[str, Any] = {"teacher": teacher, "teacher_concat": t_concat}
    for name, with_teacher in (("student_task", None), ("student_rkd", teacher)):
        seed_everything(seed + 1)  # both students start from the same weights
        student = _build(config, student=True, input_shape=data["shape"], heads=data["heads"])
        train_multitask(
            student,
            data["x"],
            data["labels"],
            config=config,
            seed=seed,
            validation=data["validation"],
            teacher=with_teacher,
        )
        acc, corr, concat = _measure(
            student, data["test_x"], data["test_labels"], t_concat, data["num_structure"], device
        )
        runs[name] = (acc, corr)
        extras[name], extras[f"{name}_concat"] = student, concat
    return runs, extras


def _data(config: RkdConfig) -> dict[str, Any]:
    split = load_split(config.dataset, seed=config.split_seed, data_root=config.data_root)
    pool, validation = split_validation(
        split.private, config.validation_size, seed=config.split_seed
    )
    first = config.tasks[0]
    return {
        "shape": split.input_shape,
        "heads": {n: _labeller(n)(pool.y[:1], split.num_classes)[1] for n in config.tasks},
        "x": pool.x,
        "labels": task_labels(config.tasks, pool.y, split.num_classes),
        "validation": (validation.x, task_labels((first,), validation.y, split.num_classes)[first]),
        "test_x": split.test.x,
        "test_labels": task_labels(config.tasks, split.test.y, split.num_classes),
        "num_structure": min(config.num_structure, len(split.test)),
    }


def run_rkd(config: RkdConfig, out_dir: str | Path) -> RkdResult:
    """Train the multi-task teacher and both students per seed; compare accuracy and structure.

    Parameters
    ----------
    config : RkdConfig
        Settings.
    out_dir : str or Path
        Folder for ``results.json``, ``task_accuracy.png`` and ``distance_structure.png``.

    Returns
    -------
    RkdResult
        Per-task accuracies and distance-structure correlations, spread over seeds.
    """
    if config.rkd_target not in RKD_TARGETS:
        raise ValueError(f"unknown rkd_target {config.rkd_target!r}; known: {RKD_TARGETS}")
    if not config.tasks:
        raise ValueError(f"tasks must name at least one of {available_tasks()}")
    if not config.seeds:
        raise ValueError("seeds must list at least one seed")
    out = Path(out_dir)
    device = resolve_device(config.device)
    data = _data(config)
    runs: dict[str, list[tuple[dict[str, float], tuple[float, float]]]] = {}
    for seed in config.seeds:
        seed_runs, extras = _run_seed(seed, config, data, device)
        for name, value in seed_runs.items():
            runs.setdefault(name, []).append(value)
        write_results(out, config, {"stage": f"seed {seed}", "runs": runs})
    reports = [_summarise(name, extras[name], runs[name]) for name in MODELS]
    teacher, task, rkd = reports
    result = RkdResult(list(config.tasks), teacher, task, rkd, data["num_structure"], str(out))
    write_results(out, config, result)
    _plot_accuracy(reports, list(config.tasks), out / "task_accuracy.png")
    _plot_structure(
        extras["teacher_concat"],
        [(reports[i], extras[f"{n}_concat"]) for i, n in enumerate(MODELS) if i > 0],
        out / "distance_structure.png",
    )
    return result
