"""Attention to fixed context: ``fedkd attention`` / ``python -m experiments.attention``.

Trains a dynamic-attention sequence encoder (teacher) and, per seed, a student with one learned
fixed context vector three ways (alone, KD on outputs, KD on outputs plus the teacher's pooling
attention), and prints accuracy (mean ± std, 95% CI) against single-thread CPU latency and FLOPs.
Results and plots go to ``--out`` (default ``runs/attention``).
"""

from __future__ import annotations

from experiments.mode_cli import RESULTS_JSON_LINE, run_mode_cli
from fedkd.modes.attention import AttentionConfig, AttentionResult, run_attention
from fedkd.modes.common import format_table
from fedkd.modes.stats import cell, interval


def summary_table(result: AttentionResult) -> str:
    """The printed summary: one row per model, then gains, accuracy kept and speed-up."""
    rows = [
        ["teacher", cell(result.teacher_accuracy), interval(result.teacher_accuracy), "-", "-", "-"]
    ]
    for name, acc in result.students.items():
        gain = result.gain_over_alone.get(name)
        rows.append(
            [
                name,
                cell(acc),
                interval(acc),
                cell(gain),
                interval(gain),
                cell(result.attention_agreement[name]),
            ]
        )
    headers = [
        "model",
        "accuracy",
        "95% CI",
        "gain over alone",
        "95% CI",
        "pooling cosine to teacher",
    ]
    lat = result.latency
    return (
        f"{format_table(headers, rows)}\n"
        f"accuracy kept (kd_attention / teacher): {cell(result.accuracy_kept)}\n"
        f"latency per batch of {lat.batch_size} (1 thread, median of {lat.repeats}): teacher "
        f"{lat.ms['teacher']:.2f} ms, student {lat.ms['student']:.2f} ms -> x{result.speedup:.2f}"
        f" (identical-copy check {lat.control_ratio:.2f}); FLOPs x{result.flop_ratio:.2f}; "
        f"params {result.parameters}"
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
