"""The training recipe: one loop over a sum of loss terms, with validation-based early stopping.

Every way a model is trained in fedkd -- a teacher or a student alone on hard labels, Hinton KD,
KD plus FitNets hints, Learning without Forgetting, replay, RKD, attention matching -- is this
loop with a different list of :mod:`fedkd.distill.terms`::

    arrays = {"x": x, "labels": y, **teacher_outputs(teacher, x, ["logits"])}
    report = fit(student, arrays, [SoftTargets(0.7, temperature=4.0), CrossEntropy(0.3)],
                 FitConfig(epochs=100, patience=10), validation=Validation(val.x, val.y))

A teacher is fixed while a student learns from it, so its outputs are computed once
(:func:`teacher_outputs`) and staged beside the inputs as ``"teacher:<name>"`` fields. With a
:class:`Validation` slice the loop scores the model after every epoch, keeps the best weights and
stops after ``patience`` epochs without improvement: each method gets the budget its own
convergence asks for, not an equal fixed number of epochs.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from fedkd.distill.staging import (
    FLOAT32,
    Precision,
    Staged,
    autocast,
    check_batch_size,
    check_inputs,
    make_optimizer,
    resolve_device,
)
from fedkd.distill.terms import LossTerm, Step, teacher_key
from fedkd.progress import ProgressReporter


@dataclass
class TrainReport:
    """What a training or distillation run did.

    Attributes
    ----------
    epochs
        Epochs run.
    losses
        Mean training loss of each epoch.
    seconds
        Wall-clock duration of the run.
    device
        The device it ran on, e.g. ``"cpu"`` or ``"cuda:0"``.
    validation_scores
        Validation score after each epoch (empty without a validation slice).
    best_epoch
        The epoch (1-based) whose weights were kept; ``None`` without validation.
    """

    epochs: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    validation_scores: list[float] = field(default_factory=list)
    best_epoch: int | None = None


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings of one :func:`fit` run.

    ``epochs`` is the most epochs run; with a validation slice and ``patience`` the run stops
    after ``patience`` epochs without a better validation score and keeps the best weights.
    ``min_epoch_samples`` makes an epoch of a small set repeat it (fresh shuffles) up to that
    many samples, so that patience means a comparable number of steps for every data size.
    """

    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    seed: int = 0
    patience: int | None = None
    min_epoch_samples: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        check_batch_size(self.batch_size)
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")


@dataclass(frozen=True)
class Validation:
    """A labelled slice scored by accuracy after every epoch (higher is better).

    ``class_mask`` ``(N, classes)`` restricts each row's argmax to its allowed classes
    (task-aware evaluation); ``output`` names the student output scored.
    """

    x: np.ndarray
    y: np.ndarray
    class_mask: np.ndarray | None = None
    output: str = "logits"


