"""CPU latency that cannot report a speed-up between identical models, and FLOPs beside it.

:func:`measure_latency` times every model on one batch with torch pinned to one thread, after
warm-up passes, interleaving the models round by round (so a load spike hits all of them alike)
and taking the median over rounds. A deep copy of the first model is timed as a *control*:
``control_ratio`` (control / original) should be about 1; when it is off by more than
``CONTROL_TOLERANCE`` the machine was too noisy and a warning says so. FLOPs per batch
(``torch.utils.flop_counter``) are reported beside the times: they do not depend on the load.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

CONTROL = "control"
CONTROL_TOLERANCE = 0.25


@dataclass(frozen=True)
class LatencyReport:
    """Median milliseconds and FLOPs per batch of each model, and the identical-copy check."""

    ms: dict[str, float]
    flops: dict[str, int]
    control_ratio: float
    batch_size: int
    repeats: int
    threads: int = 1

    def speedup(self, slow: str, fast: str) -> float:
        """``ms[slow] / ms[fast]``."""
        return self.ms[slow] / self.ms[fast]

    def flop_ratio(self, big: str, small: str) -> float:
        """``flops[big] / flops[small]``."""
        return self.flops[big] / max(self.flops[small], 1)


def count_flops(model: nn.Module, batch: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``model`` (eval mode, CPU copy) on ``batch``."""
    clone = copy.deepcopy(model).cpu().eval()
    counter = FlopCounterMode(display=False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel is not counted
    try:
        with torch.no_grad(), counter:
            clone(batch.cpu())
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())


@torch.no_grad()
def measure_latency(
    models: dict[str, nn.Module], batch: torch.Tensor, *, repeats: int = 30, warmup: int = 5
) -> LatencyReport:
    """Median CPU milliseconds per forward pass of each model on ``batch``, one thread.

    Parameters
    ----------
    models : dict of str to nn.Module
        The models (CPU copies in eval mode are timed; the originals are untouched). The name
        ``"control"`` is reserved.
    batch : Tensor
        One input batch.
    repeats : int
        Timed rounds; each round times every model once, in a rotating order.
    warmup : int
        Untimed passes of each model first.

    Returns
    -------
    LatencyReport
    """
    if not models or CONTROL in models:
        raise ValueError(f"give one or more models, none named {CONTROL!r}; got {list(models)}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    first = next(iter(models))
    clones = {name: copy.deepcopy(m).cpu().eval() for name, m in models.items()}
    clones[CONTROL] = copy.deepcopy(clones[first])
    inputs = batch.cpu()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = _interleaved(clones, inputs, repeats=repeats, warmup=warmup)
    finally:
        torch.set_num_threads(previous)
    ms = {name: statistics.median(values) for name, values in times.items()}
    ratio = ms.pop(CONTROL) / ms[first]
    if abs(ratio - 1.0) > CONTROL_TOLERANCE:
        warnings.warn(
            f"an identical copy of {first!r} timed {ratio:.2f}x the original: the machine is "
            "too loaded for these latencies; trust the FLOPs instead",
            stacklevel=2,
        )
    flops = {name: count_flops(model, inputs) for name, model in models.items()}
    return LatencyReport(ms, flops, ratio, int(inputs.shape[0]), repeats)


def _interleaved(
    models: dict[str, nn.Module], batch: torch.Tensor, *, repeats: int, warmup: int
) -> dict[str, list[float]]:
    for model in models.values():
        for _ in range(warmup):
            model(batch)
    names = list(models)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            models[name](batch)
            times[name].append((time.perf_counter() - start) * 1000.0)
    return times
