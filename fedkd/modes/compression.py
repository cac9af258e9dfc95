"""Mode 1, compression: a large teacher distilled into a small student through a transfer set.

Hinton et al. (2015) distil on a *transfer set* -- the whole training set, or a larger unlabelled
set -- not on the few examples a student has labels for. Two settings are run per seed:

- ``hinton``: every private example is labelled and the transfer set is the training set, plus
  the public split as unlabelled inputs under the default ``transfer_set="private+public"``
  (``private``: the labelled inputs only, exactly what the student alone sees);
- ``low_label``: the students have ``low_label_size`` labels; the transfer set is the whole
  private pool (``transfer_set``: ``labelled`` keeps only the labelled inputs, ``private+public``
  adds the public split), its other rows unlabelled.

In each, a student is trained ``alone`` (hard labels of the labelled rows), with Hinton KD at each
temperature of ``temperatures`` (``(1 - alpha) KD_T + alpha CE``), and with KD plus a FitNets /
TinyBERT-style hint (a student hidden state regressed onto a teacher hidden state through a
learned projection). The teacher is retrained for every seed on all private labels. Every model
starts from the same seed's weights, has the same optimiser, batch, epoch cap and patience, and
stops early on one labelled validation slice (``validation_fraction`` of the private pool) held
out from the pool, so each method gets the budget its own convergence asks for. Reported with
seeds: accuracy, the gain over ``alone`` and the share of the teacher-student gap closed (mean ±
sample std, 95% t-interval), how soft the teacher's targets are at each temperature on its own
training rows and on test, and parameters, size, FLOPs and single-thread CPU latency (see
:mod:`fedkd.modes.latency`). Why the defaults are what they are: ``docs/compression.md``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from fedkd.data import ArrayDataset, DataSplit, load_split
from fedkd.distill.recipe import FitConfig, TrainReport, predict_outputs
from fedkd.distill.train import evaluate, resolve_device
from fedkd.models import FeatureModel, count_parameters, model_size_bytes
from fedkd.modes.common import prepare_out_dir, save_figure, write_results
from fedkd.modes.latency import LatencyReport, measure_latency
from fedkd.modes.stats import Spread, spread
from fedkd.modes.students import (
    StudentMethod,
    TeacherStudentSettings,
    TransferSet,
    make_transfer_set,
    new_model,
    split_validation,
    teacher_fields_for,
    train_student,
    train_teacher,
)

SETTINGS = ("hinton", "low_label")
MIN_GAP = 0.005  # below this teacher-alone accuracy gap the "gap closed" share is undefined


@dataclass(frozen=True)
class CompressionConfig(TeacherStudentSettings):
    """Settings of the compression mode (defaults: a few minutes on ``digits``, 2 CPU cores)."""

    teacher_model: str = field(
        default="auto", metadata={"help": "teacher registry name (auto: resnet18 on a GPU, cnn)"}
    )
    # A small CNN shares the teacher's inductive bias, so soft targets have something to teach
    # it: a 32-unit MLP on MNIST's files closed ~0-5% of the gap at any T (docs/compression.md).
    student_model: str = field(default="cnn", metadata={"help": "student registry name"})
    student_kwargs: dict[str, Any] = field(
        default_factory=lambda: {"channels": [8, 16, 16], "hidden": 32},
        metadata={"help": "student build kwargs, JSON"},
    )
    # 150 rows score a 98%-accurate model in steps of 0.7 points: ties keep the first best epoch,
    # so early stopping ended students trained alone after ~10 epochs (docs/compression.md).
    validation_fraction: float = field(
        default=0.1,
        metadata={"help": "held-out share of the private pool (at least validation_size rows)"},
    )
    settings: tuple[str, ...] = field(default=SETTINGS, metadata={"help": f"among {SETTINGS}"})
    low_label_size: int = field(default=200, metadata={"help": "labels in the low_label setting"})
    transfer_set: str = field(
        default="private+public", metadata={"help": "labelled | private | private+public"}
    )
    temperatures: tuple[float, ...] = field(
        default=(1.0, 4.0, 20.0), metadata={"help": "KD temperatures swept"}
    )
    hint_temperature: float | None = field(
        default=4.0, metadata={"help": "temperature of the KD + hint student (none: no hint)"}
    )
    hint_weight: float = field(default=1.0, metadata={"help": "weight of the hint loss"})
    hint_teacher_feature: str = field(default="fc", metadata={"help": "teacher hidden state"})
    hint_student_feature: str | None = field(
        default=None, metadata={"help": "student hidden state (none: its last one)"}
    )
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "seeds (teacher too)"})
    latency_batch_size: int = field(default=256, metadata={"help": "batch size for latency"})
    latency_repeats: int = field(default=30, metadata={"help": "timed rounds (median)"})

    def validation_rows(self, private_size: int) -> int:
        """Rows held out: ``validation_fraction`` of the pool, at least ``validation_size``."""
        return max(self.validation_size, int(self.validation_fraction * private_size))

    def methods(self) -> list[StudentMethod]:
        """``alone``, ``kd_T<t>`` per temperature and ``kd_hint_T<t>``."""
        methods = [StudentMethod("alone")]
        methods += [StudentMethod(f"kd_T{t:g}", temperature=t) for t in self.temperatures]
        if self.hint_temperature is not None:
            t = self.hint_temperature
            methods.append(StudentMethod(f"kd_hint_T{t:g}", temperature=t, hint=True))
        return methods

    def teacher_fit(self, seed: int) -> FitConfig:
        """Teacher optimisation settings."""
        return FitConfig(
            self.teacher_epochs,
            self.batch_size,
            self.teacher_lr,
            seed=seed,
            patience=self.patience,
            min_epoch_samples=self.epoch_samples,
        )

    def student_fit(self, seed: int) -> FitConfig:
        """Student optimisation settings (the most epochs; early stopping decides)."""
        return FitConfig(
            self.student_epochs,
            self.batch_size,
            self.lr,
            seed=seed,
            patience=self.patience,
            min_epoch_samples=self.epoch_samples,
        )


def as_compression(config: Any, **overrides: Any) -> CompressionConfig:
    """The :class:`CompressionConfig` a mode's config stands for: every field the two share by
    name is copied, ``overrides`` replace or add the rest."""
    shared = {
        f.name: getattr(config, f.name)
        for f in fields(CompressionConfig)
        if hasattr(config, f.name)
    }
    return CompressionConfig(**{**shared, **overrides})


@dataclass
class MethodResult:
    """One student method in one setting, over seeds."""

    setting: str
    method: str
    temperature: float | None
    accuracy: Spread
    gain_over_alone: Spread
    gap_closed: Spread | None
    best_epoch: Spread


@dataclass
class SoftTargetQuality:
    """The teacher's soft targets at one temperature on its own training rows or on test."""

    data: str  # "train" (the teacher's training rows) or "test"
    temperature: float
    accuracy: Spread
    top_probability: Spread  # mean largest probability of softmax(logits / T)
    entropy: Spread  # mean entropy (nats) of softmax(logits / T); log(10) = 2.30 is uniform


