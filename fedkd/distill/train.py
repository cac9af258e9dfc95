"""Training loops: supervised training, distillation, evaluation and batched prediction.

Inputs are numpy arrays: ``x`` float32 ``(N, C, H, W)`` and labels int64 ``(N,)``. On the CPU the
arrays are wrapped without copying. On CUDA the whole set is moved to the device once when it
fits comfortably in free memory; otherwise each batch goes through pinned memory with a
non-blocking copy. Distillation on CUDA runs under ``torch.autocast`` (bf16 where supported, else
fp16 with a gradient scaler); the losses themselves are computed in float32.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedkd.distill.losses import check_temperature, kd_loss
from fedkd.progress import ProgressReporter

if TYPE_CHECKING:
    from fedkd.data import ArrayDataset

# Stage the whole set on the GPU when it takes at most this fraction of the free memory.
_DEVICE_FRACTION = 0.25


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Pick the torch device to run on.

    Parameters
    ----------
    device
        ``None`` or ``"auto"``: CUDA when available, else CPU. Otherwise any torch device
        string (``"cpu"``, ``"cuda"``, ``"cuda:1"``) or a ``torch.device``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        When the string is not a device, or CUDA is requested but not available.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"unknown device {device!r}; use None, 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return resolved


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
    """

    epochs: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"


@dataclass
class EvalReport:
    """Accuracy and mean cross-entropy of a model on labelled data."""

    accuracy: float
    loss: float
    num_samples: int


# --------------------------------------------------------------------------- input staging


def _check_inputs(x: np.ndarray, name: str = "x") -> np.ndarray:
    array = np.asarray(x)
    if array.ndim < 2:
        raise ValueError(f"{name} must have shape (N, C, H, W) (or (N, ...)), got {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one sample")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_labels(labels: np.ndarray, num_samples: int, name: str = "labels") -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != (num_samples,):
        raise ValueError(f"{name} must have shape ({num_samples},), got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array (int64), got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.int64)


class _Staged:
    """Arrays held where batches are cheapest to take: on the device, or pinned on the host."""

    def __init__(self, arrays: list[np.ndarray], device: torch.device) -> None:
        self.device = device
        self.num_samples = int(arrays[0].shape[0])
        with warnings.catch_warnings():  # read-only arrays are fine: batches are only read
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            host = [torch.from_numpy(array) for array in arrays]
        nbytes = sum(array.nbytes for array in arrays)
        self.on_device = device.type != "cuda" or nbytes <= _DEVICE_FRACTION * _free_memory(device)
        self.tensors = [t.to(device) for t in host] if self.on_device else host

    def batch(self, index: Tensor) -> list[Tensor]:
        """Rows ``index`` (a CPU int64 tensor) of every array, on the device."""
        if self.on_device:
            device_index = index.to(self.device, non_blocking=True)
            return [t[device_index] for t in self.tensors]
        return [t[index].pin_memory().to(self.device, non_blocking=True) for t in self.tensors]

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[list[Tensor]]:
        """Every sample once, in batches; shuffled with ``generator`` when given."""
        if generator is None:
            order = torch.arange(self.num_samples)
        else:
            order = torch.randperm(self.num_samples, generator=generator)
        for start in range(0, self.num_samples, batch_size):
            yield self.batch(order[start : start + batch_size])


def _free_memory(device: torch.device) -> int:
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


def _check_batch_size(batch_size: int) -> None:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


# --------------------------------------------------------------------------- the training loop


@dataclass(frozen=True)
class _Precision:
    autocast_dtype: torch.dtype | None  # None: full float32
    use_scaler: bool


def _precision(device: torch.device, amp: bool | None) -> _Precision:
    if device.type != "cuda":
        if amp:
            warnings.warn("amp=True has effect on CUDA only; running in float32", stacklevel=3)
        return _Precision(None, use_scaler=False)
    if amp is False:
        return _Precision(None, use_scaler=False)
    if torch.cuda.is_bf16_supported():
        return _Precision(torch.bfloat16, use_scaler=False)
    return _Precision(torch.float16, use_scaler=True)


def _autocast(
    device: torch.device, precision: _Precision
) -> torch.autocast | contextlib.nullcontext[None]:
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision.autocast_dtype)


BatchLoss = Callable[[Tensor, list[Tensor]], Tensor]  # (float32 logits, batch tensors) -> loss


OPTIMIZERS = ("adam", "sgd")


