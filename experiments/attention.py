"""Attention to fixed context: ``fedkd attention`` / ``python -m experiments.attention``.

Trains a dynamic-attention sequence encoder (teacher), distils it into the same encoder with one
learned fixed context vector instead of attention, trains that student alone as the reference,
and prints accuracy against CPU latency per batch. Results and plots go to ``--out``
(default ``runs/attention``).
"""

from __future__ import annotations

import argparse

from fedkd.modes.attention import AttentionConfig, run_attention
from fedkd.modes.common import add_config_arguments, config_from_args, format_table


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`AttentionConfig`, run the mode and print a table; return 0."""
    parser = argparse.ArgumentParser(prog="fedkd attention", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/attention", help="output folder")
    add_config_arguments(parser, AttentionConfig)
    args = parser.parse_args(argv)
    config = config_from_args(AttentionConfig, args)
    result = run_attention(config, args.out)
    rows = [
        [s.name, s.accuracy, s.latency_ms, s.parameters]
        for s in (result.teacher, result.student_kd, result.student_alone)
    ]
    print(format_table(["model", "accuracy", "latency_ms", "params"], rows))
    print(
        f"accuracy lost (teacher - KD student): {result.accuracy_lost:+.4f}   "
        f"KD gain over alone: {result.kd_gain:+.4f}   speedup: {result.speedup:.2f}x"
    )
    print(f"results: {result.out_dir}/results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