def model_outputs(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Named outputs of ``model`` on ``x``: ``forward_features`` when it has one, else
    ``{"logits": model(x)}`` (or the model's own dict of outputs)."""
    forward_features = getattr(model, "forward_features", None)
    out = forward_features(x) if callable(forward_features) else model(x)
    if isinstance(out, Tensor):
        return {"logits": out}
    if not isinstance(out, dict):
        raise TypeError(f"{type(model).__name__} returned {type(out).__name__}, not a tensor/dict")
    return out


@torch.no_grad()
def predict_outputs(
    model: nn.Module,
    x: np.ndarray,
    names: Sequence[str],
    *,
    device: str | torch.device | None = None,
    batch_size: int = 512,
) -> dict[str, np.ndarray]:
    """Outputs ``names`` of ``model`` on ``x`` in eval mode, batched, as float32 arrays.

    The model's train/eval mode is restored afterwards.
    """
    array = check_inputs(x)
    check_batch_size(batch_size)
    resolved = resolve_device(device)
    staged = Staged({"x": array}, resolved)
    was_training = model.training
    model.to(resolved).eval()
    chunks: dict[str, list[Tensor]] = {name: [] for name in names}
    try:
        for batch in staged.batches(batch_size):
            outputs = model_outputs(model, batch["x"])
            for name in names:
                if name not in outputs:
                    raise KeyError(f"model has no output {name!r}; it has {sorted(outputs)}")
                chunks[name].append(outputs[name].float().cpu())
    finally:
        model.train(was_training)
    return {name: torch.cat(parts).numpy() for name, parts in chunks.items()}


def teacher_outputs(
    teacher: nn.Module,
    x: np.ndarray,
    names: Sequence[str] = ("logits",),
    *,
    device: str | torch.device | None = None,
) -> dict[str, np.ndarray]:
    """The teacher's outputs on ``x`` as ``{"teacher:<name>": array}`` fields for :func:`fit`."""
    outputs = predict_outputs(teacher, x, names, device=device)
    for name, values in outputs.items():
        if not np.all(np.isfinite(values)):
            raise ValueError(f"teacher output {name!r} contains NaN or infinite values")
    return {teacher_key(name): values for name, values in outputs.items()}


def validation_accuracy(model: nn.Module, validation: Validation, device: torch.device) -> float:
    """Accuracy of ``model`` on ``validation`` (masked argmax when it has a class mask)."""
    scores = predict_outputs(model, validation.x, [validation.output], device=device)
    logits = scores[validation.output]  # (N, classes)
    if validation.class_mask is not None:
        logits = np.where(validation.class_mask, logits, -np.inf)
    return float(np.mean(logits.argmax(axis=1) == validation.y))


def _check_terms(terms: Sequence[LossTerm], arrays: dict[str, np.ndarray]) -> None:
    if not terms:
        raise ValueError("fit needs at least one loss term")
    if "x" not in arrays:
        raise ValueError(f"fit needs the inputs as arrays['x']; got fields {sorted(arrays)}")
    missing = sorted(set().union(*(t.fields() for t in terms)) - set(arrays))
    if missing:
        raise ValueError(f"loss terms read fields {missing} that are not in {sorted(arrays)}")


def _trainable(
    model: nn.Module, terms: Sequence[LossTerm], device: torch.device
) -> Iterable[nn.Parameter]:
    params = list(model.parameters())
    for term in terms:
        for module in term.modules():
            module.to(device).train()
            params += list(module.parameters())
    return params


class _BestWeights:
    """Validation bookkeeping: the best score, its epoch and a copy of its weights."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.score = -np.inf
        self.epoch: int | None = None
        self.state: dict[str, Tensor] | None = None

    def update(self, model: nn.Module, score: float, epoch: int) -> bool:
        """Record ``score``; return True when the run should stop."""
        if score > self.score:
            self.score, self.epoch = score, epoch
            self.state = copy.deepcopy(model.state_dict())
        return self.patience is not None and epoch - (self.epoch or 0) >= self.patience


class _Loop:
    """One epoch of the recipe: seeded shuffled batches, the summed terms, one optimiser step."""

    def __init__(
        self,
        model: nn.Module,
        staged: Staged,
        terms: Sequence[LossTerm],
        config: FitConfig,
        optimizer: torch.optim.Optimizer,
        precision: Precision,
    ) -> None:
        self.model, self.staged, self.terms, self.config = model, staged, terms, config
        self.optimizer, self.precision = optimizer, precision
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision.use_scaler)
        self.generator = torch.Generator().manual_seed(config.seed)

    def epoch(self) -> tuple[float, int]:
        """Run one epoch; return the mean loss and the samples seen."""
        device = self.staged.device
        total = torch.zeros((), device=device)
        seen = 0
        for batch in self.staged.batches(
            self.config.batch_size, self.generator, min_samples=self.config.min_epoch_samples
        ):
            rows = batch["x"].shape[0]
            if rows == 1 and self.staged.num_samples > 1:
                # A lone trailing sample breaks BatchNorm in train mode on 1x1 feature maps
                # (resnet18/mobilenet on 8x8 inputs); it is seen again next epoch.
                continue
            with autocast(device, self.precision):
                outputs = model_outputs(self.model, batch["x"])
            step = Step({k: v.float() for k, v in outputs.items()}, batch)
            loss = torch.stack([term.weight * term(step) for term in self.terms]).sum()
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += loss.detach() * rows
            seen += rows
        return float(total) / max(seen, 1), seen


def fit(
    model: nn.Module,
    arrays: dict[str, np.ndarray],
    terms: Sequence[LossTerm],
    config: FitConfig,
    *,
    device: str | torch.device | None = None,
    precision: Precision = FLOAT32,
    validation: Validation | None = None,
    progress: ProgressReporter | None = None,
) -> TrainReport:
    """Train ``model`` on the weighted sum of ``terms`` over seeded shuffles of ``arrays``.

    Parameters
    ----------
    model
        Maps ``arrays["x"]`` batches to logits (or a dict of outputs; see :func:`model_outputs`).
        Moved to ``device``; left in train mode.
    arrays
        Named arrays with one row per sample: ``"x"`` (inputs), and whatever the terms read
        (``"labels"``, ``"class_mask"``, ``"teacher:<name>"``...).
    terms
        The loss terms; their learned modules (projections) are optimised with the model.
    config
        Epochs, batch size, optimiser, seed and early-stopping patience.
    device
        See :func:`resolve_device`.
    precision
        Mixed-precision policy (see :func:`fedkd.distill.staging.precision_for`).
    validation
        Scored after every epoch; the best epoch's weights are restored at the end.
    progress
        Receives one ``step`` per epoch.

    Returns
    -------
    TrainReport
    """
    _check_terms(terms, arrays)
    start = time.perf_counter()
    resolved = resolve_device(device)
    staged = Staged({"x": check_inputs(arrays["x"], "x"), **_rest(arrays)}, resolved)
    model.to(resolved).train()
    optimizer = make_optimizer(
        config.optimizer,
        _trainable(model, terms, resolved),
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    report = TrainReport(epochs=0, device=str(resolved))
    best = _BestWeights(config.patience)
    loop = _Loop(model, staged, terms, config, optimizer, precision)
    for epoch in range(1, config.epochs + 1):
        loss, seen = loop.epoch()
        report.epochs = epoch
        report.losses.append(loss)
        metrics: dict[str, float] = {}
        stop = False
        if validation is not None:
            score = validation_accuracy(model, validation, resolved)
            report.validation_scores.append(score)
            metrics["val_acc"] = score
            stop = best.update(model, score, epoch)
        if progress is not None:
            progress.step(loss=loss, samples=seen, **metrics)
        if stop:
            break
    if best.state is not None:
        model.load_state_dict(best.state)
        report.best_epoch = best.epoch
    model.train()
    report.seconds = time.perf_counter() - start
    return report


def _rest(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every field but ``"x"`` as a contiguous array (labels int64, masks bool, others float32)."""
    rest: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if name == "x":
            continue
        value = np.asarray(array)
        if value.dtype == np.bool_ or np.issubdtype(value.dtype, np.integer):
            dtype: type = np.bool_ if value.dtype == np.bool_ else np.int64
        else:
            dtype = np.float32
        rest[name] = np.ascontiguousarray(value, dtype=dtype)
    return rest
