"""Attribution alignment: do students distilled at temperature T explain like their teacher?

A teacher (registry model, default ``cnn``) is trained on hard labels; one student per
temperature is distilled from it (pure ``kd_loss`` by default) from the same initial weights, and
one student is trained alone on hard labels as the reference. For every model and test image the
attribution of the true class logit is computed two ways:

- gradient saliency ``|d logit_y / d x|`` (max over channels, Simonyan et al. 2014);
- integrated gradients from a zero baseline (Sundararajan et al. 2017; midpoint Riemann sum over
  ``ig_steps`` points, summed over channels, signed).

The mean cosine similarity between teacher and student maps, per temperature and method, is
plotted against T; an image grid shows example maps. Every figure is a spread over ``seeds``
(teacher retrained per seed; mean ± sample std, 95% t-interval). Teacher and students are trained
by the shared recipe (``train_supervised`` / ``distill`` are :func:`fedkd.distill.recipe.fit`).

The cnn models here default to ``norm="none"`` (conv layers with bias), not the registry's
GroupNorm: a GroupNorm cnn has bias-free convs in front of each norm, so it is invariant to the
scale of its input, ``f(a x) ~= f(x)`` for all but tiny ``a``; the straight path from a zero
baseline is then flat except next to 0, and integrated gradients miss almost all of
``f(x) - f(0)`` (completeness error ~1, measured and reported as ``ig_completeness_error``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from fedkd.data import DataSplit, load_split
from fedkd.distill import distill, evaluate, resolve_device, train_supervised
from fedkd.models import build_model
from fedkd.modes.common import save_figure, seed_everything, write_results
from fedkd.modes.stats import Spread, spread

COMPLETENESS_WARNING = 0.1  # warn when IG misses more than this share of f(x) - f(baseline)


@dataclass(frozen=True)
class AttributionConfig:
    """Settings of the attribution-alignment mode (defaults: ~1-2 minutes on 2 CPU cores)."""

    dataset: str = field(default="digits", metadata={"help": "dataset name for load_split"})
    data_root: str | None = field(default=None, metadata={"help": "data folder (idx/torchvision)"})
    teacher_model: str = field(default="cnn", metadata={"help": "registry model of the teacher"})
    student_model: str = field(default="cnn", metadata={"help": "registry model of students"})
    student_channels: tuple[int, ...] = field(
        default=(8, 16, 32), metadata={"help": "conv widths of a cnn student"}
    )
    student_hidden: int = field(default=32, metadata={"help": "hidden width of a cnn student"})
    cnn_norm: str = field(
        default="none", metadata={"help": "norm of cnn teacher/students: none | batch | group"}
    )
    temperatures: tuple[float, ...] = field(
        default=(1.0, 2.0, 4.0, 8.0), metadata={"help": "distillation temperatures"}
    )
    epochs: int = field(default=30, metadata={"help": "epochs of teacher and every student"})
    batch_size: int = 64
    lr: float = 2e-3
    hard_label_weight: float = field(default=0.0, metadata={"help": "CE weight in the KD loss"})
    ig_steps: int = field(default=30, metadata={"help": "integrated-gradients steps"})
    num_explain: int = field(default=300, metadata={"help": "test images explained"})
    num_examples: int = field(default=4, metadata={"help": "rows of the example grid"})
    split_seed: int = field(default=0, metadata={"help": "seed of the data split"})
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata={"help": "seeds (teacher too)"})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or auto"})


@dataclass(frozen=True)
class StudentAlignment:
    """One student's accuracy and its attribution similarity to the teacher.

    ``temperature`` is ``None`` for the student trained alone on hard labels. Per seed, a
    similarity is the mean over the explained test images of the per-image cosine similarity of
    teacher and student maps; the spreads are over seeds.
    """

    temperature: float | None
    accuracy: Spread
    saliency_cosine: Spread
    ig_cosine: Spread


@dataclass(frozen=True)
class AttributionResult:
    """What :func:`run_attribution` measured.

    ``ig_completeness_error`` is the teacher's ``sum_i |sum(IG_i) - (f(x_i) - f(0))|`` over
    ``sum_i |f(x_i) - f(0)|``: a check that the Riemann sum is fine enough (0 is exact).
    """

    teacher_accuracy: Spread
    students: list[StudentAlignment]
    alone: StudentAlignment
    num_explained: int
    ig_completeness_error: float
    out_dir: str


def _target_logit_grad(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Gradient of the summed target logits with respect to (a detached copy of) ``x``."""
    inputs = x.detach().requires_grad_(True)
    selected = model(inputs).gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(selected, inputs)
    return grad


