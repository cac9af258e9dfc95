"""Mode 2, linear probes: how early a linearly separable representation appears.

A teacher, a KD student and an alone-trained student (trained as in the compression mode) are
frozen; for every hidden feature a linear classifier (standardised features, multinomial
logistic regression) is fit on a small labelled slice of the private set (``probe_train_size``,
default 100: with many labels even raw ``digits`` pixels are ~96% linearly separable, which hides
differences between representations) and scored on the test set. Conv features are
average-pooled so that no probe has more than ``max_probe_dim`` inputs. Depth is the layer's
position divided by the number of hidden layers (1 = the last hidden layer), so models of
different depth share one plot; a probe on the raw pixels is depth 0.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedkd.data import ArrayDataset, load_split
from fedkd.distill.train import evaluate, resolve_device
from fedkd.models import FeatureModel
from fedkd.modes.common import prepare_out_dir, save_figure, stratified_subset, write_results
from fedkd.modes.compression import (
    CompressionConfig,
    as_compression,
    train_alone,
    train_kd,
    train_teacher,
)


@dataclass(frozen=True)
class ProbesConfig:
    """Settings of the linear-probe mode (defaults: about a minute on ``digits``)."""

    dataset: str = field(default="digits", metadata={"help": "dataset name (fedkd.data)"})
    data_root: str | None = field(default=None, metadata={"help": "data folder (idx, torchvision)"})
    download: bool = field(default=False, metadata={"help": "allow torchvision downloads"})
    seed: int = field(default=0, metadata={"help": "seed of split, models and probes"})
    teacher_model: str = field(default="cnn", metadata={"help": "teacher registry name"})
    teacher_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "teacher build kwargs, JSON"}
    )
    student_model: str = field(default="cnn", metadata={"help": "student registry name"})
    student_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"channels": [8, 16, 16], "hidden": 32},
        metadata={"help": "student build kwargs, JSON"},
    )
    teacher_epochs: int = field(default=15, metadata={"help": "teacher training epochs"})
    student_epochs: int = field(default=150, metadata={"help": "epochs of each student"})
    student_train_size: int | None = field(
        default=200, metadata={"help": "labelled examples the students see (none: all private)"}
    )
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    teacher_lr: float = field(default=1e-3, metadata={"help": "Adam learning rate, teacher"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate, students"})
    temperature: float = field(default=4.0, metadata={"help": "KD temperature T"})
    alpha: float = field(default=0.3, metadata={"help": "hard-label CE weight in the KD loss"})
    probe_train_size: int | None = field(
        default=100,
        metadata={"help": "labelled private examples the probes are fit on (none: all private)"},
    )
    max_probe_dim: int = field(
        default=1024, metadata={"help": "conv features are pooled to at most this many inputs"}
    )
    probe_c: float = field(default=1.0, metadata={"help": "inverse L2 strength of the probes"})
    probe_max_iter: int = field(default=500, metadata={"help": "probe solver iterations"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or auto"})

    def compression(self) -> CompressionConfig:
        """The equivalent compression settings used to train the three models."""
        return as_compression(self, split_seed=self.seed, seeds=(self.seed,))


@dataclass
class LayerProbe:
    """Test accuracy of a linear probe on one hidden feature of one model."""

    model: str
    feature: str
    depth: float
    dim: int
    accuracy: float


@dataclass
class ProbesResult:
    """Probe accuracies per model and depth, the raw-pixel probe and each model's own accuracy."""

    input_accuracy: float
    model_accuracies: dict[str, float]
    probes: list[LayerProbe]


