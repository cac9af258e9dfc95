"""Multi-task relational KD: students that keep the geometry of a multi-task teacher's outputs.

The teacher is a shared trunk (a registry model whose output layer is a shared embedding) with
one linear head per task. Tasks are derived from the class label: ``"class"`` (the digit, K-way),
``"parity"`` (even / odd) and ``"greater_than_4"`` (class index > 4). Two students with a smaller
trunk start from the same weights: one trained with the task losses only, one with the task
losses plus the RKD distance and angle losses (Park et al. 2019) between its outputs and the
teacher's, where an "output" is the concatenation of all head logits (``rkd_target="concat"``) or
each head's logits separately (``"per_head"``).

Reported: each task's test accuracy, and how well each student preserves the teacher's
pairwise-distance structure: the Pearson and Spearman correlation between the teacher's and the
student's pairwise Euclidean distances of concatenated outputs on test samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.distance import pdist
from scipy.stats import pearsonr, spearmanr
from torch import Tensor, nn

from fedkd.data import load_split
from fedkd.distill import resolve_device, rkd_angle_loss, rkd_distance_loss
from fedkd.models import build_model, count_parameters
from fedkd.modes.common import save_figure, seed_everything, write_results

# A task maps class labels (N,) and the class count to (task labels (N,), task class count).
TaskLabeller = Callable[[np.ndarray, int], tuple[np.ndarray, int]]
_TASKS: dict[str, TaskLabeller] = {
    "class": lambda y, k: (y, k),
    "parity": lambda y, k: (y % 2, 2),
    "greater_than_4": lambda y, k: ((y > 4).astype(np.int64), 2),
}
RKD_TARGETS = ("concat", "per_head")


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
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    num_structure: int = field(default=500, metadata={"help": "test samples for distances"})
    seed: int = 0
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or auto"})


@dataclass(frozen=True)
class MultiTaskReport:
    """Test accuracy per task, size and distance-structure agreement with the teacher.

    ``distance_pearson`` / ``distance_spearman`` correlate the model's pairwise distances of
    concatenated outputs with the teacher's (1.0 for the teacher itself).
    """

    name: str
    accuracy: dict[str, float]
    parameters: int
    distance_pearson: float
    distance_spearman: float
    final_loss: float


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


def _rkd_terms(
    student: dict[str, Tensor], teacher: dict[str, Tensor], target: str
) -> tuple[Tensor, Tensor]:
    if target == "concat":
        s, t = concat_outputs(student), concat_outputs(teacher)
        return rkd_distance_loss(s, t), rkd_angle_loss(s, t)
    pairs = [(student[name], teacher[name]) for name in student]
    distance = torch.stack([rkd_distance_loss(s, t) for s, t in pairs]).sum()
    angle = torch.stack([rkd_angle_loss(s, t) for s, t in pairs]).sum()
    return distance, angle


def train_multitask(
    model: MultiTaskNet,
    x: np.ndarray,
    labels: dict[str, np.ndarray],
    *,
    config: RkdConfig,
    device: torch.device,
    teacher: MultiTaskNet | None = None,
) -> list[float]:
    """Train on the sum of the tasks' cross-entropies (+ weighted RKD losses with a teacher).

    Parameters
    ----------
    model : MultiTaskNet
        The model to train (in place).
    x : np.ndarray
        Inputs ``(N, C, H, W)`` float32.
    labels : dict[str, np.ndarray]
        Labels ``(N,)`` of every head of ``model``.
    config : RkdConfig
        Epochs, batch size, learning rate, RKD target and weights.
    device : torch.device
        Where to train.
    teacher : MultiTaskNet, optional
        Frozen teacher; when given the RKD distance and angle losses are added (batches of
        fewer than 3 samples get task losses only).

    Returns
    -------
    list[float]
        Mean training loss of each epoch.
    """
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    inputs = torch.from_numpy(x)
    targets = {name: torch.from_numpy(v) for name, v in labels.items()}
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    losses = []
    for _ in range(config.epochs):
        total, seen = 0.0, 0
        for index in torch.randperm(len(inputs), generator=generator).split(config.batch_size):
            xb = inputs[index].to(device)
            outputs = model(xb)
            loss = sum(F.cross_entropy(outputs[n], targets[n][index].to(device)) for n in targets)
            if teacher is not None and len(index) >= 3:
                with torch.no_grad():
                    teacher_outputs = teacher(xb)
                distance, angle = _rkd_terms(outputs, teacher_outputs, config.rkd_target)
                loss = loss + config.distance_weight * distance + config.angle_weight * angle
            optimiser.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            optimiser.step()
            total += float(loss.detach()) * len(index)  # type: ignore[union-attr]
            seen += len(index)
        losses.append(total / seen)
    return losses


@torch.no_grad()
def _predict(model: MultiTaskNet, x: np.ndarray, device: torch.device) -> dict[str, np.ndarray]:
    model.to(device).eval()
    chunks = [model(torch.from_numpy(x[i : i + 512]).to(device)) for i in range(0, len(x), 512)]
    return {n: torch.cat([c[n] for c in chunks]).float().cpu().numpy() for n in chunks[0]}


def _report(
    name: str,
    model: MultiTaskNet,
    test_x: np.ndarray,
    test_labels: dict[str, np.ndarray],
    teacher_concat: np.ndarray | None,
    num_structure: int,
    losses: list[float],
    device: torch.device,
) -> tuple[MultiTaskReport, np.ndarray]:
    outputs = _predict(model, test_x, device)
    accuracy = {n: float((outputs[n].argmax(1) == test_labels[n]).mean()) for n in outputs}
    concat = np.concatenate(list(outputs.values()), axis=1)[:num_structure]
    reference = concat if teacher_concat is None else teacher_concat
    pearson, spearman = distance_correlation(reference, concat)
    report = MultiTaskReport(
        name,
        accuracy,
        count_parameters(model),
        pearson,
        spearman,
        losses[-1] if losses else float("nan"),
    )
    return report, concat


def _plot_accuracy(reports: list[MultiTaskReport], tasks: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(reports)
    for i, report in enumerate(reports):
        positions = np.arange(len(tasks)) + (i - (len(reports) - 1) / 2) * width
        ax.bar(positions, [report.accuracy[t] for t in tasks], width, label=report.name)
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
            f"{report.name}: pearson {report.distance_pearson:.3f}, "
            f"spearman {report.distance_spearman:.3f}",
            fontsize=8,
        )
        ax.set_xlabel("teacher pairwise distance / mean")
        ax.set_ylabel("student pairwise distance / mean")
    save_figure(fig, path)


def run_rkd(config: RkdConfig, out_dir: str | Path) -> RkdResult:
    """Train the multi-task teacher and both students; compare accuracy and distance structure.

    Parameters
    ----------
    config : RkdConfig
        Settings.
    out_dir : str or Path
        Folder for ``results.json``, ``task_accuracy.png`` and ``distance_structure.png``.

    Returns
    -------
    RkdResult
        Per-task accuracies and distance-structure correlations of teacher and students.
    """
    if config.rkd_target not in RKD_TARGETS:
        raise ValueError(f"unknown rkd_target {config.rkd_target!r}; known: {RKD_TARGETS}")
    if not config.tasks:
        raise ValueError(f"tasks must name at least one of {available_tasks()}")
    out = Path(out_dir)
    device = resolve_device(config.device)
    split = load_split(config.dataset, seed=config.seed, data_root=config.data_root)
    heads = {
        name: _labeller(name)(split.private.y[:1], split.num_classes)[1] for name in config.tasks
    }
    train_labels = task_labels(config.tasks, split.private.y, split.num_classes)
    test_labels = task_labels(config.tasks, split.test.y, split.num_classes)
    num_structure = min(config.num_structure, len(split.test))

    seed_everything(config.seed)
    teacher = _build(config, student=False, input_shape=split.input_shape, heads=heads)
    losses = train_multitask(teacher, split.private.x, train_labels, config=config, device=device)
    teacher_report, teacher_concat = _report(
        "teacher", teacher, split.test.x, test_labels, None, num_structure, losses, device
    )
    progress: dict[str, object] = {"tasks": list(config.tasks), "teacher": asdict(teacher_report)}
    write_results(out, config, progress)

    students: list[tuple[MultiTaskReport, np.ndarray]] = []
    for name, with_teacher in (("student_task", None), ("student_rkd", teacher)):
        seed_everything(config.seed + 1)  # both students start from the same weights
        student = _build(config, student=True, input_shape=split.input_shape, heads=heads)
        losses = train_multitask(
            student,
            split.private.x,
            train_labels,
            config=config,
            device=device,
            teacher=with_teacher,
        )
        students.append(
            _report(
                name,
                student,
                split.test.x,
                test_labels,
                teacher_concat,
                num_structure,
                losses,
                device,
            )
        )
        progress[name] = asdict(students[-1][0])
        write_results(out, config, progress)

    result = RkdResult(
        list(config.tasks), teacher_report, students[0][0], students[1][0], num_structure, str(out)
    )
    write_results(out, config, result)
    _plot_accuracy(
        [teacher_report, students[0][0], students[1][0]],
        list(config.tasks),
        out / "task_accuracy.png",
    )
    _plot_structure(teacher_concat, students, out / "distance_structure.png")
    return result
