"""Attention to fixed context: ``fedkd attention`` / ``python -m experiments.attention``.

Trains a dynamic-attention sequence encoder (teacher), distils it into the same encoder with one
learned fixed context vector instead of attention, trains that student alone as the reference,
and prints accuracy against CPU latency per batch. Results and plots go to ``--out``
(default ``runs/attention``).
"""

from __future__ import annotations

from experiments.mode_cli import RESULTS_JSON_LINE, run_mode_cli
from fedkd.modes.attention import AttentionConfig, AttentionResult, run_attention
from fedkd.modes.common import format_table


def summary_table(result: AttentionResult) -> str:
    """The printed summary: one row per model, then accuracy lost, KD gain and speed-up."""
    rows = [
        [s.name, s.accuracy, s.latency_ms, s.parameters]
        for s in (result.teacher, result.student_kd, result.student_alone)
    ]
    return (
        f"{format_table(['model', 'accuracy', 'latency_ms', 'params'], rows)}\n"
        f"accuracy lost (teacher - KD student): {result.accuracy_lost:+.4f}   "
        f"KD gain over alone: {result.kd_gain:+.4f}   speedup: {result.speedup:.2f}x"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`AttentionConfig`, run the mode and print a table; return 0."""
    return run_mode_cli(
        "attention",
        AttentionConfig,
        run_attention,
        summary_table,
        argv,
        __doc__,
        results_line=RESULTS_JSON_LINE,
        catch_errors=False,
    )


if __name__ == "__main__":
    raise SystemExit(main())
