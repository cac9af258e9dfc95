"""The ``fedkd`` command: the federated run and every single-node experiment.

    fedkd run [--clients N] [--set key=value ...]    federated run through `flwr run`
    fedkd compare ...                                 FedKD vs FedAvg vs local vs central
    fedkd bench-secagg ...                            secure-aggregation benchmark
    fedkd <mode> ...                                  single-node modes (compression, probes, ...)

Each experiment is also ``python -m experiments.<name>``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from experiments.launch import PROJECT_ROOT, flwr_run

MODULES = {
    "compare": "experiments.compare",
    "bench-secagg": "experiments.bench_secagg",
    "compression": "experiments.compression",
    "probes": "experiments.probes",
    "continual": "experiments.continual",
    "attention": "experiments.attention",
    "uncertainty": "experiments.uncertainty",
    "attribution": "experiments.attribution",
    "rkd": "experiments.rkd",
}


def parse_assignments(items: list[str]) -> dict[str, object]:
    """``key=value`` strings to a run-config dict (numbers and booleans parsed)."""
    parsed: dict[str, object] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value: object = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    continue
        parsed[key.strip()] = value
    return parsed


def run_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fedkd run",
        description="Run the federated app (default: FedKD with secure aggregation on digits, "
        "10 clients) through `flwr run . --stream`, then stop the local SuperLink.",
    )
    parser.add_argument("--clients", type=int, default=10, help="simulated SuperNodes")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="run-config overrides, e.g. --set method=fedavg num-rounds=5",
    )
    parser.add_argument(
        "--federation",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra federation config, e.g. client-resources-num-cpus=1",
    )
    parser.add_argument("--out", default=str(PROJECT_ROOT / "runs"), help="results root")
    args = parser.parse_args(argv)
    run_config = {"out-dir": str(Path(args.out).resolve()), **parse_assignments(args.set)}
    result = flwr_run(run_config, num_supernodes=args.clients, federation_config=args.federation)
    if result.results is not None:
        print(f"\nresults: {result.results}")
        _print_summary(result.results)
    return result.returncode


def _print_summary(folder: Path) -> None:
    import json

    history = folder / "history.json"
    if not history.exists():
        return
    rows = json.loads(history.read_text())
    print(f"{'round':>5} {'student':>8} {'teacher':>8} {'clients':>8} {'surv':>5} {'sec':>6}")
    for row in rows:

        def fmt(value: object) -> str:
            return f"{value:8.4f}" if isinstance(value, float) else f"{'-':>8}"

        print(
            f"{row['round']:>5} {fmt(row['student_accuracy'])} {fmt(row['teacher_accuracy'])} "
            f"{fmt(row['client_accuracy_mean'])} {row['survivors']:>5} {row['seconds']:6.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ["run", *MODULES]
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        print("commands:", ", ".join(commands))
        return 0
    command, rest = argv[0], argv[1:]
    if command == "run":
        return run_main(rest)
    if command not in MODULES:
        print(f"unknown command {command!r}; known: {', '.join(commands)}", file=sys.stderr)
        return 2
    module = importlib.import_module(MODULES[command])
    return int(module.main(rest))


if __name__ == "__main__":
    raise SystemExit(main())
