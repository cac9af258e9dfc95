"""``python -m experiments.compression``: teacher -> small student, alone vs KD vs KD + hint."""

from __future__ import annotations

import argparse
import sys

from fedkd.modes.common import add_config_arguments, config_from_args, format_table
from fedkd.modes.compression import CompressionConfig, CompressionResult, run_compression

DEFAULT_OUT_DIR = "runs/compression"


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
    parser = argparse.ArgumentParser(prog="fedkd compression", description=__doc__)
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="output folder")
    add_config_arguments(parser, CompressionConfig)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(CompressionConfig, args)
        result = run_compression(config, args.out_dir)
    except (ValueError, KeyError) as error:
        print(f"fedkd compression: error: {error}", file=sys.stderr)
        return 2
    print(summary_table(result))
    print(f"results and plots in {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
