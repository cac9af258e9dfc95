"""Attribution alignment: ``fedkd attribution`` / ``python -m experiments.attribution``.

Trains a teacher, distils students at several temperatures (plus one student trained alone),
and prints the mean cosine similarity of teacher and student attribution maps (gradient saliency
and integrated gradients) per temperature. Results and plots go to ``--out``
(default ``runs/attribution``).
"""

from __future__ import annotations

import argparse

from fedkd.modes.attribution import AttributionConfig, run_attribution
from fedkd.modes.common import add_config_arguments, config_from_args, format_table


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`AttributionConfig`, run the mode and print a table; return 0."""
    parser = argparse.ArgumentParser(
        prog="fedkd attribution", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="runs/attribution", help="output folder")
    add_config_arguments(parser, AttributionConfig)
    args = parser.parse_args(argv)
    config = config_from_args(AttributionConfig, args)
    result = run_attribution(config, args.out)
    rows = [
        [
            "alone" if s.temperature is None else f"KD T={s.temperature:g}",
            s.accuracy,
            s.saliency_cosine,
            s.ig_cosine,
        ]
        for s in [*result.students, result.alone]
    ]
    print(f"teacher accuracy: {result.teacher_accuracy:.4f}   "
          f"explained images: {result.num_explained}   "
          f"IG completeness error: {result.ig_completeness_error:.4f}")
    print(format_table(["student", "accuracy", "saliency_cos", "ig_cos"], rows))
    print(f"results: {result.out_dir}/results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
