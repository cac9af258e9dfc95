"""``python -m experiments.probes``: linear probes per layer of teacher, KD and alone students."""

from __future__ import annotations

from experiments.mode_cli import run_mode_cli
from fedkd.modes.common import format_table
from fedkd.modes.probes import ProbesConfig, ProbesResult, run_probes
from fedkd.modes.stats import cell, interval


def summary_table(result: ProbesResult) -> str:
    """The printed summary: one row per (model, layer) with the probe's test accuracy."""
    rows = [
        [
            "input",
            "pixels",
            0.0,
            "-",
            cell(result.input_accuracy),
            interval(result.input_accuracy),
            "-",
        ]
    ]
    rows += [
        [
            p.model,
            p.feature,
            p.depth,
            p.dim,
            cell(p.accuracy),
            interval(p.accuracy),
            cell(result.model_accuracies[p.model]),
        ]
        for p in result.probes
    ]
    headers = ["model", "feature", "depth", "dim", "probe_acc", "95% CI", "model_acc"]
    return format_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`ProbesConfig`, run, print the table; return the exit code."""
    return run_mode_cli(
        "probes",
        ProbesConfig,
        run_probes,
        summary_table,
        argv,
        __doc__,
        results_line="results and plot in {out}",
    )


if __name__ == "__main__":
    raise SystemExit(main())
