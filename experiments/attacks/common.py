"""The command line every attack study shares, and running one study into its folder."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from fedkd.attacks import StudyOptions, StudyResult, write_study
from fedkd.cli.run_config import parse_assignments

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_ROOT = Path("runs/attacks")


def parser(study: str, description: str) -> argparse.ArgumentParser:
    """``--dataset --data-root --seeds --out --quick`` for study ``study``."""
    p = argparse.ArgumentParser(prog=f"fedkd attack {study}", description=description)
    p.add_argument("--dataset", default="digits", help="registered dataset (default: digits)")
    p.add_argument("--data-root", default="", help="folder of the IDX files for --dataset idx")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one repetition per seed")
    p.add_argument("--out", type=Path, default=DEFAULT_ROOT / study, help="results folder")
    p.add_argument("--quick", action="store_true", help="smallest sizes that show the effect")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="run-config overrides for every run of the study (e.g. model=mlp)",
    )
    return p


def options(args: argparse.Namespace) -> StudyOptions:
    """The library's options from the parsed arguments (raises ValueError on bad ones)."""
    return StudyOptions(
        dataset=args.dataset,
        data_root=args.data_root,
        seeds=tuple(args.seeds),
        out=args.out,
        quick=args.quick,
        overrides=parse_assignments(args.set),
    )


def run_study(
    study: str,
    description: str,
    run: Callable[[StudyOptions], StudyResult],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv``, run the study, write ``results.json`` and ``table.md``, print the table."""
    args = parser(study, description).parse_args(argv)
    try:
        opts = options(args)
    except ValueError as problem:
        print(f"fedkd attack {study}: {problem}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.ERROR)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # secagg=false warnings are the point of a study
            result = run(opts)
    except (ValueError, RuntimeError, OSError) as problem:
        print(f"fedkd attack {study} failed: {problem}", file=sys.stderr)
        return EXIT_FAILED
    out = write_study(result, opts.out)
    print(result.table)
    print(result.answer)
    print(f"\n{study}: {time.perf_counter() - start:.0f} s, results in {out}")
    return EXIT_OK
