"""``python -m experiments.uncertainty``: calibration and uncertainty, KD vs hard labels vs TS."""

from __future__ import annotations

from experiments.mode_cli import run_mode_cli
from fedkd.modes.common import format_table
from fedkd.modes.uncertainty import UncertaintyConfig, UncertaintyResult, run_uncertainty


def summary_table(result: UncertaintyResult) -> str:
    """The printed summary: one row per predictor (calibration, entropy, mutual information)."""
    rows = [
        [
            r.predictor,
            r.accuracy,
            r.ece,
            r.nll,
            r.brier,
            r.entropy_clean,
            r.entropy_blended,
            r.mutual_information_clean,
            r.mutual_information_blended,
            r.mutual_information_noise,
        ]
        for r in result.predictors
    ]
    headers = [
        "predictor",
        "acc",
        "ECE",
        "NLL",
        "Brier",
        "H_clean",
        "H_blend",
        "MI_clean",
        "MI_blend",
        "MI_noise",
    ]
    temps = next(r.temperatures for r in result.predictors if r.predictor == "hard_ts")
    return (
        f"{format_table(headers, rows)}\nteacher accuracy {result.teacher_accuracy:.4f}; "
        f"fitted temperatures {', '.join(f'{t:.2f}' for t in temps)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`UncertaintyConfig`, run, print the table; return the exit code."""
    return run_mode_cli(
        "uncertainty", UncertaintyConfig, run_uncertainty, summary_table, argv, __doc__
    )


if __name__ == "__main__":
    raise SystemExit(main())
