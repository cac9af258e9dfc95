"""Mode 3, continual learning: task A then task B, forgetting vs distillation from the past self.

Class-incremental setting: one model with a single head over all classes is trained on task A
(default classes 0-4), saved, then trained on task B (5-9) by one of:

- ``finetune``: cross-entropy on task-B data only;
- ``lwf``: Learning without Forgetting (Li & Hoiem 2016): cross-entropy on task-B data plus
  ``lwf_weight * kd_loss`` between the new model's and the saved task-A model's logits
  *restricted to the old classes*, on the new data;
- ``lwf_replay``: the same on task-B data joined with a replay buffer of ``replay_size`` stored
  task-A examples (stratified);
- ``replay``: the buffer without distillation (optional, to separate the two effects).

Accuracy on A and B is measured after each task (argmax over all classes; ``task_aware``
accuracies take the argmax within the task's classes), and forgetting on A is
``acc_A(after A) - acc_A(after B)``. Results are averaged over seeds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from fedkd.data import ArrayDataset, load_split
from fedkd.distill.losses import kd_loss
from fedkd.distill.train import predict_logits, resolve_device
from fedkd.models import FeatureModel, build_model
from fedkd.modes.common import (
    prepare_out_dir,
    save_figure,
    seed_everything,
    stratified_subset,
    write_results,
)

METHODS = ("finetune", "lwf", "lwf_replay", "replay")


@dataclass(frozen=True)
class ContinualConfig:
    """Settings of the continual-learning mode (defaults: about a minute on ``digits``)."""

    dataset: str = field(default="digits", metadata={"help": "dataset name (fedkd.data)"})
    data_root: str | None = field(default=None, metadata={"help": "data folder (idx, torchvision)"})
    download: bool = field(default=False, metadata={"help": "allow torchvision downloads"})
    split_seed: int = field(default=0, metadata={"help": "seed of the data split"})
    model: str = field(default="mlp", metadata={"help": "model registry name"})
    model_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "model build kwargs, JSON"}
    )
    task_a_classes: tuple[int, ...] = field(
        default=(0, 1, 2, 3, 4), metadata={"help": "classes of task A"}
    )
    task_b_classes: tuple[int, ...] = field(
        default=(5, 6, 7, 8, 9), metadata={"help": "classes of task B"}
    )
    methods: tuple[str, ...] = field(
        default=METHODS, metadata={"help": f"task-B methods among {METHODS}"}
    )
    epochs_a: int = field(default=20, metadata={"help": "epochs on task A"})
    epochs_b: int = field(default=20, metadata={"help": "epochs on task B"})
    batch_size: int = field(default=64, metadata={"help": "training batch size"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    temperature: float = field(default=2.0, metadata={"help": "LwF distillation temperature"})
    lwf_weight: float = field(default=1.0, metadata={"help": "weight of the LwF loss"})
    replay_size: int = field(default=50, metadata={"help": "task-A examples in the buffer"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "seeds averaged over"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or auto"})


@dataclass
class MethodOutcome:
    """Accuracies after task B for one method, mean over seeds (``per_seed_forgetting`` kept)."""

    method: str
    accuracy_a: float
    accuracy_b: float
    accuracy_all: float
    task_aware_accuracy_a: float
    forgetting_a: float
    per_seed_forgetting: list[float]


@dataclass
class ContinualResult:
    """Accuracies after task A (shared by all methods) and after task B per method."""

    after_a_accuracy_a: float
    after_a_accuracy_b: float
    after_b: list[MethodOutcome]


def task_data(data: ArrayDataset, classes: tuple[int, ...]) -> ArrayDataset:
    """The examples of ``data`` whose label is in ``classes``."""
    return data.subset(np.flatnonzero(np.isin(data.y, classes)))


def train_task(
    model: FeatureModel,
    data: ArrayDataset,
    config: ContinualConfig,
    *,
    epochs: int,
    seed: int,
    old_model: FeatureModel | None = None,
) -> None:
    """Adam + cross-entropy over all logits; with ``old_model``, plus LwF on the old classes.

    The LwF term is ``lwf_weight * kd_loss(new[:, A], old[:, A], T)`` where ``A`` are the task-A
    classes and ``old`` the frozen saved model's logits on the same batch.
    """
    device = resolve_device(config.device)
    model.to(device).train()
    if old_model is not None:
        old_model.to(device).eval()
    old_classes = torch.tensor(config.task_a_classes, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    x_all, y_all = torch.tensor(data.x), torch.tensor(data.y)  # copies: inputs may be read-only
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), config.batch_size):
            batch = order[start : start + config.batch_size]
            x, y = x_all[batch].to(device), y_all[batch].to(device)
            logits = model(x)  # (B, num_classes)
            loss = F.cross_entropy(logits, y)
            if old_model is not None:
                with torch.no_grad():
                    old_logits = old_model(x)[:, old_classes]  # (B, |A|)
                loss = loss + config.lwf_weight * kd_loss(
                    logits[:, old_classes], old_logits, temperature=config.temperature
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def task_accuracy(
    model: FeatureModel,
    data: ArrayDataset,
    classes: tuple[int, ...],
    *,
    device: str | None,
    task_aware: bool = False,
) -> float:
    """Accuracy on ``data`` (argmax over all logits, or only over ``classes`` if task-aware)."""
    logits = predict_logits(model, data.x, device=device)  # (N, num_classes)
    if not task_aware:
        return float(np.mean(logits.argmax(axis=1) == data.y))
    allowed = np.asarray(classes)
    return float(np.mean(allowed[logits[:, allowed].argmax(axis=1)] == data.y))


def _check(config: ContinualConfig, num_classes: int) -> None:
    unknown = [m for m in config.methods if m not in METHODS]
    if unknown or not config.methods:
        raise ValueError(f"unknown or no methods {unknown}; known: {', '.join(METHODS)}")
    a, b = set(config.task_a_classes), set(config.task_b_classes)
    if not a or not b or a & b or not a | b <= set(range(num_classes)):
        raise ValueError(
            "task_a_classes and task_b_classes must be non-empty, disjoint and within "
            f"0..{num_classes - 1}; got {config.task_a_classes} and {config.task_b_classes}"
        )
    if not config.seeds:
        raise ValueError("seeds must list at least one seed")


def _plot(result: ContinualResult, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for outcome in result.after_b:
        left.plot(
            [0, 1],
            [result.after_a_accuracy_a, outcome.accuracy_a],
            marker="o",
            label=outcome.method,
        )
    left.set_xticks([0, 1], ["after task A", "after task B"])
    left.set_ylim(-0.02, 1.02)
    left.set_ylabel("test accuracy on task A")
    left.set_title("Task A accuracy (class-incremental)")
    left.legend()
    names = [o.method for o in result.after_b]
    xs = np.arange(len(names))
    width = 0.27
    right.bar(xs - width, [o.accuracy_a for o in result.after_b], width, label="acc A")
    right.bar(xs, [o.accuracy_b for o in result.after_b], width, label="acc B")
    right.bar(xs + width, [o.forgetting_a for o in result.after_b], width, label="forgetting A")
    right.set_xticks(xs, names)
    right.set_ylim(0, 1.2)
    right.set_title("After task B (mean over seeds)")
    right.legend(loc="upper center", ncol=3, fontsize=8)
    save_figure(fig, path)


def run_continual(config: ContinualConfig, out_dir: str | Path) -> ContinualResult:
    """Train task A then task B with each method, write ``results.json`` and ``continual.png``.

    Parameters
    ----------
    config : ContinualConfig
        Settings.
    out_dir : str or Path
        Output folder.

    Returns
    -------
    ContinualResult
        Accuracies after each task and forgetting on task A per method.
    """
    out = prepare_out_dir(out_dir)
    split = load_split(
        config.dataset, seed=config.split_seed, data_root=config.data_root, download=config.download
    )
    _check(config, split.num_classes)
    a_train, b_train = (
        task_data(split.private, c) for c in (config.task_a_classes, config.task_b_classes)
    )
    a_test, b_test = (
        task_data(split.test, c) for c in (config.task_a_classes, config.task_b_classes)
    )
    after_a: list[tuple[float, float]] = []
    rows: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in config.methods}
    for seed in config.seeds:
        seed_everything(seed)
        base = build_model(
            config.model,
            input_shape=split.input_shape,
            num_classes=split.num_classes,
            **config.model_kwargs,
        )
        train_task(base, a_train, config, epochs=config.epochs_a, seed=seed)
        acc_a = task_accuracy(base, a_test, config.task_a_classes, device=config.device)
        after_a.append(
            (acc_a, task_accuracy(base, b_test, config.task_b_classes, device=config.device))
        )
        buffer = stratified_subset(a_train, config.replay_size, seed=seed)
        for method in config.methods:
            model = copy.deepcopy(base)
            data = b_train
            if method in ("lwf_replay", "replay"):
                data = ArrayDataset(
                    x=np.concatenate([b_train.x, buffer.x]), y=np.concatenate([b_train.y, buffer.y])
                )
            old = base if method in ("lwf", "lwf_replay") else None
            train_task(model, data, config, epochs=config.epochs_b, seed=seed + 1, old_model=old)
            rows[method].append(
                (
                    task_accuracy(model, a_test, config.task_a_classes, device=config.device),
                    task_accuracy(model, b_test, config.task_b_classes, device=config.device),
                    task_accuracy(
                        model, split.test, tuple(range(split.num_classes)), device=config.device
                    ),
                    task_accuracy(
                        model, a_test, config.task_a_classes, device=config.device, task_aware=True
                    ),
                )
            )
        result = _summarise(after_a, rows)
        write_results(out, config, result)
    _plot(result, out / "continual.png")
    return result


def _summarise(
    after_a: list[tuple[float, float]], rows: dict[str, list[tuple[float, float, float, float]]]
) -> ContinualResult:
    acc_a_after_a = np.array([a for a, _ in after_a])
    outcomes = []
    for method, values in rows.items():
        table = np.array(values)  # (seeds, 4): acc A, acc B, acc all, task-aware acc A
        forgetting = acc_a_after_a[: len(table)] - table[:, 0]
        outcomes.append(
            MethodOutcome(
                method=method,
                accuracy_a=float(table[:, 0].mean()),
                accuracy_b=float(table[:, 1].mean()),
                accuracy_all=float(table[:, 2].mean()),
                task_aware_accuracy_a=float(table[:, 3].mean()),
                forgetting_a=float(forgetting.mean()),
                per_seed_forgetting=forgetting.tolist(),
            )
        )
    return ContinualResult(
        after_a_accuracy_a=float(acc_a_after_a.mean()),
        after_a_accuracy_b=float(np.mean([b for _, b in after_a])),
        after_b=outcomes,
    )
