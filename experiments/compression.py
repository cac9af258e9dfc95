"""``python -m experiments.compression``: teacher -> small student through a transfer set."""

from __future__ import annotations

from experiments.mode_cli import run_mode_cli
from fedkd.modes.common import format_table
from fedkd.modes.compression import CompressionConfig, CompressionResult, run_compression
from fedkd.modes.stats import cell, interval


def summary_table(result: CompressionResult) -> str:
    """The printed summary: one row per setting and method, then the footprints."""
    rows = [
        [
            m.setting,
            m.method,
            cell(m.accuracy),
            interval(m.accuracy),
            cell(m.gain_over_alone),
            interval(m.gain_over_alone),
            cell(m.gap_closed),
            interval(m.gap_closed),
            cell(m.best_epoch),
        ]
        for m in result.methods
    ]
    headers = [
        "setting",
        "method",
        "acc",
        "acc 95% CI",
        "gain",
        "gain 95% CI",
        "gap closed",
        "gap 95% CI",
        "best epoch",
    ]
    table = format_table(headers, rows)
    prints = format_table(
        ["model", "params", "bytes", "MFLOPs/batch", "cpu_ms/batch (1 thread)"],
        [
            [f.name, f.parameters, f.size_bytes, f.flops / 1e6, f.latency_ms]
            for f in result.footprints
        ],
    )
    labels = ", ".join(
        f"{s}: {result.labelled[s]} labelled / {result.transfer_size[s]} transfer inputs"
        for s in result.labelled
    )
    return (
        f"teacher accuracy {cell(result.teacher_accuracy)} {interval(result.teacher_accuracy)}"
        f"\n{table}\n{labels}; hint {result.hint_features[0]} -> {result.hint_features[1]}\n"
        f"{prints}\nteacher/student: x{result.compression_ratio:.2f} params, "
        f"x{result.flop_ratio:.2f} FLOPs, CPU speed-up x{result.speedup:.2f} (identical-copy check "
        f"{result.latency.control_ratio:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`CompressionConfig`, run, print the table; return the exit code."""
    return run_mode_cli(
        "compression", CompressionConfig, run_compression, summary_table, argv, __doc__
    )


if __name__ == "__main__":
    raise SystemExit(main())
