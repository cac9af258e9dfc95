"""``fedkd attack all``: every study at its defaults, one markdown report with tables and plots.

Each study writes its own folder under ``--out`` (``runs/attacks`` by default); the report
``report.md`` there links their plots and repeats their tables and answers. With ``--only``
the other studies' earlier results in ``--out`` (if any) stay in the report. A study that
fails is reported as failed (with its error) and the others still run; the exit code is 1
when any failed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys
import time
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from experiments.attacks.common import DEFAULT_ROOT, EXIT_FAILED, EXIT_OK, EXIT_USAGE, options
from fedkd.attacks import StudyOptions, StudyResult, read_study, write_study

ORDER = ("secagg-isolation", "label-inference", "membership", "byzantine", "crafted-queries")


def _module(study: str) -> str:
    """Where a study's ``run`` lives (secagg-isolation's Flower column needs experiments/)."""
    if study == "secagg-isolation":
        return "experiments.attacks.secagg_isolation"
    return "fedkd.attacks." + study.replace("-", "_")


def report(results: dict[str, StudyResult | str], seconds: dict[str, float], root: Path) -> Path:
    """Write ``report.md`` under ``root``: per study question, threat model, table, plots."""
    lines = [
        "# fedkd attack studies",
        "",
        "| study | question | answer | seconds |",
        "|---|---|---|---|",
    ]
    for study, result in results.items():
        took = "earlier run" if math.isnan(seconds[study]) else f"{seconds[study]:.0f}"
        if isinstance(result, str):
            lines.append(f"| {study} | | FAILED: {result.splitlines()[-1]} | {took} |")
        else:
            lines.append(f"| {study} | {result.question} | see below | {took} |")
    for study, result in results.items():
        lines += ["", f"## {study}", ""]
        if isinstance(result, str):
            lines += ["Failed:", "", "```", result.strip(), "```"]
            continue
        lines += [
            f"**Question.** {result.question}",
            "",
            f"**Threat model.** {result.threat_model}",
        ]
        lines += ["", f"**Command.** `fedkd attack {study}`", "", result.table, result.answer, ""]
        lines += [f"![{plot}]({study}/{plot})" for plot in result.plots]
    path = root / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run every study (``--only`` some of them) and write the report."""
    p = argparse.ArgumentParser(prog="fedkd attack all", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-root", default="")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--only", nargs="+", choices=ORDER, default=list(ORDER))
    args = p.parse_args(argv)
    try:
        base = options(args)
    except ValueError as problem:
        print(f"fedkd attack all: {problem}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.ERROR)
    results: dict[str, StudyResult | str] = {}
    seconds: dict[str, float] = {}
    for study in ORDER:
        if study not in args.only:  # keep an earlier run's results in the report
            if (args.out / study / "results.json").exists():
                results[study], seconds[study] = read_study(args.out / study), math.nan
            continue
        opts = StudyOptions(
            base.dataset, base.data_root, base.seeds, args.out / study, base.quick, base.overrides
        )
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = importlib.import_module(_module(study)).run(opts)
            write_study(result, opts.out)
            results[study] = result
        except Exception:  # noqa: BLE001 -- one failed study must not hide the others
            results[study] = traceback.format_exc()
        seconds[study] = time.perf_counter() - start
        print(
            f"{study}: {'failed' if isinstance(results[study], str) else 'done'} "
            f"in {seconds[study]:.0f} s",
            flush=True,
        )
    path = report(results, seconds, args.out)
    print(f"report: {path}")
    return EXIT_FAILED if any(isinstance(r, str) for r in results.values()) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