def pool_to_dim(feature: torch.Tensor, max_dim: int) -> torch.Tensor:
    """Flatten a feature to ``(B, D)``; ``(B, C, H, W)`` is average-pooled to keep ``D <= max_dim``.

    The pooled side ``k`` is the largest with ``C * k * k <= max_dim`` (at least 1, so more than
    ``max_dim`` channels stay at ``C`` inputs).
    """
    if feature.ndim == 4:
        channels, height, width = feature.shape[1:]
        if channels * height * width > max_dim:
            side = max(1, math.isqrt(max_dim // channels))
            feature = F.adaptive_avg_pool2d(feature, (min(side, height), min(side, width)))
    return feature.flatten(1)  # (B, D)


@torch.no_grad()
def extract_features(
    model: FeatureModel,
    x: np.ndarray,
    *,
    max_dim: int,
    device: str | None,
    batch_size: int = 512,
) -> dict[str, np.ndarray]:
    """Every hidden feature of ``model`` on ``x``, each flattened/pooled to ``(N, D)`` float32."""
    torch_device = resolve_device(device)
    model = model.to(torch_device).eval()
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in model.feature_names}
    for start in range(0, len(x), batch_size):
        batch = torch.tensor(x[start : start + batch_size], device=torch_device)
        out = model.forward_features(batch)
        for name in model.feature_names:
            chunks[name].append(pool_to_dim(out[name].float(), max_dim).cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    c: float,
    max_iter: int,
    seed: int,
) -> float:
    """Fit standardised multinomial logistic regression on train, return test accuracy."""
    probe = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(train_x, train_y)
    return float(probe.score(test_x, test_y))


def _probe_model(
    name: str, model: FeatureModel, train: ArrayDataset, test: ArrayDataset, config: ProbesConfig
) -> list[LayerProbe]:
    train_feats = extract_features(
        model, train.x, max_dim=config.max_probe_dim, device=config.device
    )
    test_feats = extract_features(model, test.x, max_dim=config.max_probe_dim, device=config.device)
    probes = []
    depth_count = len(model.feature_names)
    for index, feature in enumerate(model.feature_names):
        accuracy = probe_accuracy(
            train_feats[feature],
            train.y,
            test_feats[feature],
            test.y,
            c=config.probe_c,
            max_iter=config.probe_max_iter,
            seed=config.seed,
        )
        probes.append(
            LayerProbe(
                model=name,
                feature=feature,
                depth=(index + 1) / depth_count,
                dim=int(train_feats[feature].shape[1]),
                accuracy=accuracy,
            )
        )
    return probes


def _plot(result: ProbesResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in result.model_accuracies:
        rows = [p for p in result.probes if p.model == name]
        depths = [0.0] + [p.depth for p in rows]
        accs = [result.input_accuracy] + [p.accuracy for p in rows]
        (line,) = ax.plot(depths, accs, marker="o", label=name)
        for p in rows:
            ax.annotate(
                p.feature,
                (p.depth, p.accuracy),
                fontsize=7,
                color=line.get_color(),
                textcoords="offset points",
                xytext=(3, -10),
            )
    ax.set_xlabel("relative depth (0 = input pixels, 1 = last hidden layer)")
    ax.set_ylabel("linear-probe test accuracy")
    ax.set_title("Linear probes per layer")
    ax.legend()
    save_figure(fig, path)


def run_probes(config: ProbesConfig, out_dir: str | Path) -> ProbesResult:
    """Train teacher and students, probe every hidden layer, write results and the plot.

    Parameters
    ----------
    config : ProbesConfig
        Settings.
    out_dir : str or Path
        Output folder; ``results.json`` and ``probes.png`` go there.

    Returns
    -------
    ProbesResult
        Probe accuracy per model and layer.
    """
    out = prepare_out_dir(out_dir)
    train_cfg = config.compression()
    split = load_split(
        config.dataset, seed=config.seed, data_root=config.data_root, download=config.download
    )
    teacher = train_teacher(
        split,
        model_name=config.teacher_model,
        model_kwargs=config.teacher_kwargs,
        epochs=config.teacher_epochs,
        batch_size=config.batch_size,
        lr=config.teacher_lr,
        seed=config.seed,
        device=config.device,
    )
    data = stratified_subset(split.private, config.student_train_size, seed=config.seed)
    models = {
        "teacher": teacher,
        "kd_student": train_kd(split, data, teacher, train_cfg, config.seed),
        "alone_student": train_alone(split, data, train_cfg, config.seed),
    }
    model_accuracies = {
        name: evaluate(model, split.test, device=config.device).accuracy
        for name, model in models.items()
    }
    probe_train = stratified_subset(split.private, config.probe_train_size, seed=config.seed + 1)
    input_accuracy = probe_accuracy(
        probe_train.x.reshape(len(probe_train), -1),
        probe_train.y,
        split.test.x.reshape(len(split.test), -1),
        split.test.y,
        c=config.probe_c,
        max_iter=config.probe_max_iter,
        seed=config.seed,
    )
    result = ProbesResult(
        input_accuracy=input_accuracy, model_accuracies=model_accuracies, probes=[]
    )
    for name, model in models.items():
        result.probes.extend(_probe_model(name, model, probe_train, split.test, config))
        write_results(out, config, result)
    _plot(result, out / "probes.png")
    return result
