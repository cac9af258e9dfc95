"""Multi-task relational KD: ``fedkd rkd`` / ``python -m experiments.rkd``.

Trains a multi-task teacher (shared trunk, one head per task), then two smaller students from the
same initial weights: task losses only, and task losses plus the RKD distance and angle losses on
the heads' outputs. Prints each task's accuracy and how well each student keeps the teacher's
pairwise-distance structure. Results and plots go to ``--out`` (default ``runs/rkd``).
"""

from __future__ import annotations

from experiments.mode_cli import RESULTS_JSON_LINE, run_mode_cli
from fedkd.modes.common import format_table
from fedkd.modes.rkd import RkdConfig, RkdResult, run_rkd
from fedkd.modes.stats import cell, interval


def summary_table(result: RkdResult) -> str:
    """The printed summary: one row per model (task accuracies, distance structure, size)."""
    reports = (result.teacher, result.student_task, result.student_rkd)
    headers = [
        "model",
        *[f"acc_{t}" for t in result.tasks],
        "dist_pearson",
        "dist_spearman",
        "params",
    ]
    rows = [
        [
            r.name,
            *[cell(r.accuracy[t]) for t in result.tasks],
            cell(r.distance_pearson),
            cell(r.distance_spearman),
            r.parameters,
        ]
        for r in reports
    ]
    return (
        f"{format_table(headers, rows)}\ndistance structure on {result.num_structure} test samples"
        f"; mean ± sample std over {result.teacher.distance_pearson.n} seeds; 95% CI of the RKD"
        f" student's Spearman {interval(result.student_rkd.distance_spearman)}, task-only "
        f"{interval(result.student_task.distance_spearman)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`RkdConfig`, run the mode and print a table; return 0."""
    return run_mode_cli(
        "rkd",
        RkdConfig,
        run_rkd,
        summary_table,
        argv,
        __doc__,
        results_line=RESULTS_JSON_LINE,
        catch_errors=False,
    )


if __name__ == "__main__":
    raise SystemExit(main())