@dataclass
class Footprint:
    """Size and cost of one model."""

    name: str
    parameters: int
    size_bytes: int
    flops: int
    latency_ms: float


@dataclass
class CompressionResult:
    """Teacher accuracy, every student method per setting, and the footprints."""

    teacher_model: str  # the registry name trained ("auto" resolved)
    teacher_accuracy: Spread
    soft_targets: list[SoftTargetQuality]
    methods: list[MethodResult]
    footprints: list[Footprint]
    latency: LatencyReport
    compression_ratio: float
    speedup: float
    flop_ratio: float
    labelled: dict[str, int]
    transfer_size: dict[str, int]
    validation_rows: int
    hint_features: tuple[str, str]


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


def _check(config: CompressionConfig) -> None:
    if not config.seeds:
        raise ValueError("seeds must list at least one seed")
    unknown = [s for s in config.settings if s not in SETTINGS]
    if unknown or not config.settings:
        raise ValueError(f"unknown or no settings {unknown}; known: {', '.join(SETTINGS)}")
    if not 0.0 <= config.validation_fraction < 1.0:
        raise ValueError(
            f"validation_fraction must lie in [0, 1), got {config.validation_fraction}"
        )
    if not config.temperatures and config.hint_temperature is None:
        raise ValueError("give at least one KD temperature or a hint_temperature")


