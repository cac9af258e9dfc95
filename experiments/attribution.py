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


def summary_table(result: AttributionResult) -> str:
    """The printed summary: teacher accuracy, then one row per student (temperature)."""
    rows = [
        [
            "alone" if s.temperature is None else f"KD T={s.temperature:g}",
            s.accuracy,
            s.saliency_cosine,
            s.ig_cosine,
        ]
        for s in [*result.students, result.alone]
    ]
    return (
        f"teacher accuracy: {result.teacher_accuracy:.4f}   "
        f"explained images: {result.num_explained}   "
        f"IG completeness error: {result.ig_completeness_error:.4f}\n"
        f"{format_table(['student', 'accuracy', 'saliency_cos', 'ig_cos'], rows)}"
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
