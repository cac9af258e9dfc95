"""The generated pages: the results summary, one line per study, from the ``results.json``
files that hold the figures (under ``docs/results/``), never typed by hand; and the run-config
reference ``docs/configuration.md``, from the keys' declaration (``fedkd.fl.run_keys``).

    python -m experiments.report            # README.md's summary, docs/results/summary.md,
                                            # docs/configuration.md
    python -m experiments.report --check    # exit 1 if any differs from what it is made from

Each study's line names the command that wrote its ``results.json`` (in the study's page); a
study whose file is absent is left out, not guessed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments import PROJECT_ROOT
from fedkd.fl.config_doc import reference_markdown

RESULTS = PROJECT_ROOT / "docs" / "results"
README = PROJECT_ROOT / "README.md"
SUMMARY = RESULTS / "summary.md"
CONFIGURATION = PROJECT_ROOT / "docs" / "configuration.md"  # the run-config reference
START, END = "<!-- results:start (make report) -->", "<!-- results:end -->"


def _pm(value: dict[str, float], scale: float = 1.0, digits: int = 1) -> str:
    return f"{scale * value['mean']:.{digits}f} ± {scale * value['std']:.{digits}f}"


def split_stats(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Label skew of the default split against the self-balancing one, same alpha."""
    rows = {(r["partitioner"], r["alpha"]): r for r in data["rows"]}
    cells = []
    for alpha in (0.1, 0.5):
        ours, balanced = rows.get(("dirichlet", alpha)), rows.get(("dirichlet-balanced", alpha))
        if ours and balanced:
            cells.append(
                f"α={alpha:g}: {_pm(ours['label_tv'], digits=3)} "
                f"(self-balancing {_pm(balanced['label_tv'], digits=3)})"
            )
    return [(f"Default split's label TV, {data['title']}", "; ".join(cells))]


def differencing(data: dict[str, Any]) -> list[tuple[str, str]]:
    """What a server learns by repeating a round in a new run without one client."""
    return [("Differencing across runs (malicious server)", data["answer"])]


def fedavg_reference(data: dict[str, Any]) -> list[tuple[str, str]]:
    """fedkd's FedAvg against the plain-PyTorch reference on the same arrays."""
    lines = []
    for model, row in data["summary"].items():
        seeds = int(row["seeds"]["mean"])
        lines.append(
            (
                f"FedAvg vs `fedavg_plain.py` (`{model}`, {seeds} seeds)",
                f"fedkd {_pm(row['fedkd'], 100)}%, reference {_pm(row['reference'], 100)}%, "
                f"gap {_pm(row['gap'], 100)} points (last 5 rounds: "
                f"{_pm(row['gap_last5'], 100)})",
            )
        )
    return lines


def engine_population(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The Ray engine's secure round at a population: median of the rounds after the first."""
    lines = []
    for run in data["runs"]:
        steady = run["rounds"][1:] or run["rounds"]
        if run["error"] or not steady:
            continue

        def median(key: str, rounds: list[dict[str, Any]] = steady) -> float:
            return statistics.median(r[key] for r in rounds)

        clients, cohort = run["case"].removeprefix("pop-"), steady[0]["survivors"]
        lines.append(
            (
                f"Ray engine, {clients} clients, {cohort} a round, secure ({len(run['rounds'])}"
                f" rounds, {data['cpus']} cores)",
                f"{median('seconds'):.1f} s a round (clients {median('client'):.1f}, secure "
                f"aggregation {median('secagg'):.1f}, other {median('other'):.1f}); peak "
                f"{run['peak_memory_bytes'] / 2**30:.2f} GiB",
            )
        )
    return lines


def engine_comparison(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The same rounds on each engine in one run: the median round after the first, and each
    engine's largest teacher difference from the in-process run's ("n/a": not comparable,
    e.g. a client dropped out on that engine only)."""
    seconds: dict[str, list[float]] = {}
    gaps: dict[str, list[float | None]] = {}
    for run in data["runs"]:
        if not run["error"]:
            rounds = run["rounds"][1:] or run["rounds"]
            seconds.setdefault(run["engine"], []).extend(r["seconds"] for r in rounds)
            gaps.setdefault(run["engine"], []).append(run["teacher_gap"])
    if "ray" not in seconds or "flower" not in seconds:
        return []
    ray, flower = statistics.median(seconds["ray"]), statistics.median(seconds["flower"])

    def gap(engine: str) -> str:
        found = gaps[engine]
        return "n/a" if None in found else f"{max(g for g in found if g is not None):.0e}"

    return [
        (
            f"Ray engine vs Flower's simulation, `{data['runs'][0]['case']}` "
            f"({data['cpus']} cores)",
            f"{ray:.2f} s vs {flower:.2f} s a round: Ray {flower / ray:.1f}x faster; teachers "
            f"vs in-process, max abs diff: Ray {gap('ray')}, Flower {gap('flower')}",
        )
    ]


STUDIES: dict[str, Callable[[dict[str, Any]], list[tuple[str, str]]]] = {
    "split-stats-mnist": split_stats,
    "fedavg-reference-mnist": fedavg_reference,
    "differencing": differencing,
    "bench-engine-digits": engine_comparison,
    "bench-engine-idle": engine_comparison,
    "bench-engine-pop-1e4": engine_population,
    "bench-engine-pop-1e6": engine_population,
}


def summary_table(root: Path = RESULTS) -> str:
    """The Markdown table of every study whose ``results.json`` is present."""
    lines = ["| result | figure | source |", "|---|---|---|"]
    for name, render in STUDIES.items():
        path = root / name / "results.json"
        if path.is_file():
            for what, figure in render(json.loads(path.read_text())):
                lines.append(f"| {what} | {figure} | `docs/results/{name}/results.json` |")
    return "\n".join(lines) + "\n"


def with_summary(readme: str, table: str) -> str:
    """``readme`` with the text between the summary markers replaced by ``table``."""
    if START not in readme or END not in readme:
        raise ValueError(f"README.md lacks the markers {START!r} ... {END!r}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the summary is stale")
    args = parser.parse_args(argv)
    table = summary_table()
    readme = with_summary(README.read_text(), table)
    page = f"# Results summary\n\nGenerated by `make report` from the files named.\n\n{table}"
    pages = ((README, readme), (SUMMARY, page), (CONFIGURATION, reference_markdown()))
    if args.check:
        stale = [path.name for path, text in pages if path.read_text() != text]
        if stale:
            print(f"stale: {', '.join(stale)}; run `make report`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in pages:
        path.write_text(text)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
