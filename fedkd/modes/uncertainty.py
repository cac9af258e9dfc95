"""Mode 5, uncertainty: calibration, aleatoric and epistemic uncertainty of distilled students.

A fair comparison: per seed, one labelled subset of ``label_budget`` private examples is drawn
and *every* model learns from those labels only -- the teacher too -- so the KD student holds no
label the hard-label student lacks (by default it also sees the same inputs:
``transfer_set="labelled"``; ``private`` adds the rest of the pool unlabelled). Predictors, each
a small ensemble with one member per seed:

- ``hard``: students trained on hard labels;
- ``hard_ts``: the same with temperature scaling (Guo et al. 2017), one temperature per student
  fit by NLL on the held-out validation slice (log-spaced grid);
- ``kd``: students distilled from the teacher (soft targets at ``T`` mixed with hard labels);
- ``kd_ts``: the KD students with their own fitted temperature.

Per predictor: accuracy, ECE, NLL and Brier on the test set (spread over members), and paired
per-seed differences against ``hard_ts`` with 95% t-intervals: a claim such as "KD calibrates
better than temperature scaling" is made only when its interval excludes 0. Aleatoric
uncertainty is the mean predictive entropy on clean test inputs vs ambiguous ones (two test
images of different classes blended 0.5/0.5); epistemic uncertainty is the ensemble's mutual
information ``H(mean p) - mean H(p)`` on clean, blended and uniform-noise inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

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
from fedkd.modes.common import prepare_out_dir, save_figure, write_results
from fedkd.modes.compression import (
    CompressionConfig,
    as_compression,
    fit_students,
    fit_teacher,
    transfer_for,
)
from fedkd.modes.stats import Spread, paired_difference, spread
from fedkd.modes.students import TeacherStudentSettings, split_validation

PREDICTORS = ("hard", "hard_ts", "kd", "kd_ts")
BASELINE = "hard_ts"
TEMPERATURE_GRID = np.logspace(-1.5, 1.5, 301)  # 0.03 .. 31.6


@dataclass(frozen=True)
class UncertaintyConfig(TeacherStudentSettings):
    """Settings of the uncertainty mode (defaults: a few minutes on ``digits``)."""

    student_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"hidden": [64]}, metadata={"help": "student build kwargs, JSON"}
    )
    label_budget: int = field(
        default=300, metadata={"help": "labelled examples every model (teacher too) sees"}
    )
    transfer_set: str = field(
        default="labelled", metadata={"help": "KD inputs: labelled | private | private+public"}
    )
    validation_size: int = field(
        default=200, metadata={"help": "held-out slice: early stopping and temperature fits"}
    )
    temperature: float = field(default=4.0, metadata={"help": "KD temperature T"})
    ensemble_seeds: tuple[int, ...] = field(
        default=(0, 1, 2), metadata={"help": "one member per seed (epistemic ensemble)"}
    )
    blend_pairs: int = field(default=500, metadata={"help": "blended two-class test inputs"})
    n_bins: int = field(default=15, metadata={"help": "confidence bins (ECE, diagram)"})

    def compression(self) -> CompressionConfig:
        """The compression settings that train teacher and students."""
        return as_compression(
            self,
            seeds=self.ensemble_seeds,
            settings=("low_label",),
            low_label_size=self.label_budget,
            temperatures=(self.temperature,),
            hint_temperature=None,
        )


@dataclass
class PredictorReport:
    """Calibration (member means) and uncertainty of one predictor's ensemble."""

    predictor: str
    accuracy: Spread
    ece: Spread
    nll: Spread
    brier: Spread
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

    teacher_accuracy: Spread
    predictors: list[PredictorReport]
    versus_baseline: dict[str, dict[str, Spread]]
    claims: list[str]


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
        accuracy=spread([accuracy(p, labels) for p in stacked["clean"]]),
        ece=spread(
            [expected_calibration_error(p, labels, n_bins=n_bins) for p in stacked["clean"]]
        ),
        nll=spread([negative_log_likelihood(p, labels) for p in stacked["clean"]]),
        brier=spread([brier_score(p, labels) for p in stacked["clean"]]),
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