def check_hint_features(
    student: FeatureModel, teacher: FeatureModel, config: CompressionConfig
) -> tuple[str, str]:
    student_name = config.hint_student_feature or student.feature_names[-1]
    for model, name, role in (
        (student, student_name, "hint_student"),
        (teacher, config.hint_teacher_feature, "hint_teacher"),
    ):
        if name not in model.feature_names:
            raise ValueError(
                f"{role} feature {name!r} is not a feature of {type(model).__name__}; known: "
                f"{', '.join(model.feature_names)}"
            )
    return student_name, config.hint_teacher_feature


@dataclass
class _Runs:
    """Per-seed records: test accuracy and best epoch of every (setting, method)."""

    teacher: list[float] = field(default_factory=list)
    soft: dict[tuple[str, float], list[tuple[float, float, float]]] = field(default_factory=dict)
    accuracy: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    epochs: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    labelled: dict[str, int] = field(default_factory=dict)
    transfer: dict[str, int] = field(default_factory=dict)

    def add(self, key: tuple[str, str], accuracy: float, epoch: int | None) -> None:
        self.accuracy.setdefault(key, []).append(accuracy)
        self.epochs.setdefault(key, []).append(float(epoch or 0))


def resolve_teacher(name: str, device: str | None) -> str:
    """``"auto"``: the larger ``resnet18`` when training runs on a GPU, else ``cnn``."""
    if name != "auto":
        return name
    return "resnet18" if resolve_device(device).type == "cuda" else "cnn"


def fit_teacher(
    split: DataSplit,
    pool: ArrayDataset,
    validation: ArrayDataset,
    config: CompressionConfig,
    seed: int,
) -> FeatureModel:
    """The seed's teacher, trained on every label of ``pool`` (early stopping on validation)."""
    shape, classes = split.input_shape, split.num_classes
    teacher = new_model(
        resolve_teacher(config.teacher_model, config.device),
        config.teacher_kwargs,
        shape,
        classes,
        seed,
    )
    train_teacher(teacher, pool, validation, config.teacher_fit(seed), config.device)
    return teacher


def fit_students(
    teacher: FeatureModel,
    transfer: TransferSet,
    split: DataSplit,
    validation: ArrayDataset,
    config: CompressionConfig,
    seed: int,
) -> dict[str, tuple[FeatureModel, TrainReport]]:
    """Every method of ``config`` on one transfer set, each from the same initial weights."""
    shape, classes = split.input_shape, split.num_classes

    def fresh() -> FeatureModel:
        return new_model(config.student_model, config.student_kwargs, shape, classes, seed + 1)

    features = check_hint_features(fresh(), teacher, config)
    teacher_fields = teacher_fields_for(teacher, transfer, ["logits", features[1]], config.device)
    students = {}
    for method in config.methods():
        student = fresh()
        report = train_student(
            method,
            student,
            transfer,
            teacher_fields,
            fit_config=config.student_fit(seed),
            validation=validation,
            alpha=config.alpha,
            hint_weight=config.hint_weight,
            hint_features=features,
            device=config.device,
        )
        students[method.name] = (student, report)
    return students


