"""Attribution alignment: ``fedkd attribution`` / ``python -m experiments.attribution``.

Trains a teacher, distils students at several temperatures (plus one student trained alone),
and prints the mean cosine similarity of teacher and student attribution maps (gradient saliency
and integrated gradients) per temperature. Results and plots go to ``--out``
(default ``runs/attribution``).
"""

from __future__ import annotations

from experiments.mode_cli import RESULTS_JSON_LINE, run_mode_cli
from fedkd.modes.attribution import AttributionConfig, AttributionResult, run_attribution
from fedkd.modes.common import format_table
from fedkd.modes.stats import cell, interval


def summary_table(result: AttributionResult) -> str:
    """The printed summary: teacher accuracy, then one row per student (temperature)."""
    rows = [
        [
            "alone" if s.temperature is None else f"KD T={s.temperature:g}",
            cell(s.accuracy),
            cell(s.saliency_cosine),
            interval(s.saliency_cosine),
            cell(s.ig_cosine),
            interval(s.ig_cosine),
        ]
        for s in [*result.students, result.alone]
    ]
    headers = ["student", "accuracy", "saliency_cos", "95% CI", "ig_cos", "95% CI"]
    return (
        f"teacher accuracy: {cell(result.teacher_accuracy)}   "
        f"explained images: {result.num_explained}   "
        f"IG completeness error: {result.ig_completeness_error:.4f}\n"
        f"{format_table(headers, rows)}"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`AttributionConfig`, run the mode and print a table; return 0."""
    return run_mode_cli(
        "attribution",
        AttributionConfig,
        run_attribution,
        summary_table,
        argv,
        __doc__,
        results_line=RESULTS_JSON_LINE,
        catch_errors=False,
    )


if __name__ == "__main__":
    raise SystemExit(main())
