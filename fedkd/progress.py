"""Progress of training loops and experiment stages, drawn by ``tqdm``.

One reporter per loop; each finished step (an epoch, a stage) is reported once::

    bar = ProgressReporter(total=5, description="distill", enabled=progress)
    for epoch in range(5):
        ...
        bar.step(loss=mean_loss, samples=len(data))

On a terminal this is a live ``tqdm`` bar (``distill: 40%|####  | 2/5 [00:01<00:01,
loss=0.4137, 1843 samples/s]``). Where the output is not a terminal (a log file, a pipe, Ray's
captured worker output) the default prints nothing; ``enabled=True`` asks for one plain line per
step there instead (``distill epoch 2/5 loss=0.4137 1843 samples/s 1.2s``), for logs.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressReporter:
    """A step counter that shows a ``tqdm`` bar on a terminal and optional lines elsewhere.

    Parameters
    ----------
    total
        Number of steps expected (``n`` in ``i/n``); must be >= 0.
    description
        What is progressing, e.g. ``"train"`` or ``"distill"``.
    enabled
        ``None``: a bar on a terminal, silent otherwise. ``True``: a bar on a terminal, one
        line per step otherwise. ``False``: silent (steps are still counted and returned).
    unit
        Name of one step, e.g. ``"epoch"`` or ``"round"``.
    stream
        Where output goes; ``None`` means ``sys.stderr`` at the time of creation.
    """

    def __init__(
        self,
        total: int,
        *,
        description: str = "",
        enabled: bool | None = True,
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
        self._stream = stream if stream is not None else sys.stderr
        terminal = enabled is not False and _is_terminal(self._stream)
        self._lines = enabled is True and not terminal
        self._bar: tqdm[None] | None = None
        if terminal:
            self._bar = tqdm(
                total=total,
                desc=description or None,
                unit=unit,
                file=self._stream,
                dynamic_ncols=True,
                leave=True,
            )
        self._start = time.perf_counter()
        self._last = self._start

    def step(self, *, loss: float | None = None, samples: int = 0, **metrics: float) -> str:
        """Record one finished step and show it.

        Parameters
        ----------
        loss
            Mean loss of the step, shown as ``loss=...`` when given.
        samples
            Samples processed during the step; gives the ``samples/s`` rate when > 0.
        **metrics
            Further named values shown as ``name=value``.

        Returns
        -------
        str
            The step's one-line summary (also when nothing is shown, for logging), e.g.
            ``train epoch 2/5 loss=0.4137 1843 samples/s 1.2s``.
        """
        self.count += 1
        now = time.perf_counter()
        step_seconds, self._last = now - self._last, now
        values = [f"loss={loss:.4f}"] if loss is not None else []
        values += [f"{name}={value:.4g}" for name, value in metrics.items()]
        if samples > 0 and step_seconds > 0:
            values.append(f"{samples / step_seconds:.0f} samples/s")
        head = f"{self.unit} {self.count}/{self.total}"
        line = " ".join([*([self.description] if self.description else []), head, *values])
        line += f" {now - self._start:.1f}s"
        if self._bar is not None:
            self._bar.set_postfix_str(", ".join(values), refresh=False)
            self._bar.update(1)
            if self.count >= self.total:
                self.close()
        elif self._lines:
            print(line, file=self._stream, flush=True)
        return line

    def close(self) -> None:
        """Finish the bar (it stays on screen); called by the last step, safe to repeat."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def elapsed(self) -> float:
        """Seconds since the reporter was created."""
        return time.perf_counter() - self._start