def transfer_for(
    setting: str, pool: ArrayDataset, split: DataSplit, config: CompressionConfig, seed: int
) -> TransferSet:
    """``hinton``: all of ``pool`` labelled; ``low_label``: ``low_label_size`` labels; both
    with the unlabelled inputs ``config.transfer_set`` adds."""
    if setting == "hinton":  # every pool label; "private+public" adds unlabelled inputs
        transfer = "private+public" if config.transfer_set == "private+public" else "private"
        return make_transfer_set(
            pool, split.public, labelled_size=None, transfer=transfer, seed=seed
        )
    return make_transfer_set(
        pool,
        split.public,
        labelled_size=config.low_label_size,
        transfer=config.transfer_set,
        seed=seed,
    )


def soft_target_stats(
    logits: np.ndarray, labels: np.ndarray, temperature: float
) -> tuple[float, float, float]:
    """``(accuracy, mean top probability, mean entropy)`` of ``softmax(logits / T)``."""
    probs = torch.softmax(torch.from_numpy(logits).double() / temperature, dim=1)  # (N, K)
    entropy = -(probs * probs.clamp_min(1e-300).log()).sum(dim=1)
    accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    return accuracy, float(probs.max(dim=1).values.mean()), float(entropy.mean())


def _record_soft_targets(
    teacher: FeatureModel, data: dict[str, ArrayDataset], config: CompressionConfig, runs: _Runs
) -> None:
    """How soft the teacher's targets are at each KD temperature, on what it was trained on
    (a memorising teacher gives near one-hot targets there) and on unseen test inputs."""
    temperatures = sorted({m.temperature for m in config.methods() if m.temperature is not None})
    for name, rows in data.items():
        logits = predict_outputs(teacher, rows.x, ["logits"], device=config.device)["logits"]
        for t in temperatures:
            runs.soft.setdefault((name, t), []).append(soft_target_stats(logits, rows.y, t))


def _run_seed(
    seed: int,
    split: DataSplit,
    pool: ArrayDataset,
    validation: ArrayDataset,
    config: CompressionConfig,
    runs: _Runs,
) -> tuple[FeatureModel, FeatureModel]:
    teacher = fit_teacher(split, pool, validation, config, seed)
    runs.teacher.append(evaluate(teacher, split.test, device=config.device).accuracy)
    _record_soft_targets(teacher, {"train": pool, "test": split.test}, config, runs)
    for setting in config.settings:
        transfer = transfer_for(setting, pool, split, config, seed)
        runs.labelled[setting], runs.transfer[setting] = transfer.num_labelled, len(transfer.x)
        students = fit_students(teacher, transfer, split, validation, config, seed)
        for name, (student, report) in students.items():
            accuracy = evaluate(student, split.test, device=config.device).accuracy
            runs.add((setting, name), accuracy, report.best_epoch)
    return teacher, student


def _gap_spread(runs: _Runs, key: tuple[str, str], alone: list[float]) -> Spread | None:
    shares = [
        gap_closed(m, a, t) for m, a, t in zip(runs.accuracy[key], alone, runs.teacher, strict=True)
    ]
    valid = [s for s in shares if s is not None]
    return spread(valid) if len(valid) == len(shares) else None


def _method_results(runs: _Runs, config: CompressionConfig) -> list[MethodResult]:
    results = []
    for setting in config.settings:
        alone = runs.accuracy[(setting, "alone")]
        for method in config.methods():
            key = (setting, method.name)
            accuracies = runs.accuracy[key]
            results.append(
                MethodResult(
                    setting=setting,
                    method=method.name,
                    temperature=method.temperature,
                    accuracy=spread(accuracies),
                    gain_over_alone=spread([m - a for m, a in zip(accuracies, alone, strict=True)]),
                    gap_closed=None if method.name == "alone" else _gap_spread(runs, key, alone),
                    best_epoch=spread(runs.epochs[key]),
                )
            )
    return results


def _soft_target_results(runs: _Runs) -> list[SoftTargetQuality]:
    return [
        SoftTargetQuality(data, t, *(spread([v[i] for v in values]) for i in range(3)))
        for (data, t), values in runs.soft.items()
    ]


