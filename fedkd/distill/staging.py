"""Input checks, device staging, mixed precision and optimisers shared by every training loop.

Inputs are numpy arrays: ``x`` float32 ``(N, C, H, W)`` (or ``(N, ...)``) and labels int64
``(N,)``. On the CPU the arrays are wrapped without copying. On CUDA the whole set is moved to
the device once when it fits comfortably in free memory; otherwise each batch goes through pinned
memory with a non-blocking copy.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

# Stage the whole set on the GPU when it takes at most this fraction of the free memory.
_DEVICE_FRACTION = 0.25
OPTIMIZERS = ("adam", "sgd")


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


def check_inputs(x: np.ndarray, name: str = "x") -> np.ndarray:
    """``x`` as a C-contiguous float32 array of at least two dimensions and one sample."""
    array = np.asarray(x)
    if array.ndim < 2:
        raise ValueError(f"{name} must have shape (N, C, H, W) (or (N, ...)), got {array.shape}")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty: need at least one sample")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def check_labels(labels: np.ndarray, num_samples: int, name: str = "labels") -> np.ndarray:
    """``labels`` as a C-contiguous int64 array of shape ``(num_samples,)``."""
    array = np.asarray(labels)
    if array.shape != (num_samples,):
        raise ValueError(f"{name} must have shape ({num_samples},), got {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array (int64), got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.int64)


def check_batch_size(batch_size: int) -> None:
    """Raise ``ValueError`` unless ``batch_size >= 1``."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _free_memory(device: torch.device) -> int:
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


class Staged:
    """Named arrays held where batches are cheapest to take: on the device, or pinned on the host.

    Parameters
    ----------
    arrays
        Name -> array, all with the same first dimension.
    device
        Where batches are delivered.
    """

    def __init__(self, arrays: dict[str, np.ndarray], device: torch.device) -> None:
        sizes = {name: int(array.shape[0]) for name, array in arrays.items()}
        if not sizes or len(set(sizes.values())) != 1:
            raise ValueError(f"staged arrays must share their first dimension; got {sizes}")
        self.device = device
        self.num_samples = next(iter(sizes.values()))
        with warnings.catch_warnings():  # read-only arrays are fine: batches are only read
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            host = {name: torch.from_numpy(array) for name, array in arrays.items()}
        nbytes = sum(array.nbytes for array in arrays.values())
        self.on_device = device.type != "cuda" or nbytes <= _DEVICE_FRACTION * _free_memory(device)
        self.tensors = {n: t.to(device) for n, t in host.items()} if self.on_device else host

    def batch(self, index: Tensor) -> dict[str, Tensor]:
        """Rows ``index`` (a CPU int64 tensor) of every array, on the device."""
        if self.on_device:
            device_index = index.to(self.device, non_blocking=True)
            return {name: t[device_index] for name, t in self.tensors.items()}
        return {
            name: t[index].pin_memory().to(self.device, non_blocking=True)
            for name, t in self.tensors.items()
        }

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, *, min_samples: int = 0
    ) -> Iterator[dict[str, Tensor]]:
        """Every sample once, in batches; shuffled with ``generator`` when given.

        With ``min_samples`` the pass repeats (fresh shuffles) until at least that many samples
        were served, so a small set's "epoch" is as long as a large one's.
        """
        if generator is None:
            order = torch.arange(self.num_samples)
        else:
            repeats = max(1, -(-min_samples // self.num_samples))
            order = torch.cat(
                [torch.randperm(self.num_samples, generator=generator) for _ in range(repeats)]
            )
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start : start + batch_size])


@dataclass(frozen=True)
class Precision:
    """Mixed-precision policy: an autocast dtype (``None``: float32) and whether to scale."""

    autocast_dtype: torch.dtype | None
    use_scaler: bool


FLOAT32 = Precision(None, use_scaler=False)


def precision_for(device: torch.device, amp: bool | None) -> Precision:
    """bf16 autocast on CUDA when supported, else fp16 with a scaler; float32 on the CPU."""
    if device.type != "cuda":
        if amp:
            warnings.warn("amp=True has effect on CUDA only; running in float32", stacklevel=3)
        return FLOAT32
    if amp is False:
        return FLOAT32
    if torch.cuda.is_bf16_supported():
        return Precision(torch.bfloat16, use_scaler=False)
    return Precision(torch.float16, use_scaler=True)


def autocast(
    device: torch.device, precision: Precision
) -> torch.autocast | contextlib.nullcontext[None]:
    """The autocast context of ``precision`` (a no-op context for float32)."""
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision.autocast_dtype)


def make_optimizer(
    name: str, parameters: Iterable[nn.Parameter], *, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum 0.9, over ``parameters``."""
    params = list(parameters)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
