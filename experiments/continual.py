"""``python -m experiments.continual``: task A then B, fine-tuning vs LwF vs LwF + replay."""

from __future__ import annotations

from experiments.mode_cli import run_mode_cli
from fedkd.modes.common import format_table
from fedkd.modes.continual import ContinualConfig, ContinualResult, run_continual


def summary_table(result: ContinualResult) -> str:
    """The printed summary: accuracies after task B and forgetting on A, one row per method."""
    rows = [["(after task A)", result.after_a_accuracy_a, result.after_a_accuracy_b, "-", "-", "-"]]
    rows += [
        [
            o.method,
            o.accuracy_a,
            o.accuracy_b,
            o.accuracy_all,
            o.task_aware_accuracy_a,
            o.forgetting_a,
        ]
        for o in result.after_b
    ]
    return format_table(
        ["method", "acc_A", "acc_B", "acc_all", "acc_A_task_aware", "forgetting_A"], rows
    )


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`ContinualConfig`, run, print the table; return the exit code."""
    return run_mode_cli(
        "continual",
        ContinualConfig,
        run_continual,
        summary_table,
        argv,
        __doc__,
        results_line="results and plot in {out}",
    )


if __name__ == "__main__":
    raise SystemExit(main())