def _footprints(
    teacher: FeatureModel, student: FeatureModel, split: DataSplit, config: CompressionConfig
) -> tuple[list[Footprint], LatencyReport]:
    reps = -(-config.latency_batch_size // len(split.test))  # repeat small test sets
    batch = torch.from_numpy(np.concatenate([split.test.x] * reps)[: config.latency_batch_size])
    latency = measure_latency(
        {"teacher": teacher, "student": student}, batch, repeats=config.latency_repeats
    )
    prints = [
        Footprint(
            name, count_parameters(m), model_size_bytes(m), latency.flops[name], latency.ms[name]
        )
        for name, m in (("teacher", teacher), ("student", student))
    ]
    return prints, latency


def _plot(result: CompressionResult, out_dir: Path) -> None:
    fig, axes = plt.subplots(
        1, len({m.setting for m in result.methods}), figsize=(11, 4), squeeze=False
    )
    for ax, setting in zip(axes[0], dict.fromkeys(m.setting for m in result.methods), strict=True):
        rows = [m for m in result.methods if m.setting == setting]
        xs = np.arange(len(rows))
        ax.bar(
            xs,
            [m.accuracy.mean for m in rows],
            yerr=[0.0 if m.accuracy.n < 2 else m.accuracy.std for m in rows],
            alpha=0.7,
        )
        for x, m in zip(xs, rows, strict=True):
            ax.scatter([x] * m.accuracy.n, m.accuracy.values, color="black", s=10, zorder=3)
        ax.axhline(result.teacher_accuracy.mean, color="gray", ls="--", label="teacher")
        ax.set_xticks(xs, [m.method for m in rows], rotation=30, fontsize=8)
        low = min(min(m.accuracy.values) for m in rows)
        ax.set_ylim(max(0.0, low - 0.05), 1.0)
        ax.set_title(f"{setting} (dots: seeds)")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=8)
    save_figure(fig, out_dir / "accuracy.png")


def run_compression(config: CompressionConfig, out_dir: str | Path) -> CompressionResult:
    """Train teacher and students per seed and setting, write ``results.json`` and plots.

    Parameters
    ----------
    config : CompressionConfig
        Settings.
    out_dir : str or Path
        Output folder; ``results.json`` and ``accuracy.png`` go there.

    Returns
    -------
    CompressionResult
        Accuracy spreads, gains and gap shares per setting and method; footprints.
    """
    _check(config)
    out = prepare_out_dir(out_dir)
    split = load_split(
        config.dataset, seed=config.split_seed, data_root=config.data_root, download=config.download
    )
    pool, validation = split_validation(
        split.private, config.validation_rows(len(split.private)), seed=config.split_seed
    )
    new_model(
        config.student_model, config.student_kwargs, split.input_shape, split.num_classes, 0
    )  # fail fast on a bad student name or kwargs, before the teacher is trained
    runs = _Runs()
    for seed in config.seeds:
        teacher, student = _run_seed(seed, split, pool, validation, config, runs)
        write_results(
            out,
            config,
            {
                "stage": f"seed {seed}",
                "teacher": runs.teacher,
                "students": {f"{s}/{m}": v for (s, m), v in runs.accuracy.items()},
            },
        )
    prints, latency = _footprints(teacher, student, split, config)
    result = CompressionResult(
        teacher_model=resolve_teacher(config.teacher_model, config.device),
        teacher_accuracy=spread(runs.teacher),
        soft_targets=_soft_target_results(runs),
        methods=_method_results(runs, config),
        footprints=prints,
        latency=latency,
        compression_ratio=prints[0].parameters / prints[1].parameters,
        speedup=latency.speedup("teacher", "student"),
        flop_ratio=latency.flop_ratio("teacher", "student"),
        labelled=runs.labelled,
        transfer_size=runs.transfer,
        validation_rows=len(validation),
        hint_features=check_hint_features(student, teacher, config),
    )
    write_results(out, config, result)
    _plot(result, out)
    return result
