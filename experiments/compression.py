"""``python -m experiments.compression``: teacher -> small student, alone vs KD vs KD + hint."""

from __future__ import annotations

from experiments.mode_cli import run_mode_cli
from fedkd.modes.common import format_table
from fedkd.modes.compression import CompressionConfig, CompressionResult, run_compression


def summary_table(result: CompressionResult) -> str:
    """The printed summary: one row per model, then the share of the gap closed."""
    rows = [
        [m.name, m.accuracy_mean, m.accuracy_std, m.parameters, m.size_bytes, m.latency_ms]
        for m in (result.teacher, *result.students)
    ]
    table = format_table(["model", "acc", "acc_std", "params", "bytes", "cpu_ms/batch"], rows)
    return (
        f"{table}\n"
        f"gap closed by KD: {_share(result.kd_gap_closed)}, by KD+hint: "
        f"{_share(result.kd_hint_gap_closed)}  (hint {result.hint_student_feature} -> "
        f"{result.hint_teacher_feature}; {result.student_train_size} labelled examples per student)"
        f"\ncompression x{result.compression_ratio:.1f} params, CPU speed-up x{result.speedup:.1f}"
    )


def _share(value: float | None) -> str:
    return "undefined (gap ~ 0)" if value is None else f"{value:.1%}"


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`CompressionConfig`, run, print the table; return the exit code."""
    return run_mode_cli(
        "compression", CompressionConfig, run_compression, summary_table, argv, __doc__
    )


if __name__ == "__main__":
    raise SystemExit(main())
