"""``python -m experiments.probes``: linear probes per layer of teacher, KD and alone students."""

from __future__ import annotations

import argparse
import sys

from fedkd.modes.common import add_config_arguments, config_from_args, format_table
from fedkd.modes.probes import ProbesConfig, ProbesResult, run_probes

DEFAULT_OUT_DIR = "runs/probes"


def summary_table(result: ProbesResult) -> str:
    """The printed summary: one row per (model, layer) with the probe's test accuracy."""
    rows = [["input", "pixels", 0.0, "-", result.input_accuracy, "-"]]
    rows += [
        [p.model, p.feature, p.depth, p.dim, p.accuracy, result.model_accuracies[p.model]]
        for p in result.probes
    ]
    return format_table(["model", "feature", "depth", "dim", "probe_acc", "model_acc"], rows)


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`ProbesConfig`, run, print the table; return the exit code."""
    parser = argparse.ArgumentParser(prog="fedkd probes", description=__doc__)
    parser.add_argument("--out-dir", default=DEFAULT_OUT_DIR, help="output folder")
    add_config_arguments(parser, ProbesConfig)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(ProbesConfig, args)
        result = run_probes(config, args.out_dir)
    except (ValueError, KeyError) as error:
        print(f"fedkd probes: error: {error}", file=sys.stderr)
        return 2
    print(summary_table(result))
    print(f"results and plot in {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