def _optimizer(
    name: str, model: nn.Module, *, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")


def _fit(
    model: nn.Module,
    staged: _Staged,
    batch_loss: BatchLoss,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    precision: _Precision,
    progress: ProgressReporter,
    optimizer_name: str = "adam",
) -> TrainReport:
    """Adam (or SGD with momentum 0.9) over ``epochs`` seeded shuffles of ``staged``;
    ``batch[0]`` is the model input."""
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    _check_batch_size(batch_size)
    start = time.perf_counter()
    device = staged.device
    model.to(device)
    model.train()
    optimizer = _optimizer(optimizer_name, model, lr=lr, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.use_scaler)
    generator = torch.Generator().manual_seed(seed)
    report = TrainReport(epochs=epochs, device=str(device))
    for _epoch in range(epochs):
        total = torch.zeros((), device=device)
        seen = 0
        for batch in staged.batches(batch_size, generator):
            if batch[0].shape[0] == 1 and staged.num_samples > 1:
                # A lone trailing sample breaks BatchNorm in train mode on 1x1 feature maps
                # (resnet18/mobilenet on 8x8 inputs); it is seen again next epoch.
                continue
            seen += batch[0].shape[0]
            with _autocast(device, precision):
                logits = model(batch[0])
            loss = batch_loss(logits.float(), batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += loss.detach() * batch[0].shape[0]
        mean_loss = float(total) / max(seen, 1)
        report.losses.append(mean_loss)
        progress.step(loss=mean_loss, samples=seen)
    report.seconds = time.perf_counter() - start
    return report


def train_supervised(
    model: nn.Module,
    data: ArrayDataset,
    *,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
    optimizer: str = "adam",
) -> TrainReport:
    """Train ``model`` with Adam (or ``optimizer="sgd"``, momentum 0.9) on the cross-entropy
    of ``data``'s labels.

    Parameters
    ----------
    model
        Any module mapping ``(B, C, H, W)`` to logits ``(B, classes)``; moved to ``device`` and
        left in train mode.
    data
        Labelled data, ``x`` float32 ``(N, C, H, W)``, ``y`` int64 ``(N,)``.
    epochs, batch_size, lr, weight_decay
        Optimisation settings.
    device
        See :func:`resolve_device`.
    seed
        Seeds the shuffling order (a dedicated ``torch.Generator``).
    progress
        Print one line per epoch to stderr.

    Returns
    -------
    TrainReport
    """
    x = _check_inputs(data.x, "data.x")
    y = _check_labels(data.y, x.shape[0], "data.y")
    resolved = resolve_device(device)
    staged = _Staged([x, y], resolved)

    def cross_entropy(logits: Tensor, batch: list[Tensor]) -> Tensor:
        return F.cross_entropy(logits, batch[1])

    bar = ProgressReporter(epochs, description="train", enabled=progress)
    return _fit(
        model,
        staged,
        cross_entropy,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        precision=_Precision(None, use_scaler=False),
        progress=bar,
        optimizer_name=optimizer,
    )


def distill(
    student: nn.Module,
    inputs: np.ndarray,
    *,
    teacher_logits: np.ndarray | None = None,
    teacher_model: nn.Module | None = None,
    temperature: float = 4.0,
    epochs: int = 5,
    batch_size: int = 64,
    lr: float = 1e-3,
    labels: np.ndarray | None = None,
    hard_label_weight: float = 0.0,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
    amp: bool | None = None,
) -> TrainReport:
    """Train ``student`` to match a teacher's soft targets on ``inputs`` (Hinton KD).

    The loss per batch is ``(1 - a) * kd_loss(student, teacher, T) + a * CE(student, labels)``
    with ``a = hard_label_weight``.

    Parameters
    ----------
    student
        The model trained (moved to ``device``, left in train mode).
    inputs
        ``(N, C, H, W)`` float32 transfer set, e.g. the public set.
    teacher_logits
        ``(N, classes)`` precomputed teacher logits (e.g. from :func:`ensemble_teacher`).
    teacher_model
        A teacher network, run once in eval mode over ``inputs``. Give exactly one of
        ``teacher_logits`` and ``teacher_model``.
    temperature
        Distillation temperature ``T > 0``.
    epochs, batch_size, lr
        Optimisation settings (Adam).
    labels
        ``(N,)`` int64 hard labels; required when ``hard_label_weight > 0``.
    hard_label_weight
        ``a`` in ``[0, 1]``.
    device
        See :func:`resolve_device`.
    seed
        Seeds the shuffling order.
    progress
        Print one line per epoch to stderr.
    amp
        Mixed precision on CUDA: ``None`` or ``True`` use ``torch.autocast`` (bf16 if supported,
        else fp16 with a ``GradScaler``); ``False`` keeps float32. Ignored on the CPU.

    Returns
    -------
    TrainReport
    """
    x = _check_inputs(inputs, "inputs")
    if (teacher_logits is None) == (teacher_model is None):
        raise ValueError("give exactly one of teacher_logits and teacher_model")
    if not 0.0 <= hard_label_weight <= 1.0:
        raise ValueError(f"hard_label_weight must be in [0, 1], got {hard_label_weight}")
    if hard_label_weight > 0 and labels is None:
        raise ValueError("hard_label_weight > 0 needs labels (N,)")
    resolved = resolve_device(device)
    if teacher_model is not None:
        teacher_logits = predict_logits(teacher_model, x, device=resolved)
    targets = np.ascontiguousarray(teacher_logits, dtype=np.float32)
    if targets.ndim != 2 or targets.shape[0] != x.shape[0]:
        raise ValueError(
            f"teacher_logits must have shape ({x.shape[0]}, classes), got {targets.shape}"
        )
    if not np.all(np.isfinite(targets)):
        raise ValueError("teacher_logits contain NaN or infinite values")
    arrays = [x, targets]
    if hard_label_weight > 0 and labels is not None:
        arrays.append(_check_labels(labels, x.shape[0]))
    check_temperature(temperature)
    staged = _Staged(arrays, resolved)
    weight = hard_label_weight

    def distillation_loss(logits: Tensor, batch: list[Tensor]) -> Tensor:
        loss = kd_loss(logits, batch[1], temperature=temperature)
        if weight > 0:
            loss = (1.0 - weight) * loss + weight * F.cross_entropy(logits, batch[2])
        return loss

    bar = ProgressReporter(epochs, description="distill", enabled=progress)
    return _fit(
        student,
        staged,
        distillation_loss,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=0.0,
        seed=seed,
        precision=_precision(resolved, amp),
        progress=bar,
    )


def predict_logits(
    model: nn.Module,
    x: np.ndarray,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """Logits of ``model`` on ``x``, batched, in eval mode without gradients.

    The model's train/eval mode is restored afterwards.

    Parameters
    ----------
    model
        Maps ``(B, C, H, W)`` to ``(B, classes)``; moved to ``device``.
    x
        ``(N, C, H, W)`` float32 inputs, ``N >= 1``.
    device
        See :func:`resolve_device`.
    batch_size
        Samples per forward pass.

    Returns
    -------
    np.ndarray
        ``(N, classes)`` float32.
    """
    array = _check_inputs(x)
    _check_batch_size(batch_size)
    resolved = resolve_device(device)
    staged = _Staged([array], resolved)
    was_training = model.training
    model.to(resolved)
    model.eval()
    outputs: list[Tensor] = []
    try:
        with torch.no_grad():
            for (batch,) in staged.batches(batch_size):
                outputs.append(model(batch).float())
    finally:
        model.train(was_training)
    return torch.cat(outputs).cpu().numpy()


def evaluate(
    model: nn.Module,
    data: ArrayDataset,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 512,
) -> EvalReport:
    """Accuracy and mean cross-entropy of ``model`` on labelled ``data``.

    Parameters
    ----------
    model
        The classifier (eval mode during the pass, its mode restored afterwards).
    data
        ``x`` float32 ``(N, C, H, W)``, ``y`` int64 ``(N,)``, ``N >= 1``.
    device
        See :func:`resolve_device`.
    batch_size
        Samples per forward pass.

    Returns
    -------
    EvalReport
    """
    x = _check_inputs(data.x, "data.x")
    y = _check_labels(data.y, x.shape[0], "data.y")
    logits = predict_logits(model, x, device=device, batch_size=batch_size)
    if y.max() >= logits.shape[1] or y.min() < 0:
        raise ValueError(
            f"labels must lie in [0, {logits.shape[1]}) for a model with {logits.shape[1]} "
            f"outputs; got range [{y.min()}, {y.max()}]"
        )
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y))
    accuracy = float((logits.argmax(axis=1) == y).mean())
    return EvalReport(accuracy=accuracy, loss=float(loss), num_samples=int(y.shape[0]))
