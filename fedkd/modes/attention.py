"""Attention to fixed context: distil a dynamic-attention encoder into a fixed-context student.

The question (does a student with one learned context vector keep the gist of the teacher's
attention at a large speed-up?) needs a task where attention matters: the image rows sit at a
random offset among noise tokens (:func:`~fedkd.modes.sequence_models.image_rows_to_sequences`),
so a model must find them. The teacher (:class:`DynamicAttentionEncoder`) learns from every
private label; each student (:class:`FixedContextEncoder`) has ``label_budget`` labels and the
whole private pool as an unlabelled transfer set (``None``: every label), trained three ways
from the same initial weights over the shared recipe (:mod:`fedkd.distill.recipe`):

- ``alone``: hard labels only;
- ``kd``: Hinton KD on the teacher's outputs (``(1 - alpha) KD_T + alpha CE``);
- ``kd_attention``: plus ``attention_weight * KL(teacher pooling || student pooling)``, the
  teacher's head-averaged pooling attention matched by the student's context pooling.

Every model stops early on a labelled validation slice (an epoch of the few labelled sequences
is repeated up to ``epoch_samples``, so patience means as many steps as for the full set).
Reported with seeds (teacher retrained per seed): accuracy, the gain over ``alone``, the accuracy
kept, and the speed-up as the median of interleaved single-thread CPU timings with an
identical-copy control, beside the FLOP ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from fedkd.data import DataSplit, load_split
from fedkd.distill.recipe import FitConfig, fit, teacher_outputs
from fedkd.distill.terms import CrossEntropy, DistributionMatch, LossTerm, kd_mix
from fedkd.distill.train import evaluate
from fedkd.models import count_parameters
from fedkd.modes.common import prepare_out_dir, save_figure, seed_everything, write_results
from fedkd.modes.latency import LatencyReport, measure_latency
from fedkd.modes.sequence_models import (
    STUDENT_POOLINGS,
    DynamicAttentionEncoder,
    FixedContextEncoder,
    SequenceData,
    image_rows_to_sequences,
)
from fedkd.modes.stats import Spread, spread
from fedkd.modes.students import as_validation, make_transfer_set, split_validation

METHODS = ("alone", "kd", "kd_attention")


@dataclass(frozen=True)
class AttentionConfig:
    """Settings of the attention-to-fixed-context mode (defaults: a few minutes on 2 cores)."""

    dataset: str = field(default="digits", metadata={"help": "dataset name for load_split"})
    data_root: str | None = field(default=None, metadata={"help": "data folder (idx/torchvision)"})
    split_seed: int = field(default=0, metadata={"help": "seed of the split and the sequences"})
    max_shift: int = field(default=8, metadata={"help": "extra tokens; random offset range"})
    noise: float = field(default=0.5, metadata={"help": "other tokens ~ U[0, noise]"})
    d_model: int = field(default=64, metadata={"help": "token embedding width"})
    num_heads: int = field(default=4, metadata={"help": "attention heads of the teacher"})
    student_pooling: str = field(default="context", metadata={"help": "context | static"})
    label_budget: int | None = field(
        default=200, metadata={"help": "labels the students see (none: all)"}
    )
    temperature: float = field(default=4.0, metadata={"help": "distillation temperature"})
    alpha: float = field(default=0.1, metadata={"help": "CE weight in the KD loss"})
    attention_weight: float = field(default=1.0, metadata={"help": "attention-matching weight"})
    validation_size: int = field(default=150, metadata={"help": "held-out labelled slice"})
    epochs: int = field(default=200, metadata={"help": "most epochs of every model"})
    patience: int = field(default=15, metadata={"help": "epochs without a better val. score"})
    epoch_samples: int = field(
        default=2000, metadata={"help": "a smaller set repeats to this many samples per epoch"}
    )
    batch_size: int = 64
    lr: float = 2e-3
    timing_batch_size: int = field(default=256, metadata={"help": "batch size for latency"})
    timing_repeats: int = field(default=30, metadata={"help": "timed rounds (median)"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "seeds (teacher too)"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or auto"})


@dataclass
class AttentionResult:
    """Accuracy spreads, gains over ``alone``, and the latency / FLOPs of teacher and student.

    ``accuracy_kept`` is the per-seed ``kd_attention / teacher`` accuracy ratio.
    """

    teacher_accuracy: Spread
    students: dict[str, Spread]
    gain_over_alone: dict[str, Spread]
    accuracy_kept: Spread
    attention_agreement: dict[str, Spread]
    latency: LatencyReport
    speedup: float
    flop_ratio: float
    parameters: dict[str, int]
    sequence_length: int
    token_features: int


@dataclass(frozen=True)
class _Sequences:
    train: SequenceData
    validation: SequenceData
    test: SequenceData


def _sequences(split: DataSplit, config: AttentionConfig) -> _Sequences:
    pool, validation = split_validation(
        split.private, config.validation_size, seed=config.split_seed
    )
    make = [
        image_rows_to_sequences(
            d, max_shift=config.max_shift, seed=config.split_seed + i, noise=config.noise
        )
        for i, d in enumerate((pool, validation, split.test))
    ]
    return _Sequences(*make)


def _terms(method: str, config: AttentionConfig) -> list[LossTerm]:
    if method == "alone":
        return [CrossEntropy()]
    terms = kd_mix(temperature=config.temperature, hard_label_weight=config.alpha)
    if method == "kd_attention":
        terms.append(DistributionMatch(config.attention_weight))
    return terms


def _fit(
    model: nn.Module,
    arrays: dict[str, np.ndarray],
    terms: list[LossTerm],
    data: _Sequences,
    config: AttentionConfig,
    seed: int,
) -> None:
    fit_config = FitConfig(
        config.epochs,
        config.batch_size,
        config.lr,
        seed=seed,
        patience=config.patience,
        min_epoch_samples=config.epoch_samples,
    )
    fit(
        model,
        arrays,
        terms,
        fit_config,
        device=config.device,
        validation=as_validation(data.validation.data),
    )
    model.eval()


def pooling_agreement(teacher: nn.Module, student: nn.Module, x: np.ndarray) -> float:
    """Mean per-sequence cosine similarity of teacher and student pooling weights on ``x``."""
    with torch.no_grad():
        batch = torch.from_numpy(x)
        t = teacher.cpu().eval().pooling_weights(batch)  # type: ignore[operator]
        s = student.cpu().eval().pooling_weights(batch)  # type: ignore[operator]
    return float(torch.nn.functional.cosine_similarity(t, s, dim=1).mean())


def _run_seed(
    seed: int, data: _Sequences, dims: dict[str, int], config: AttentionConfig
) -> tuple[dict[str, float], dict[str, float], dict[str, nn.Module]]:
    seed_everything(seed)
    teacher = DynamicAttentionEncoder(num_heads=config.num_heads, **dims)
    train = data.train.data
    _fit(teacher, {"x": train.x, "labels": train.y}, [CrossEntropy()], data, config, seed)
    transfer = make_transfer_set(
        train, train, labelled_size=config.label_budget, transfer="private", seed=seed
    )
    arrays = {
        "x": transfer.x,
        "labels": transfer.labels,
        **teacher_outputs(teacher, transfer.x, ["logits", "pooling"], device=config.device),
    }
    models: dict[str, nn.Module] = {"teacher": teacher}
    accuracy = {"teacher": evaluate(teacher, data.test.data, device=config.device).accuracy}
    agreement = {}
    for method in METHODS:
        seed_everything(seed + 1)  # every student starts from the same weights
        student = FixedContextEncoder(pooling=config.student_pooling, **dims)
        labelled = transfer.labelled()
        method_arrays = {"x": labelled.x, "labels": labelled.y} if method == "alone" else arrays
        _fit(student, method_arrays, _terms(method, config), data, config, seed)
        accuracy[method] = evaluate(student, data.test.data, device=config.device).accuracy
        agreement[method] = pooling_agreement(teacher, student, data.test.data.x[:512])
        models[method] = student
    return accuracy, agreement, models


def _plot_pooling(
    teacher: nn.Module, student: nn.Module, test: SequenceData, height: int, path: Path
) -> None:
    count = min(8, len(test.data))
    x = torch.from_numpy(test.data.x[:count])
    with torch.no_grad():
        maps = [
            m.cpu().eval().pooling_weights(x).numpy()  # type: ignore[operator]
            for m in (teacher, student)
        ]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, weights, title in zip(
        axes, maps, ("teacher (dynamic)", "student (fixed context)"), strict=True
    ):
        ax.imshow(weights, aspect="auto", cmap="viridis")
        for row, offset in enumerate(test.offsets[:count]):
            ax.plot([offset - 0.5, offset + height - 0.5], [row, row], color="red", lw=1)
        ax.set_title(title)
        ax.set_xlabel("token position (red: image rows)")
    axes[0].set_ylabel("test sequence")
    save_figure(fig, path)


def run_attention(config: AttentionConfig, out_dir: str | Path) -> AttentionResult:
    """Train the teacher and the three students per seed; measure accuracy and speed.

    Parameters
    ----------
    config : AttentionConfig
        Settings.
    out_dir : str or Path
        Folder for ``results.json`` and ``pooling_weights.png``.

    Returns
    -------
    AttentionResult
    """
    if config.student_pooling not in STUDENT_POOLINGS:
        raise ValueError(
            f"unknown student_pooling {config.student_pooling!r}; known: {STUDENT_POOLINGS}"
        )
    if not config.seeds:
        raise ValueError("seeds must list at least one seed")
    out = prepare_out_dir(out_dir)
    split = load_split(config.dataset, seed=config.split_seed, data_root=config.data_root)
    data = _sequences(split, config)
    _, _, seq_len, features = data.train.data.x.shape
    dims = {
        "seq_len": seq_len,
        "features": features,
        "d_model": config.d_model,
        "num_classes": split.num_classes,
    }
    runs: dict[str, list[float]] = {}
    agreements: dict[str, list[float]] = {}
    for seed in config.seeds:
        accuracy, agreement, models = _run_seed(seed, data, dims, config)
        for name, value in accuracy.items():
            runs.setdefault(name, []).append(value)
        for name, value in agreement.items():
            agreements.setdefault(name, []).append(value)
        write_results(out, config, {"stage": f"seed {seed}", "accuracy": runs})
    batch = torch.from_numpy(data.test.data.x[: config.timing_batch_size])
    latency = measure_latency(
        {"teacher": models["teacher"], "student": models["kd_attention"]},
        batch,
        repeats=config.timing_repeats,
    )
    result = AttentionResult(
        teacher_accuracy=spread(runs["teacher"]),
        students={m: spread(runs[m]) for m in METHODS},
        gain_over_alone={
            m: spread(np.subtract(runs[m], runs["alone"]).tolist()) for m in METHODS[1:]
        },
        accuracy_kept=spread(np.divide(runs["kd_attention"], runs["teacher"]).tolist()),
        attention_agreement={m: spread(v) for m, v in agreements.items()},
        latency=latency,
        speedup=latency.speedup("teacher", "student"),
        flop_ratio=latency.flop_ratio("teacher", "student"),
        parameters={n: count_parameters(models[n]) for n in ("teacher", "kd_attention")},
        sequence_length=seq_len,
        token_features=features,
    )
    write_results(out, config, result)
    _plot_pooling(
        models["teacher"],
        models["kd_attention"],
        data.test,
        split.input_shape[1],
        out / "pooling_weights.png",
    )
    return result
