"""``python -m experiments.uncertainty``: calibration and uncertainty, KD vs hard labels vs TS."""

from __future__ import annotations

from experiments.mode_cli import run_mode_cli
from fedkd.modes.common import format_table
from fedkd.modes.stats import cell, interval
from fedkd.modes.uncertainty import UncertaintyConfig, UncertaintyResult, run_uncertainty


def summary_table(result: UncertaintyResult) -> str:
    """The printed summary: one row per predictor, paired differences, surviving claims."""
    rows = [
        [
            r.predictor,
            cell(r.accuracy),
            cell(r.ece),
            interval(r.ece),
            cell(r.nll),
            cell(r.brier),
            r.entropy_clean,
            r.entropy_blended,
            r.mutual_information_clean,
            r.mutual_information_blended,
        ]
        for r in result.predictors
    ]
    headers = [
        "predictor",
        "acc",
        "ECE",
        "ECE 95% CI",
        "NLL",
        "Brier",
        "H_clean",
        "H_blend",
        "MI_clean",
        "MI_blend",
    ]
    diffs = [
        [name, *(f"{d[m].mean:+.4f} {interval(d[m])}" for m in ("accuracy", "ece", "nll"))]
        for name, d in result.versus_baseline.items()
    ]
    claims = "\n".join(f"  {c}" for c in result.claims) or "  none (every interval holds 0)"
    return (
        f"teacher accuracy {cell(result.teacher_accuracy)}\n{format_table(headers, rows)}\n"
        f"paired difference vs hard_ts (mean, 95% CI):\n"
        f"{format_table(['predictor', 'accuracy', 'ECE', 'NLL'], diffs)}\n"
        f"claims that survive the seeds:\n{claims}"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`UncertaintyConfig`, run, print the table; return the exit code."""
    return run_mode_cli(
        "uncertainty", UncertaintyConfig, run_uncertainty, summary_table, argv, __doc__
    )


if __name__ == "__main__":
    raise SystemExit(main())
