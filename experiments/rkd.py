"""Multi-task relational KD: ``fedkd rkd`` / ``python -m experiments.rkd``.

Trains a multi-task teacher (shared trunk, one head per task), then two smaller students from the
same initial weights: task losses only, and task losses plus the RKD distance and angle losses on
the heads' outputs. Prints each task's accuracy and how well each student keeps the teacher's
pairwise-distance structure. Results and plots go to ``--out`` (default ``runs/rkd``).
"""

from __future__ import annotations

import argparse

from fedkd.modes.common import add_config_arguments, config_from_args, format_table
from fedkd.modes.rkd import RkdConfig, run_rkd


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`RkdConfig`, run the mode and print a table; return 0."""
    parser = argparse.ArgumentParser(prog="fedkd rkd", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/rkd", help="output folder")
    add_config_arguments(parser, RkdConfig)
    args = parser.parse_args(argv)
    config = config_from_args(RkdConfig, args)
    result = run_rkd(config, args.out)
    reports = (result.teacher, result.student_task, result.student_rkd)
    headers = ["model", *[f"acc_{t}" for t in result.tasks], "dist_pearson", "dist_spearman",
               "params"]
    rows = [
        [r.name, *[r.accuracy[t] for t in result.tasks], r.distance_pearson,
         r.distance_spearman, r.parameters]
        for r in reports
    ]
    print(format_table(headers, rows))
    print(f"distance structure on {result.num_structure} test samples; "
          f"results: {result.out_dir}/results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
