"""``python -m experiments.continual``: Split-MNIST, fine-tuning vs LwF vs replay (+ LwF)."""

from __future__ import annotations

from experiments.mode_cli import run_mode_cli
from fedkd.modes.common import format_table
from fedkd.modes.continual import ContinualConfig, ContinualResult, run_continual
from fedkd.modes.stats import cell, interval


def summary_table(result: ContinualResult) -> str:
    """The printed summary: average accuracy and forgetting per scenario and method."""
    rows = [
        [
            o.scenario,
            o.method,
            cell(o.average_accuracy),
            interval(o.average_accuracy),
            cell(o.forgetting),
            interval(o.forgetting),
            " ".join(f"{a.mean:.2f}" for a in o.final_task_accuracy),
            result.published.get(f"{o.scenario}/{o.method}", "-"),
        ]
        for o in result.outcomes
    ]
    headers = [
        "scenario",
        "method",
        "avg acc",
        "95% CI",
        "forgetting",
        "95% CI",
        "final acc per task",
        "published avg acc",
    ]
    tasks = " | ".join(",".join(str(c) for c in t) for t in result.tasks)
    return f"tasks: {tasks}\n{format_table(headers, rows)}"


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
