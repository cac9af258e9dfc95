"""Mode 5, uncertainty: calibration, aleatoric and epistemic uncertainty of distilled students.

Three predictors are compared, each as a small ensemble of students trained as in the
compression mode: one member per seed, each seed drawing its own labelled subset of the private
set (minus a validation slice), shared by that seed's hard-label and KD student:

- ``hard``: students trained on hard labels;
- ``hard_ts``: the same students with temperature scaling (Guo et al. 2017), one temperature per
  student fit by NLL on a held-out validation slice of the private set (log-spaced grid);
- ``kd``: students distilled from the teacher (soft targets at ``T`` mixed with hard labels).

Per predictor: accuracy, ECE, NLL and Brier on the test set (mean over the ensemble members);
aleatoric uncertainty as the mean predictive entropy on clean test inputs vs ambiguous ones,
made by blending two test images of different classes with weights 0.5; epistemic uncertainty as
the ensemble's mutual information ``H(mean p) - mean H(p)`` (and the mean variance of the
members' probabilities) on clean, blended and uniform-noise inputs. A reliability diagram pools
the members' test predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import train_test_split

from fedkd.data import ArrayDataset, load_split
from fedkd.distill.train import predict_logits
from fedkd.metrics import (
    accuracy,
    brier_score,
    entropy,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    softmax,
)
from fedkd.modes.common import prepare_out_dir, save_figure, stratified_subset, write_results
from fedkd.modes.compression import (
    CompressionConfig,
    as_compression,
    train_alone,
    train_kd,
    train_teacher,
)

PREDICTORS = ("hard", "hard_ts", "kd")
TEMPERATURE_GRID = np.logspace(-1.5, 1.5, 301)  # 0.03 .. 31.6


@dataclass(frozen=True)
class UncertaintyConfig:
    """Settings of the uncertainty mode (defaults: about a minute on ``digits``)."""

    dataset: str = field(default="digits", metadata={"help": "dataset name (fedkd.data)"})
    data_root: str | None = field(default=None, metadata={"help": "data folder (idx, torchvision)"})
    download: bool = field(default=False, metadata={"help": "allow torchvision downloads"})
    split_seed: int = field(default=0, metadata={"help": "seed of the split and teacher"})
    teacher_model: str = field(default="cnn", metadata={"help": "teacher registry name"})
    teacher_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "teacher build kwargs, JSON"}
    )
    student_model: str = field(default="mlp", metadata={"help": "student registry name"})
    student_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"hidden": [64]}, metadata={"help": "student build kwargs, JSON"}
    )
    teacher_epochs: int = field(default=15, metadata={"help": "teacher training epochs"})
    student_epochs: int = field(default=150, metadata={"help": "epochs of each student"})
    student_train_size: int | None = field(
        default=300, metadata={"help": "labelled examples the students see (none: all)"}
    )
    validation_size: int = field(
        default=200, metadata={"help": "held-out private examples for temperature scaling"}
    )
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    teacher_lr: float = field(default=1e-3, metadata={"help": "Adam learning rate, teacher"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate, students"})
    temperature: float = field(default=4.0, metadata={"help": "KD temperature T"})
    alpha: float = field(default=0.3, metadata={"help": "hard-label CE weight in the KD loss"})
    ensemble_seeds: tuple[int, ...] = field(
        default=(0, 1, 2), metadata={"help": "one student per seed (epistemic ensemble)"}
    )
    blend_pairs: int = field(default=500, metadata={"help": "blended two-class test inputs"})
    n_bins: int = field(default=15, metadata={"help": "confidence bins (ECE, diagram)"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or auto"})

    def compression(self) -> CompressionConfig:
        """The equivalent compression settings used to train teacher and students."""
        return as_compression(self, seeds=self.ensemble_seeds)


@dataclass
class PredictorReport:
    """Calibration (member means) and uncertainty of one predictor's ensemble."""

    predictor: str
    accuracy: float
    ece: float
    nll: float
    brier: float
    temperatures: list[float]
    entropy_clean: float
    entropy_blended: float
    entropy_noise: float
    mutual_information_clean: float
    mutual_information_blended: float
    mutual_information_noise: float
    probability_variance_clean: float
    ensemble_accuracy: float


@dataclass
class UncertaintyResult:
    """Teacher accuracy and one report per predictor."""

    teacher_accuracy: float
    predictors: list[PredictorReport]


