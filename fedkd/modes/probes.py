"""Mode 2, linear probes: how early a linearly separable representation appears.

Per seed, a teacher, a KD student and a student trained alone (trained as in the compression
mode's ``low_label`` setting: ``low_label_size`` labels, the rest of the private pool an
unlabelled transfer set, early stopping on a validation slice) are frozen; for every hidden
feature a linear classifier (standardised features, multinomial logistic regression) is fit on a
small labelled slice of the private set (``probe_train_size``, default 100: with many labels even
raw ``digits`` pixels are ~96% linearly separable, which hides differences between
representations) and scored on the test set. Conv features are average-pooled so that no probe
has more than ``max_probe_dim`` inputs. Depth is the layer's position divided by the number of
hidden layers (1 = the last hidden layer); a probe on the raw pixels is depth 0. Every accuracy is
a spread over seeds.
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
    fit_students,
    fit_teacher,
    transfer_for,
)
from fedkd.modes.stats import Spread, spread
from fedkd.modes.students import TeacherStudentSettings, split_validation


@dataclass(frozen=True)
class ProbesConfig(TeacherStudentSettings):
    """Settings of the linear-probe mode (defaults: a few minutes on ``digits``)."""

    student_model: str = field(default="cnn", metadata={"help": "student registry name"})
    student_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"channels": [8, 16, 16], "hidden": 32},
        metadata={"help": "student build kwargs, JSON"},
    )
    low_label_size: int = field(default=200, metadata={"help": "labels the students see"})
    transfer_set: str = field(
        default="private", metadata={"help": "labelled | private | private+public"}
    )
    temperature: float = field(default=4.0, metadata={"help": "KD temperature T"})
    probe_train_size: int | None = field(
        default=100,
        metadata={"help": "labelled private examples the probes are fit on (none: all private)"},
    )
    max_probe_dim: int = field(
        default=1024, metadata={"help": "conv features are pooled to at most this many inputs"}
    )
    probe_c: float = field(default=1.0, metadata={"help": "inverse L2 strength of the probes"})
    probe_max_iter: int = field(default=500, metadata={"help": "probe solver iterations"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "seeds"})

    def compression(self) -> CompressionConfig:
        """The compression settings that train the three models (KD at one temperature)."""
        return as_compression(
            self, settings=("low_label",), temperatures=(self.temperature,), hint_temperature=None
        )


@dataclass
class LayerProbe:
    """Test accuracy of a linear probe on one hidden feature of one model, over seeds."""

    model: str
    feature: str
    depth: float
    dim: int
    accuracy: Spread


@dataclass
class ProbesResult:
    """Probe accuracies per model and depth, the raw-pixel probe and each model's accuracy."""

    input_accuracy: Spread
    model_accuracies: dict[str, Spread]
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
    model: FeatureModel, train: ArrayDataset, test: ArrayDataset, config: ProbesConfig, seed: int
) -> dict[str, tuple[float, int]]:
    """Probe accuracy and input width of every hidden feature of ``model``."""
    train_feats = extract_features(
        model, train.x, max_dim=config.max_probe_dim, device=config.device
    )
    test_feats = extract_features(model, test.x, max_dim=config.max_probe_dim, device=config.device)
    return {
        feature: (
            probe_accuracy(
                train_feats[feature],
                train.y,
                test_feats[feature],
                test.y,
                c=config.probe_c,
                max_iter=config.probe_max_iter,
                seed=seed,
            ),
            int(train_feats[feature].shape[1]),
        )
        for feature in model.feature_names
    }


def _plot(result: ProbesResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in result.model_accuracies:
        rows = [p for p in result.probes if p.model == name]
        depths = [0.0] + [p.depth for p in rows]
        accs = [result.input_accuracy.mean] + [p.accuracy.mean for p in rows]
        (line,) = ax.plot(depths, accs, marker="o", label=name)
        for p in rows:
            ax.annotate(
                p.feature,
                (p.depth, p.accuracy.mean),
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


def _seed_models(config: ProbesConfig, seed: int) -> tuple[dict[str, FeatureModel], Any]:
    split = load_split(
        config.dataset, seed=config.split_seed, data_root=config.data_root, download=config.download
    )
    train_cfg = config.compression()
    pool, validation = split_validation(
        split.private, config.validation_size, seed=config.split_seed
    )
    teacher = fit_teacher(split, pool, validation, train_cfg, seed)
    transfer = transfer_for("low_label", pool, split, train_cfg, seed)
    students = fit_students(teacher, transfer, split, validation, train_cfg, seed)
    kd_name = train_cfg.methods()[1].name
    models = {
        "teacher": teacher,
        "kd_student": students[kd_name][0],
        "alone_student": students["alone"][0],
    }
    return models, split


def run_probes(config: ProbesConfig, out_dir: str | Path) -> ProbesResult:
    """Train teacher and students per seed, probe every hidden layer, write results and plot.

    Parameters
    ----------
    config : ProbesConfig
        Settings.
    out_dir : str or Path
        Output folder; ``results.json`` and ``probes.png`` go there.

    Returns
    -------
    ProbesResult
        Probe accuracy per model and layer (spread over seeds).
    """
    if not config.seeds:
        raise ValueError("seeds must list at least one seed")
    out = prepare_out_dir(out_dir)
    accuracies: dict[str, list[float]] = {}
    probes: dict[tuple[str, str], list[tuple[float, int]]] = {}
    pixels: list[float] = []
    for seed in config.seeds:
        models, split = _seed_models(config, seed)
        probe_train = stratified_subset(split.private, config.probe_train_size, seed=seed + 1)
        pixels.append(
            probe_accuracy(
                probe_train.x.reshape(len(probe_train), -1),
                probe_train.y,
                split.test.x.reshape(len(split.test), -1),
                split.test.y,
                c=config.probe_c,
                max_iter=config.probe_max_iter,
                seed=seed,
            )
        )
        for name, model in models.items():
            accuracies.setdefault(name, []).append(
                evaluate(model, split.test, device=config.device).accuracy
            )
            for feature, value in _probe_model(
                model, probe_train, split.test, config, seed
            ).items():
                probes.setdefault((name, feature), []).append(value)
        write_results(out, config, {"stage": f"seed {seed}", "model_accuracies": accuracies})
    depth_of = {name: models[name].feature_names for name in models}
    result = ProbesResult(
        input_accuracy=spread(pixels),
        model_accuracies={name: spread(values) for name, values in accuracies.items()},
        probes=[
            LayerProbe(
                model=name,
                feature=feature,
                depth=(depth_of[name].index(feature) + 1) / len(depth_of[name]),
                dim=values[0][1],
                accuracy=spread([v[0] for v in values]),
            )
            for (name, feature), values in probes.items()
        ],
    )
    write_results(out, config, result)
    _plot(result, out / "probes.png")
    return result
