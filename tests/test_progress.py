"""fedkd.progress: a tqdm bar on a terminal, nothing (or plain lines, on request) elsewhere."""

from __future__ import annotations

import io
import time

import pytest

from fedkd.progress import ProgressReporter


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal, as ``sys.stderr`` does in a shell."""

    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_tqdm_bar_with_the_step_values() -> None:
    screen = FakeTerminal()
    bar = ProgressReporter(3, description="distill", stream=screen, enabled=None)
    for _ in range(3):
        bar.step(loss=0.25, samples=64, accuracy=0.875)
    drawn = screen.getvalue()
    assert "distill" in drawn and "3/3" in drawn  # tqdm's counter, not our line format
    assert "loss=0.2500" in drawn and "accuracy=0.875" in drawn and "samples/s" in drawn
    assert "\r" in drawn  # redrawn in place, not one line per step
    assert "distill epoch 1/3" not in drawn


def test_not_a_terminal_is_quiet_by_default_and_lines_on_request() -> None:
    pipe = io.StringIO()
    quiet = ProgressReporter(2, description="train", stream=pipe, enabled=None)
    line = quiet.step(loss=1.0)
    assert pipe.getvalue() == ""
    assert line.startswith("train epoch 1/2 loss=1.0000")  # still returned for logging

    lines = ProgressReporter(2, description="train", unit="round", stream=pipe, enabled=True)
    first = lines.step(loss=0.5, samples=10)
    second = lines.step()
    assert pipe.getvalue() == f"{first}\n{second}\n"
    assert first.startswith("train round 1/2 loss=0.5000") and "samples/s" in first
    assert second.startswith("train round 2/2 ") and "loss" not in second


def test_disabled_prints_nothing_even_on_a_terminal() -> None:
    screen = FakeTerminal()
    bar = ProgressReporter(2, stream=screen, enabled=False)
    bar.step(loss=0.1)
    bar.close()
    assert screen.getvalue() == "" and bar.count == 1


def test_counts_elapsed_and_refuses_a_negative_total() -> None:
    with ProgressReporter(1, enabled=False) as bar:
        start = bar.elapsed
        time.sleep(0.01)
        assert bar.elapsed > start >= 0.0
    with pytest.raises(ValueError, match="total"):
        ProgressReporter(-1)