@dataclass(frozen=True)
class ProbeInputs:
    """The three input sets uncertainty is measured on."""

    clean: ArrayDataset
    blended: np.ndarray  # (P, C, H, W) 0.5/0.5 mixes of two test images of different classes
    noise: np.ndarray  # (P, C, H, W) uniform noise in [0, 1]


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the NLL of ``softmax(logits / T)`` over a log-spaced grid."""
    nlls = [negative_log_likelihood(softmax(logits, t), labels) for t in TEMPERATURE_GRID]
    return float(TEMPERATURE_GRID[int(np.argmin(nlls))])


def blend_pairs(data: ArrayDataset, count: int, *, seed: int) -> np.ndarray:
    """``count`` inputs ``0.5 * x_i + 0.5 * x_j`` with ``y_i != y_j``, drawn with a seed."""
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(data), size=count)
    second = rng.integers(0, len(data), size=count)
    clash = data.y[first] == data.y[second]
    while np.any(clash):  # redraw partners of the same class
        second[clash] = rng.integers(0, len(data), size=int(clash.sum()))
        clash = data.y[first] == data.y[second]
    return (0.5 * data.x[first] + 0.5 * data.x[second]).astype(np.float32)


def mutual_information(member_probs: np.ndarray) -> float:
    """Mean over samples of ``H(mean_m p_m) - mean_m H(p_m)``; ``member_probs`` is (M, N, C)."""
    mean_probs = member_probs.mean(axis=0)  # (N, C)
    member_entropy = np.mean([entropy(p) for p in member_probs], axis=0)  # (N,)
    return float(np.mean(np.maximum(entropy(mean_probs) - member_entropy, 0.0)))


def _split_validation(
    data: ArrayDataset, size: int, *, seed: int
) -> tuple[ArrayDataset, ArrayDataset]:
    if not 0 < size < len(data):
        raise ValueError(f"validation_size must lie in [1, {len(data) - 1}], got {size}")
    rest, val = train_test_split(
        np.arange(len(data)), test_size=size, stratify=data.y, random_state=seed
    )
    return data.subset(np.sort(rest)), data.subset(np.sort(val))


def _report(
    name: str,
    members: list[dict[str, np.ndarray]],
    temperatures: list[float],
    inputs: ProbeInputs,
    n_bins: int,
) -> PredictorReport:
    """``members``: per student, softmax probs on 'clean', 'blended', 'noise'."""
    labels = inputs.clean.y
    stacked = {key: np.stack([m[key] for m in members]) for key in members[0]}  # (M, N, C)
    return PredictorReport(
        predictor=name,
        accuracy=float(np.mean([accuracy(p, labels) for p in stacked["clean"]])),
        ece=float(
            np.mean(
                [expected_calibration_error(p, labels, n_bins=n_bins) for p in stacked["clean"]]
            )
        ),
        nll=float(np.mean([negative_log_likelihood(p, labels) for p in stacked["clean"]])),
        brier=float(np.mean([brier_score(p, labels) for p in stacked["clean"]])),
        temperatures=temperatures,
        entropy_clean=float(np.mean([entropy(p).mean() for p in stacked["clean"]])),
        entropy_blended=float(np.mean([entropy(p).mean() for p in stacked["blended"]])),
        entropy_noise=float(np.mean([entropy(p).mean() for p in stacked["noise"]])),
        mutual_information_clean=mutual_information(stacked["clean"]),
        mutual_information_blended=mutual_information(stacked["blended"]),
        mutual_information_noise=mutual_information(stacked["noise"]),
        probability_variance_clean=float(stacked["clean"].var(axis=0).mean()),
        ensemble_accuracy=accuracy(stacked["clean"].mean(axis=0), labels),
    )


def _plot_reliability(
    pooled: dict[str, np.ndarray], labels: np.ndarray, n_bins: int, path: Path
) -> None:
    fig, axes = plt.subplots(1, len(pooled), figsize=(4 * len(pooled), 4), sharey=True)
    for ax, (name, probs) in zip(np.atleast_1d(axes), pooled.items(), strict=True):
        bins = reliability_bins(probs, labels, n_bins=n_bins)
        centres = (bins.edges[:-1] + bins.edges[1:]) / 2
        filled = bins.counts > 0
        ax.bar(
            centres[filled],
            bins.accuracies[filled],
            width=1 / n_bins,
            edgecolor="black",
            alpha=0.7,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
        ece = expected_calibration_error(probs, labels, n_bins=n_bins)
        ax.set_title(f"{name} (pooled ECE {ece:.3f})")
        ax.set_xlabel("confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    np.atleast_1d(axes)[0].set_ylabel("accuracy")
    np.atleast_1d(axes)[0].legend(loc="upper left", fontsize=8)
    save_figure(fig, path)


def _plot_uncertainty(result: UncertaintyResult, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [r.predictor for r in result.predictors]
    xs = np.arange(len(names))
    width = 0.27
    for offset, key in zip((-width, 0.0, width), ("clean", "blended", "noise"), strict=True):
        left.bar(
            xs + offset, [getattr(r, f"entropy_{key}") for r in result.predictors], width, label=key
        )
        right.bar(
            xs + offset,
            [getattr(r, f"mutual_information_{key}") for r in result.predictors],
            width,
            label=key,
        )
    left.set_title("Aleatoric: mean predictive entropy (nats)")
    right.set_title("Epistemic: ensemble mutual information (nats)")
    for ax in (left, right):
        ax.set_xticks(xs, names)
        ax.legend()
    save_figure(fig, path)


def run_uncertainty(config: UncertaintyConfig, out_dir: str | Path) -> UncertaintyResult:
    """Train teacher and student ensembles, measure calibration and uncertainty, write outputs.

    Parameters
    ----------
    config : UncertaintyConfig
        Settings.
    out_dir : str or Path
        Output folder; ``results.json``, ``reliability.png`` and ``uncertainty.png`` go there.

    Returns
    -------
    UncertaintyResult
        One report per predictor (``hard``, ``hard_ts``, ``kd``).
    """
    if not config.ensemble_seeds:
        raise ValueError("ensemble_seeds must list at least one seed")
    out = prepare_out_dir(out_dir)
    split = load_split(
        config.dataset, seed=config.split_seed, data_root=config.data_root, download=config.download
    )
    train_cfg = config.compression()
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
    teacher_acc = accuracy(
        predict_logits(teacher, split.test.x, device=config.device), split.test.y
    )
    write_results(out, config, {"stage": "teacher", "teacher_accuracy": teacher_acc})
    pool, validation = _split_validation(
        split.private, config.validation_size, seed=config.split_seed
    )
    rng = np.random.default_rng(config.split_seed)
    inputs = ProbeInputs(
        clean=split.test,
        blended=blend_pairs(split.test, config.blend_pairs, seed=config.split_seed),
        noise=rng.random((config.blend_pairs, *split.input_shape), dtype=np.float32),
    )
    members: dict[str, list[dict[str, np.ndarray]]] = {p: [] for p in PREDICTORS}
    temperatures: dict[str, list[float]] = {p: [] for p in PREDICTORS}
    for seed in config.ensemble_seeds:
        data = stratified_subset(pool, config.student_train_size, seed=seed)
        students = {
            "hard": train_alone(split, data, train_cfg, seed),
            "kd": train_kd(split, data, teacher, train_cfg, seed),
        }
        for name, student in students.items():
            logits = {
                key: predict_logits(student, x, device=config.device)
                for key, x in (
                    ("clean", inputs.clean.x),
                    ("blended", inputs.blended),
                    ("noise", inputs.noise),
                )
            }
            members[name].append({key: softmax(v) for key, v in logits.items()})
            temperatures[name].append(1.0)
            if name == "hard":
                val_logits = predict_logits(student, validation.x, device=config.device)
                fitted = fit_temperature(val_logits, validation.y)
                members["hard_ts"].append({k: softmax(v, fitted) for k, v in logits.items()})
                temperatures["hard_ts"].append(fitted)
        write_results(
            out,
            config,
            {
                "stage": f"seed {seed}",
                "teacher_accuracy": teacher_acc,
                "temperatures": temperatures,
            },
        )
    result = UncertaintyResult(
        teacher_accuracy=teacher_acc,
        predictors=[
            _report(p, members[p], temperatures[p], inputs, config.n_bins) for p in PREDICTORS
        ],
    )
    write_results(out, config, result)
    pooled = {p: np.concatenate([m["clean"] for m in members[p]]) for p in PREDICTORS}
    pooled_labels = np.tile(split.test.y, len(config.ensemble_seeds))
    _plot_reliability(pooled, pooled_labels, config.n_bins, out / "reliability.png")
    _plot_uncertainty(result, out / "uncertainty.png")
    return result