def gradient_saliency(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Gradient saliency ``max_c |d logit_target / d x|``.

    Parameters
    ----------
    model : nn.Module
        Classifier, already in eval mode.
    x : Tensor
        Inputs ``(N, C, H, W)``.
    target : Tensor
        Class per input ``(N,)`` (int64).

    Returns
    -------
    Tensor
        Maps ``(N, H, W)``, non-negative.
    """
    return _target_logit_grad(model, x, target).abs().amax(dim=1)  # (N, H, W)


def integrated_gradients(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    steps: int = 30,
    baseline: Tensor | None = None,
) -> Tensor:
    """Integrated gradients of the target logit along the straight path from ``baseline`` to x.

    Parameters
    ----------
    model : nn.Module
        Classifier, already in eval mode.
    x : Tensor
        Inputs ``(N, C, H, W)``.
    target : Tensor
        Class per input ``(N,)`` (int64).
    steps : int
        Points of the midpoint Riemann sum.
    baseline : Tensor, optional
        Reference input, shape of ``x``; zeros (a black image) when omitted.

    Returns
    -------
    Tensor
        Attributions ``(N, C, H, W)``; they sum to about ``f(x) - f(baseline)`` per input.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    reference = torch.zeros_like(x) if baseline is None else baseline
    delta = x - reference
    total = torch.zeros_like(x)
    for alpha in (torch.arange(steps, dtype=x.dtype) + 0.5) / steps:
        total += _target_logit_grad(model, reference + alpha * delta, target)
    return delta * total / steps


def cosine_similarity_maps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample cosine similarity of two stacks of maps ``(N, ...)``; zero maps give 0."""
    flat_a = a.reshape(len(a), -1).astype(np.float64)
    flat_b = b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(flat_a, axis=1) * np.linalg.norm(flat_b, axis=1)
    dots = (flat_a * flat_b).sum(axis=1)
    return np.where(norms > 0, dots / np.maximum(norms, 1e-30), 0.0)


@dataclass(frozen=True)
class _Maps:
    saliency: np.ndarray  # (N, H, W)
    ig: np.ndarray  # (N, H, W), summed over channels
    ig_completeness_error: float


def _attribution_maps(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    steps: int,
    device: torch.device,
    chunk: int = 256,
) -> _Maps:
    model.to(device).eval()
    saliency, ig, residuals, gaps = [], [], [], []
    for start in range(0, len(x), chunk):
        xb = torch.from_numpy(x[start : start + chunk]).to(device)
        yb = torch.from_numpy(y[start : start + chunk]).to(device)
        saliency.append(gradient_saliency(model, xb, yb).cpu().numpy())
        attributions = integrated_gradients(model, xb, yb, steps=steps)
        ig.append(attributions.sum(dim=1).detach().cpu().numpy())
        with torch.no_grad():
            gap = (model(xb) - model(torch.zeros_like(xb))).gather(1, yb[:, None]).squeeze(1)
        summed = attributions.flatten(1).sum(dim=1)
        residuals.append(float((summed - gap).abs().sum()))
        gaps.append(float(gap.abs().sum()))
    error = sum(residuals) / max(sum(gaps), 1e-12)
    return _Maps(np.concatenate(saliency), np.concatenate(ig), error)


def _alignment(teacher: _Maps, student: _Maps) -> tuple[float, float]:
    """Mean per-image cosine similarity of saliency and of IG maps."""
    sal = cosine_similarity_maps(teacher.saliency, student.saliency)
    ig = cosine_similarity_maps(teacher.ig, student.ig)
    return float(sal.mean()), float(ig.mean())


def _summarise(
    temperature: float | None, runs: list[tuple[float, float, float]]
) -> StudentAlignment:
    """``runs``: per seed (accuracy, saliency cosine, IG cosine)."""
    return StudentAlignment(
        temperature,
        spread([r[0] for r in runs]),
        spread([r[1] for r in runs]),
        spread([r[2] for r in runs]),
    )


def _plot_similarity(students: list[StudentAlignment], alone: StudentAlignment, path: Path) -> None:
    temps = [float(s.temperature or 0.0) for s in students]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key, label, colour in (
        ("saliency_cosine", "saliency", "C0"),
        ("ig_cosine", "integrated gradients", "C1"),
    ):
        ax.plot(
            temps,
            [getattr(s, key).mean for s in students],
            marker="o",
            color=colour,
            label=f"{label} (KD)",
        )
        ax.axhline(
            getattr(alone, key).mean, color=colour, ls="--", lw=1, label=f"{label} (trained alone)"
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(temps, [f"{t:g}" for t in temps])
    ax.set_xlabel("distillation temperature T")
    ax.set_ylabel("mean cosine similarity to teacher")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _plot_grid(
    x: np.ndarray, teacher: _Maps, students: list[_Maps], temps: list[float], count: int, path: Path
) -> None:
    columns = ["input", "teacher"] + [f"T={t:g}" for t in temps]
    rows = 2 * count
    fig, axes = plt.subplots(
        rows, len(columns), figsize=(1.3 * len(columns), 1.3 * rows), squeeze=False
    )
    for i in range(count):
        image = x[i].transpose(1, 2, 0)  # (H, W, C)
        for r, method in enumerate(("saliency", "ig")):
            row = axes[2 * i + r]
            row[0].imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray")
            maps = [getattr(teacher, method)[i]] + [getattr(s, method)[i] for s in students]
            for ax, m in zip(row[1:], maps, strict=True):
                ax.imshow(
                    m,
                    cmap="hot" if method == "saliency" else "bwr",
                    **({} if method == "saliency" else _symmetric(m)),
                )
            row[0].set_ylabel(method if method == "saliency" else "IG", fontsize=7)
    for ax, title in zip(axes[0], columns, strict=True):
        ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(fig, path)


def _symmetric(m: np.ndarray) -> dict[str, float]:
    bound = float(np.abs(m).max()) or 1.0
    return {"vmin": -bound, "vmax": bound}


def _kwargs(config: AttributionConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    teacher_kwargs: dict[str, Any] = {}
    if config.teacher_model == "cnn":
        teacher_kwargs = {"norm": config.cnn_norm}
    student_kwargs: dict[str, Any] = {}
    if config.student_model == "cnn":
        student_kwargs = {
            "channels": config.student_channels,
            "hidden": config.student_hidden,
            "norm": config.cnn_norm,
        }
    return teacher_kwargs, student_kwargs


@dataclass
class _SeedRun:
    teacher_accuracy: float
    completeness_error: float
    alone: tuple[float, float, float]
    students: list[tuple[float, float, float]]
    teacher_maps: _Maps
    student_maps: list[_Maps]


def _run_seed(config: AttributionConfig, split: DataSplit, seed: int) -> _SeedRun:
    device = resolve_device(config.device)
    explain = split.test.subset(np.arange(min(config.num_explain, len(split.test))))
    teacher_kwargs, student_kwargs = _kwargs(config)
    shape, classes = split.input_shape, split.num_classes
    budget: dict[str, Any] = {
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "device": device,
        "seed": seed,
    }
    seed_everything(seed)
    teacher = build_model(
        config.teacher_model, input_shape=shape, num_classes=classes, **teacher_kwargs
    )
    train_supervised(teacher, split.private, **budget)
    teacher_maps = _attribution_maps(
        teacher, explain.x, explain.y, steps=config.ig_steps, device=device
    )

    def measure(student: nn.Module) -> tuple[tuple[float, float, float], _Maps]:
        maps = _attribution_maps(
            student, explain.x, explain.y, steps=config.ig_steps, device=device
        )
        accuracy = evaluate(student, split.test, device=device).accuracy
        return (accuracy, *_alignment(teacher_maps, maps)), maps

    def new_student() -> nn.Module:
        seed_everything(seed + 1)  # every student starts from the same weights
        return build_model(
            config.student_model, input_shape=shape, num_classes=classes, **student_kwargs
        )

    alone_model = new_student()
    train_supervised(alone_model, split.private, **budget)
    alone, _ = measure(alone_model)
    students, maps = [], []
    for temperature in config.temperatures:
        student = new_student()
        distill(
            student,
            split.private.x,
            teacher_model=teacher,
            temperature=temperature,
            labels=split.private.y,
            hard_label_weight=config.hard_label_weight,
            **budget,
        )
        values, student_maps = measure(student)
        students.append(values)
        maps.append(student_maps)
    return _SeedRun(
        evaluate(teacher, split.test, device=device).accuracy,
        teacher_maps.ig_completeness_error,
        alone,
        students,
        teacher_maps,
        maps,
    )


def run_attribution(config: AttributionConfig, out_dir: str | Path) -> AttributionResult:
    """Train teacher and students per seed, compare their attribution maps per temperature.

    Parameters
    ----------
    config : AttributionConfig
        Settings.
    out_dir : str or Path
        Folder for ``results.json``, ``similarity_vs_temperature.png`` and
        ``attribution_maps.png``.

    Returns
    -------
    AttributionResult
        Teacher accuracy, per-temperature student alignment and the alone-trained reference.
    """
    if not config.temperatures or min(config.temperatures) <= 0:
        raise ValueError(
            f"temperatures must be one or more positive values; got {config.temperatures}"
        )
    if not config.seeds:
        raise ValueError("seeds must list at least one seed")
    out = Path(out_dir)
    split = load_split(config.dataset, seed=config.split_seed, data_root=config.data_root)
    runs = []
    for seed in config.seeds:
        runs.append(_run_seed(config, split, seed))
        if runs[-1].completeness_error > COMPLETENESS_WARNING:
            warnings.warn(
                f"integrated gradients miss {runs[-1].completeness_error:.0%} of "
                "f(x) - f(0) on the teacher: raise ig_steps, or use a model that is not "
                "invariant to the input's scale (a cnn with GroupNorm and no conv bias is; "
                "cnn_norm='none')",
                stacklevel=2,
            )
        write_results(
            out,
            config,
            {"stage": f"seed {seed}", "teacher_accuracy": [r.teacher_accuracy for r in runs]},
        )
    students = [
        _summarise(t, [r.students[i] for r in runs]) for i, t in enumerate(config.temperatures)
    ]
    num_explained = len(runs[0].teacher_maps.saliency)
    result = AttributionResult(
        spread([r.teacher_accuracy for r in runs]),
        students,
        _summarise(None, [r.alone for r in runs]),
        num_explained,
        max(r.completeness_error for r in runs),
        str(out),
    )
    write_results(out, config, result)
    _plot_similarity(students, result.alone, out / "similarity_vs_temperature.png")
    explain_x = split.test.x[:num_explained]
    _plot_grid(
        explain_x,
        runs[-1].teacher_maps,
        runs[-1].student_maps,
        list(config.temperatures),
        min(config.num_examples, num_explained),
        out / "attribution_maps.png",
    )
    return result
