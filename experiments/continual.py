"""``python -m experiments.continual``: task A then B, fine-tuning vs LwF vs LwF + replay."""

from __future__ import annotations

import argparse
import sys

from fedkd.modes.common import add_config_arguments, config_from_args, format_table
from fedkd.modes.continual import ContinualConfig, ContinualResult, run_continual

DEFAULT_OUT_DIR = "runs/continual"


def summary_table(result: ContinualResult) -> str:
    """The printed summary: accuracies after task B and forgetting on A, one row per method."""
    rows = [["(after task A)", result.after_a_accuracy_a, result.after_a_accuracy_b, "-", "-",
             "-"]]
    rows += [
        [o.method, o.accuracy_a, o.accuracy_b, o.accuracy_all, o.task_aware_accuracy_a,
         o.forgetting_a]
        for o in result.after_b
    ]
    return format_table(
        ["method", "acc_A", "acc_B", "acc_all", "acc_A_task_aware", "forgetting_A"], rows
    )


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`ContinualConfig`, run, print the table; return the exit code."""
    parser = argparse.ArgumentParser(prog="fedkd continual", description=__doc__)
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="output folder")
    add_config_arguments(parser, ContinualConfig)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(ContinualConfig, args)
        result = run_continual(config, args.out_dir)
    except (ValueError, KeyError) as error:
        print(f"fedkd continual: error: {error}", file=sys.stderr)
        return 2
    print(summary_table(result))
    print(f"results and plot in {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