METRICS = ("accuracy", "ece", "nll", "brier")


def compare(reports: list[PredictorReport]) -> tuple[dict[str, dict[str, Spread]], list[str]]:
    """Paired per-seed differences of every predictor against ``hard_ts``, and the claims whose
    95% interval excludes 0 (lower ECE/NLL/Brier is better, higher accuracy)."""
    base = next(r for r in reports if r.predictor == BASELINE)
    differences: dict[str, dict[str, Spread]] = {}
    claims = []
    for report in reports:
        if report.predictor == BASELINE:
            continue
        differences[report.predictor] = {}
        for metric in METRICS:
            diff = paired_difference(getattr(report, metric).values, getattr(base, metric).values)
            differences[report.predictor][metric] = diff
            if diff.excludes(0.0):
                better = (diff.mean > 0) == (metric == "accuracy")
                claims.append(
                    f"{report.predictor} {'better' if better else 'worse'} than {BASELINE} on "
                    f"{metric} (difference {diff.mean:+.4f}, 95% CI {diff.ci_low:+.4f}.."
                    f"{diff.ci_high:+.4f})"
                )
    return differences, claims


def _members(
    student: Any, validation: ArrayDataset, inputs: ProbeInputs, device: str | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], float]:
    """Softmax outputs at T=1 and at the temperature fitted on ``validation``."""
    logits = {
        key: predict_logits(student, x, device=device)
        for key, x in (
            ("clean", inputs.clean.x),
            ("blended", inputs.blended),
            ("noise", inputs.noise),
        )
    }
    fitted = fit_temperature(predict_logits(student, validation.x, device=device), validation.y)
    raw = {key: softmax(v) for key, v in logits.items()}
    return raw, {key: softmax(v, fitted) for key, v in logits.items()}, fitted


def run_uncertainty(config: UncertaintyConfig, out_dir: str | Path) -> UncertaintyResult:
    """Train teachers and student ensembles on equal label budgets, measure calibration.

    Parameters
    ----------
    config : UncertaintyConfig
        Settings.
    out_dir : str or Path
        Output folder; ``results.json``, ``reliability.png`` and ``uncertainty.png`` go there.

    Returns
    -------
    UncertaintyResult
        One report per predictor, paired differences against ``hard_ts`` and surviving claims.
    """
    if not config.ensemble_seeds:
        raise ValueError("ensemble_seeds must list at least one seed")
    out = prepare_out_dir(out_dir)
    split = load_split(
        config.dataset, seed=config.split_seed, data_root=config.data_root, download=config.download
    )
    train_cfg = config.compression()
    pool, validation = split_validation(
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
    teacher_accs = []
    for seed in config.ensemble_seeds:
        transfer = transfer_for("low_label", pool, split, train_cfg, seed)
        teacher = fit_teacher(split, transfer.labelled(), validation, train_cfg, seed)
        teacher_accs.append(
            accuracy(predict_logits(teacher, split.test.x, device=config.device), split.test.y)
        )
        students = fit_students(teacher, transfer, split, validation, train_cfg, seed)
        for name, method in (("hard", "alone"), ("kd", train_cfg.methods()[1].name)):
            raw, scaled, fitted = _members(students[method][0], validation, inputs, config.device)
            members[name].append(raw)
            members[f"{name}_ts"].append(scaled)
            temperatures[name].append(1.0)
            temperatures[f"{name}_ts"].append(fitted)
        write_results(
            out,
            config,
            {
                "stage": f"seed {seed}",
                "teacher_accuracy": teacher_accs,
                "temperatures": temperatures,
            },
        )
    reports = [_report(p, members[p], temperatures[p], inputs, config.n_bins) for p in PREDICTORS]
    differences, claims = compare(reports)
    result = UncertaintyResult(spread(teacher_accs), reports, differences, claims)
    write_results(out, config, result)
    pooled = {p: np.concatenate([m["clean"] for m in members[p]]) for p in PREDICTORS}
    pooled_labels = np.tile(split.test.y, len(config.ensemble_seeds))
    _plot_reliability(pooled, pooled_labels, config.n_bins, out / "reliability.png")
    _plot_uncertainty(result, out / "uncertainty.png")
    return result
