"""Mode 3, continual learning: a sequence of tasks, forgetting vs distillation from the past self.

The default is Split-MNIST (five tasks of two digits each, the standard benchmark; on ``digits``
the same split of its ten classes); ``--tasks 0,1,2,3,4 5,6,7,8,9`` gives task A then task B.
One model with one output layer over all classes learns the tasks in order, in two scenarios
(van de Ven, Tuytelaars & Tolias 2019):

- ``task`` (task-incremental): the task is known, so the loss and the prediction of a sample are
  restricted to its task's classes (a multi-head model as a mask over one shared layer);
- ``class`` (class-incremental): no task identity, argmax over every class.

Methods, each a list of loss terms over the shared recipe (:mod:`fedkd.distill.recipe`):

- ``finetune``: cross-entropy on the current task only;
- ``lwf``: Learning without Forgetting (Li & Hoiem 2016): plus ``lwf_weight * KD_T`` between the
  model and its saved previous self on the current inputs, over the old classes (task scenario:
  one KD term per old task head);
- ``replay``: the current task joined with a buffer of ``replay_per_task`` stored examples of
  every earlier task;
- ``lwf_replay``: both.

After each task every task's test accuracy is measured: the accuracy matrix ``R[i][j]``
(accuracy on task ``j`` after training task ``i``), the average final accuracy ``mean_j R[T-1][j]``
and the average forgetting ``mean_{j<T-1} max_{j<=i<T-1} R[i][j] - R[T-1][j]``, with seeds. Every
method trains each task for the same fixed number of epochs, the protocol of the benchmark
(early stopping on the current task would trade plasticity for forgetting, a different knob).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from fedkd.data import ArrayDataset, load_split
from fedkd.distill.recipe import FitConfig, fit, predict_outputs, teacher_outputs
from fedkd.distill.terms import CrossEntropy, LossTerm, SoftTargets
from fedkd.models import FeatureModel
from fedkd.modes.common import prepare_out_dir, save_figure, stratified_subset, write_results
from fedkd.modes.stats import Spread, spread
from fedkd.modes.students import new_model

METHODS = ("finetune", "lwf", "replay", "lwf_replay")
SCENARIOS = ("task", "class")
SPLIT_MNIST = ("0,1", "2,3", "4,5", "6,7", "8,9")
# Published Split-MNIST average accuracy after the last task (5 tasks, MLP):
# class-incremental from Avalanche's continual-learning-baselines (tests/target_results.csv:
# lwf 0.23); task-incremental and class-incremental fine-tuning / LwF from van de Ven et al.
# (2019), "Three scenarios for continual learning", Table 4.
PUBLISHED = {
    "task/finetune": 0.8719,
    "task/lwf": 0.9957,
    "class/finetune": 0.1990,
    "class/lwf": 0.2385,
    "class/lwf (Avalanche)": 0.23,
}


@dataclass(frozen=True)
class ContinualConfig:
    """Settings of the continual-learning mode (defaults: a few minutes on ``digits``)."""

    dataset: str = field(default="digits", metadata={"help": "dataset name (fedkd.data)"})
    data_root: str | None = field(default=None, metadata={"help": "data folder (idx, torchvision)"})
    download: bool = field(default=False, metadata={"help": "allow torchvision downloads"})
    split_seed: int = field(default=0, metadata={"help": "seed of the data split"})
    model: str = field(default="mlp", metadata={"help": "model registry name"})
    model_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"hidden": [100, 100]}, metadata={"help": "build kwargs, JSON"}
    )
    tasks: tuple[str, ...] = field(
        default=SPLIT_MNIST, metadata={"help": "classes of each task, comma-separated"}
    )
    scenarios: tuple[str, ...] = field(default=SCENARIOS, metadata={"help": "task | class"})
    methods: tuple[str, ...] = field(default=METHODS, metadata={"help": f"among {METHODS}"})
    epochs: int = field(default=10, metadata={"help": "epochs per task (every method)"})
    batch_size: int = field(default=64, metadata={"help": "training batch size"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    temperature: float = field(default=2.0, metadata={"help": "LwF distillation temperature"})
    lwf_weight: float = field(default=1.0, metadata={"help": "weight of each LwF term"})
    replay_per_task: int = field(default=50, metadata={"help": "stored examples per old task"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "seeds"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or auto"})

    def task_classes(self) -> list[tuple[int, ...]]:
        """The tasks as tuples of class indices."""
        try:
            return [tuple(int(c) for c in task.split(",")) for task in self.tasks]
        except ValueError as error:
            raise ValueError(f"tasks must be comma-separated class lists, got {self.tasks}") from (
                error
            )


@dataclass
class MethodOutcome:
    """One method in one scenario: the accuracy matrix (seed mean) and its summaries."""

    scenario: str
    method: str
    accuracy_matrix: list[list[float]]
    average_accuracy: Spread
    forgetting: Spread
    final_task_accuracy: list[Spread]


@dataclass
class ContinualResult:
    """Every (scenario, method) outcome and the published Split-MNIST figures beside them."""

    tasks: list[list[int]]
    outcomes: list[MethodOutcome]
    published: dict[str, float]


def task_data(data: ArrayDataset, classes: tuple[int, ...]) -> ArrayDataset:
    """The examples of ``data`` whose label is in ``classes``."""
    return data.subset(np.flatnonzero(np.isin(data.y, classes)))


def average_forgetting(matrix: np.ndarray) -> float:
    """``mean_{j<T-1} max_{j<=i<T-1} R[i, j] - R[T-1, j]`` of a ``(T, T)`` accuracy matrix."""
    last = matrix.shape[0] - 1
    if last == 0:
        return 0.0
    return float(np.mean([matrix[j:last, j].max() - matrix[last, j] for j in range(last)]))


def _masks(labels: np.ndarray, tasks: list[tuple[int, ...]], num_classes: int) -> np.ndarray:
    """``(N, classes)`` booleans: each row's own task's classes."""
    task_mask = np.zeros((len(tasks), num_classes), dtype=bool)
    owner = np.zeros(num_classes, dtype=np.int64)
    for index, classes in enumerate(tasks):
        task_mask[index, list(classes)] = True
        owner[list(classes)] = index
    return task_mask[owner[labels]]


@dataclass
class _Learner:
    """One model learning the task sequence by one method in one scenario."""

    model: FeatureModel
    method: str
    scenario: str
    tasks: list[tuple[int, ...]]
    num_classes: int
    config: ContinualConfig
    buffer: list[ArrayDataset] = field(default_factory=list)

    def _terms(self, index: int) -> list[LossTerm]:
        terms: list[LossTerm] = [
            CrossEntropy(mask="class_mask" if self.scenario == "task" else None)
        ]
        if "lwf" not in self.method or index == 0:
            return terms
        old = self.tasks[:index]
        groups = old if self.scenario == "task" else [tuple(c for t in old for c in t)]
        return terms + [
            SoftTargets(self.config.lwf_weight, temperature=self.config.temperature, classes=g)
            for g in groups
        ]

    def learn(self, index: int, data: ArrayDataset, seed: int) -> None:
        """Train on task ``index`` (plus the buffer for replay methods), then store examples."""
        train = data
        if "replay" in self.method and self.buffer:
            train = ArrayDataset(
                x=np.concatenate([data.x, *(b.x for b in self.buffer)]),
                y=np.concatenate([data.y, *(b.y for b in self.buffer)]),
            )
        arrays = {"x": train.x, "labels": train.y}
        if self.scenario == "task":
            arrays["class_mask"] = _masks(train.y, self.tasks, self.num_classes)
        if "lwf" in self.method and index > 0:  # the saved previous self, before this task
            arrays.update(teacher_outputs(self.model, train.x, device=self.config.device))
        config = self.config
        fit_config = FitConfig(config.epochs, config.batch_size, config.lr, seed=seed)
        fit(self.model, arrays, self._terms(index), fit_config, device=config.device)
        self.buffer.append(stratified_subset(data, config.replay_per_task, seed=seed))

    def accuracy(self, test: ArrayDataset, classes: tuple[int, ...]) -> float:
        """Test accuracy on one task (task scenario: argmax within its classes)."""
        logits = predict_outputs(self.model, test.x, ["logits"], device=self.config.device)
        scores = logits["logits"]
        if self.scenario == "task":
            allowed = np.asarray(classes)
            return float(np.mean(allowed[scores[:, allowed].argmax(axis=1)] == test.y))
        return float(np.mean(scores.argmax(axis=1) == test.y))


def _check(config: ContinualConfig, num_classes: int) -> list[tuple[int, ...]]:
    tasks = config.task_classes()
    flat = [c for task in tasks for c in task]
    if len(tasks) < 2 or len(set(flat)) != len(flat) or not set(flat) <= set(range(num_classes)):
        raise ValueError(
            "tasks must be two or more disjoint, non-empty class lists within "
            f"0..{num_classes - 1}; got {config.tasks}"
        )
    for name, given, known in (
        ("methods", config.methods, METHODS),
        ("scenarios", config.scenarios, SCENARIOS),
    ):
        unknown = [g for g in given if g not in known]
        if unknown or not given:
            raise ValueError(f"unknown or no {name} {unknown}; known: {', '.join(known)}")
    if not config.seeds:
        raise ValueError("seeds must list at least one seed")
    return tasks


def _run_sequence(
    learner: _Learner, train: list[ArrayDataset], test: list[ArrayDataset], seed: int
) -> np.ndarray:
    matrix = np.zeros((len(train), len(train)))
    for i, data in enumerate(train):
        learner.learn(i, data, seed=seed * 100 + i)
        matrix[i] = [learner.accuracy(t, c) for t, c in zip(test, learner.tasks, strict=True)]
    return matrix


def _outcome(scenario: str, method: str, matrices: list[np.ndarray]) -> MethodOutcome:
    stack = np.stack(matrices)  # (seeds, T, T)
    return MethodOutcome(
        scenario=scenario,
        method=method,
        accuracy_matrix=stack.mean(axis=0).tolist(),
        average_accuracy=spread([m[-1].mean() for m in matrices]),
        forgetting=spread([average_forgetting(m) for m in matrices]),
        final_task_accuracy=[spread(stack[:, -1, j].tolist()) for j in range(stack.shape[1])],
    )


def _plot(result: ContinualResult, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    for ax, scenario in zip(axes[0], SCENARIOS, strict=True):
        rows = [o for o in result.outcomes if o.scenario == scenario]
        xs = np.arange(len(rows))
        for offset, key in ((-0.2, "average_accuracy"), (0.2, "forgetting")):
            values = [getattr(o, key) for o in rows]
            ax.bar(
                xs + offset,
                [v.mean for v in values],
                0.4,
                label=key.replace("_", " "),
                yerr=[0.0 if v.n < 2 else v.std for v in values],
            )
        ax.set_xticks(xs, [o.method for o in rows])
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{scenario}-incremental ({len(result.tasks)} tasks)")
        ax.legend(fontsize=8)
    save_figure(fig, path)


def run_continual(config: ContinualConfig, out_dir: str | Path) -> ContinualResult:
    """Learn the task sequence with each method in each scenario, write results and a plot.

    Parameters
    ----------
    config : ContinualConfig
        Settings.
    out_dir : str or Path
        Output folder (``results.json``, ``continual.png``).

    Returns
    -------
    ContinualResult
        Accuracy matrices, average accuracy and forgetting per scenario and method.
    """
    out = prepare_out_dir(out_dir)
    split = load_split(
        config.dataset, seed=config.split_seed, data_root=config.data_root, download=config.download
    )
    tasks = _check(config, split.num_classes)
    train = [task_data(split.private, c) for c in tasks]
    test = [task_data(split.test, c) for c in tasks]
    matrices: dict[tuple[str, str], list[np.ndarray]] = {}
    outcomes: list[MethodOutcome] = []
    for scenario in config.scenarios:
        for method in config.methods:
            for seed in config.seeds:
                model = new_model(
                    config.model, config.model_kwargs, split.input_shape, split.num_classes, seed
                )
                learner = _Learner(
                    copy.deepcopy(model), method, scenario, tasks, split.num_classes, config
                )
                matrices.setdefault((scenario, method), []).append(
                    _run_sequence(learner, train, test, seed)
                )
            outcomes.append(_outcome(scenario, method, matrices[(scenario, method)]))
            result = ContinualResult([list(t) for t in tasks], outcomes, dict(PUBLISHED))
            write_results(out, config, result)
    result = ContinualResult([list(t) for t in tasks], outcomes, dict(PUBLISHED))
    write_results(out, config, result)
    _plot(result, out / "continual.png")
    return result
