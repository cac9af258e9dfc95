"""A tiny, dependency-free progress reporter.

Training loops and federated rounds report one line per step (an epoch, a round) to ``stderr``
when the user asked for progress, and print nothing otherwise::

    bar = ProgressReporter(total=5, description="distill", enabled=progress)
    for epoch in range(5):
        ...
        bar.step(loss=mean_loss, samples=len(data))

prints lines such as ``distill epoch 2/5 loss=0.4137 1843 samples/s 1.2s``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressReporter:
    """Prints ``<description> <unit> i/n`` lines with loss, rate and elapsed time.

    Parameters
    ----------
    total
        Number of steps expected (``n`` in ``i/n``); must be >= 0.
    description
        Prefix of every line, e.g. ``"train"`` or ``"distill"``.
    enabled
        When False, nothing is ever printed (the reporter still counts steps).
    unit
        Name of one step, e.g. ``"epoch"`` or ``"round"``.
    stream
        Where lines go; ``None`` means ``sys.stderr`` looked up at print time.
    """

    def __init__(
        self,
        total: int,
        *,
        description: str = "",
        enabled: bool = True,
        unit: str = "epoch",
        stream: TextIO | None = None,
    ) -> None:
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}")
        self.total = total
        self.description = description
        self.enabled = enabled
        self.unit = unit
        self.count = 0
        self._stream = stream
        self._start = time.perf_counter()
        self._last = self._start

    def step(self, *, loss: float | None = None, samples: int = 0, **metrics: float) -> str:
        """Record one finished step and print its line when enabled.

        Parameters
        ----------
        loss
            Mean loss of the step, printed as ``loss=...`` when given.
        samples
            Samples processed during the step; gives the ``samples/s`` rate when > 0.
        **metrics
            Further named values printed as ``name=value``.

        Returns
        -------
        str
            The line (also returned when printing is disabled, for logging).
        """
        self.count += 1
        now = time.perf_counter()
        step_seconds = now - self._last
        self._last = now
        parts = [f"{self.unit} {self.count}/{self.total}"]
        if self.description:
            parts.insert(0, self.description)
        if loss is not None:
            parts.append(f"loss={loss:.4f}")
        parts.extend(f"{name}={value:.4g}" for name, value in metrics.items())
        if samples > 0 and step_seconds > 0:
            parts.append(f"{samples / step_seconds:.0f} samples/s")
        parts.append(f"{now - self._start:.1f}s")
        line = " ".join(parts)
        if self.enabled:
            stream = self._stream if self._stream is not None else sys.stderr
            print(line, file=stream, flush=True)
        return line

    @property
    def elapsed(self) -> float:
        """Seconds since the reporter was created."""
        return time.perf_counter() - self._start
