"""``python -m experiments.uncertainty``: calibration and uncertainty, KD vs hard labels vs TS."""

from __future__ import annotations

import argparse
import sys

from fedkd.modes.common import add_config_arguments, config_from_args, format_table
from fedkd.modes.uncertainty import UncertaintyConfig, UncertaintyResult, run_uncertainty

DEFAULT_OUT_DIR = "runs/uncertainty"


def summary_table(result: UncertaintyResult) -> str:
    """The printed summary: one row per predictor (calibration, entropy, mutual information)."""
    rows = [
        [r.predictor, r.accuracy, r.ece, r.nll, r.brier, r.entropy_clean, r.entropy_blended,
         r.mutual_information_clean, r.mutual_information_blended, r.mutual_information_noise]
        for r in result.predictors
    ]
    headers = ["predictor", "acc", "ECE", "NLL", "Brier", "H_clean", "H_blend", "MI_clean",
               "MI_blend", "MI_noise"]
    temps = next(r.temperatures for r in result.predictors if r.predictor == "hard_ts")
    return (f"{format_table(headers, rows)}\nteacher accuracy {result.teacher_accuracy:.4f}; "
            f"fitted temperatures {', '.join(f'{t:.2f}' for t in temps)}")


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`UncertaintyConfig`, run, print the table; return the exit code."""
    parser = argparse.ArgumentParser(prog="fedkd uncertainty", description=__doc__)
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="output folder")
    add_config_arguments(parser, UncertaintyConfig)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(UncertaintyConfig, args)
        result = run_uncertainty(config, args.out_dir)
    except (ValueError, KeyError) as error:
        print(f"fedkd uncertainty: error: {error}", file=sys.stderr)
        return 2
    print(summary_table(result))
    print(f"results and plots in {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
