"""The ``fedkd`` command: the federated run and every single-node experiment::

    fedkd run [--clients N] [--engine ray|flower] [--log T] [--set key=value ...]
                                                      federated run (docs/engines.md)
    fedkd run --connection NAME [--resume FOLDER]     the same on a deployed SuperLink
    fedkd compare ...                                 FedKD vs FedMD, FedDF, FedAvg, FedProx, ...
    fedkd split-stats ...                             what each partitioner does to the same pool
    fedkd fedavg-reference ...                        FedAvg against a plain-PyTorch FedAvg
    fedkd model-choice ...                            student architectures under FedAvg and FedKD
    fedkd bench-secagg ...                            secure-aggregation benchmark
    fedkd status RUN_FOLDER                           a (deployed) run's round, survivors, faults
    fedkd <mode> ...                                  single-node modes (compression, probes, ...)

``run``, ``keys`` and ``status`` are the installed package's; the studies and benchmarks are
the checkout's ``experiments/`` (each also ``python -m experiments.<name>``) and need one.

Exit codes: 0 the run completed; 1 it failed (the cause is printed on one line);
2 bad command line or run config (nothing was started); 124 timed out;
130 / 143 stopped by Ctrl-C / SIGTERM (everything started was stopped, results kept).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import textwrap
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

from fedkd.cli.launch import Interrupted, deployed_run, flwr_run, report
from fedkd.cli.run_config import (
    CHECKOUT,
    absolute_paths,
    app_run_config,
    check_run_config,
    flower_app,
    parse_assignments,
)

__all__ = ["main", "parse_assignments", "print_summary", "run_main"]

EXIT_USAGE = 2
DEFAULT_CLIENTS = 10
ENGINES = ("ray", "flower")
DEFAULT_ENGINE = "ray"  # measured: docs/engines.md
LAUNCH_FILE = "launch.json"
MODULES = {
    "compare": "experiments.compare",
    "split-stats": "experiments.split_stats",
    "fedavg-reference": "experiments.fedavg_reference",
    "model-choice": "experiments.model_choice",
    "bench-secagg": "experiments.bench_secagg",
    "bench-round": "experiments.bench_round",
    "keys": "fedkd.cli.keygen",
    "attack": "experiments.attacks.cli",
    "deploy-local": "experiments.deploy_local",
    "status": "fedkd.cli.status",
    "stop-superlink": "fedkd.cli.launch",
    "fault-drill": "experiments.fault_drill",
    "compression": "experiments.compression",
    "probes": "experiments.probes",
    "continual": "experiments.continual",
    "attention": "experiments.attention",
    "uncertainty": "experiments.uncertainty",
    "attribution": "experiments.attribution",
    "rkd": "experiments.rkd",
}


def run_parser() -> argparse.ArgumentParser:
    """The arguments of ``fedkd run``."""
    from fedkd.fl.config_doc import reference_text

    description = (
        "Run the federated app (default: FedKD with secure aggregation on digits, 10 clients) "
        "on fedkd's Ray engine in this process (--engine ray), or through `flwr run . "
        "--stream` on a private local SuperLink (--engine flower: own Flower home, own free "
        "ports); stop everything it started."
    )
    parser = argparse.ArgumentParser(
        prog="fedkd run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(description, 100),
        epilog="run-config keys (--set key=value; docs/configuration.md):\n"
        + reference_text()
        + "\n\nexit codes: 0 completed, 1 failed, 2 bad config (nothing started), "
        "124 timed out, 130/143 interrupted",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=None,
        help="simulated SuperNodes (default 10; with --resume, the stopped run's number)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=None,
        help=f"what carries the round (default {DEFAULT_ENGINE}; with --resume, the stopped "
        "run's); both run the same round and results agree for the same seed",
    )
    parser.add_argument(
        "--ray-address",
        default="",
        help="--engine ray: a running Ray cluster (host:port, or 'auto'; default RAY_ADDRESS, "
        "else a local Ray on 127.0.0.1)",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_FOLDER",
        help="continue a stopped run (e.g. runs/fedkd-feddf-20261202-021226) from its last "
        "completed round, with its config; --set may change num-rounds",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="run-config overrides, e.g. --set method=fedavg num-rounds=5",
    )
    parser.add_argument(
        "--log",
        default=None,
        metavar="TRACKERS",
        help="where each round's numbers go besides history.json (run-config key 'log'): "
        "tensorboard (default), mlflow, wandb, comma-separated, or none",
    )
    parser.add_argument(
        "--federation",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra federation config, e.g. client-resources-num-cpus=1 "
        "client-resources-num-gpus=0.25 (both engines); Ray engine also num-workers, "
        "state-budget-mb",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="results root (default: runs/ in the current folder; in a deployment, the "
        "ServerApp's default)",
    )
    _add_flower_arguments(parser)
    parser.add_argument("--timeout", type=float, default=None, help="stop after S seconds")
    parser.add_argument("--quiet", action="store_true", help="do not echo the run's log")
    return parser


def _add_flower_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of runs through Flower (``--engine flower``, ``--connection``)."""
    parser.add_argument(
        "--connection",
        default="",
        metavar="NAME",
        help="run on a deployed SuperLink instead of a local simulation: a connection of "
        "$FLWR_HOME/config.toml (as for `flwr run . NAME`); with --resume the stopped run "
        "continues there",
    )
    parser.add_argument(
        "--server-path",
        default=None,
        metavar="PATH",
        help="with --connection --resume: the run folder's path where the ServerApp runs "
        "(e.g. /app/runs/NAME in the compose stack; default: RUN_FOLDER)",
    )
    parser.add_argument(
        "--install-deps",
        action="store_true",
        help="let Flower install the app's dependencies per run (uv sync into a fresh "
        "environment; downloads several GB the first time) instead of using this one",
    )
    parser.add_argument(
        "--app",
        type=Path,
        default=None,
        metavar="DIR",
        help="Flower app folder, for --engine flower and --connection (default: the fedkd "
        "checkout this command runs from; an installed wheel has none)",
    )


def run_main(argv: list[str]) -> int:
    """``fedkd run``: validate the config, run it, report; returns the exit code."""
    args = run_parser().parse_args(argv)
    app = args.app.resolve() if args.app is not None else None
    try:
        out = args.out or ("" if args.connection else "runs")  # made absolute: here
        overrides = absolute_paths(
            {
                **({"out-dir": out} if out else {}),
                **({"log": args.log} if args.log is not None else {}),
                **parse_assignments(args.set),
            }
        )
        clients, engine = args.clients, args.engine
        if args.resume is not None:
            overrides, clients = resume_overrides(args.resume, overrides, clients, app)
            engine = engine or recorded_engine(args.resume)
            if args.connection and args.server_path:
                overrides["resume"] = args.server_path
        clients = DEFAULT_CLIENTS if clients is None else clients
        engine = engine or DEFAULT_ENGINE
        if clients < 1:
            raise ValueError(f"--clients must be >= 1, got {clients}")
        if args.connection or engine == "flower":
            app = flower_app(app, "--connection" if args.connection else "--engine flower")
        check_run_config(overrides, clients, app, local=not args.connection)
    except ValueError as error:
        print(f"fedkd run: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.connection:
        result = deployed_run(
            overrides,
            args.connection,
            app_dir=app,
            echo=not args.quiet,
            timeout=args.timeout,
        )
        if result.results is not None and result.results.is_dir():
            print_summary(result.results)
        report(result)
        return result.returncode
    if engine == "ray":
        from fedkd.cli.ray_launch import ray_resources, ray_run

        try:
            ray_resources(args.federation)
        except ValueError as error:
            print(f"fedkd run: {error}", file=sys.stderr)
            return EXIT_USAGE
        result = ray_run(
            overrides,
            num_clients=clients,
            federation_config=args.federation,
            address=args.ray_address,
            echo=not args.quiet,
            timeout=args.timeout,
            app_dir=app,
        )
    else:
        result = flwr_run(
            overrides,
            num_supernodes=clients,
            federation_config=args.federation,
            echo=not args.quiet,
            timeout=args.timeout,
            install_dependencies=args.install_deps,
            app_dir=app,
        )
    if result.results is not None:
        record_launch(result.results, clients, args.federation, engine)
        print_summary(result.results)
    report(result)
    return result.returncode


def record_launch(
    folder: Path, clients: int, federation: list[str], engine: str = "flower"
) -> None:
    """Write ``launch.json`` (clients, federation config, engine) so ``--resume`` can repeat
    them."""
    if folder.is_dir():
        payload = {"clients": clients, "federation": federation, "engine": engine}
        (folder / LAUNCH_FILE).write_text(json.dumps(payload, indent=2) + "\n")


def resume_overrides(
    folder: Path, overrides: dict[str, object], clients: int | None, app_dir: Path | None = None
) -> tuple[dict[str, object], int | None]:
    """The stopped run's own config (``config.json``) with ``resume`` set and the user's
    ``--set`` values on top, and its number of clients (from ``launch.json`` when recorded).

    Raises
    ------
    ValueError
        When ``folder`` is not a run folder, or ``--clients`` differs from the stopped run's.
    """
    folder = folder.resolve()
    saved_config = folder / "config.json"
    if not saved_config.is_file():
        raise ValueError(f"--resume {folder}: not a run folder (no config.json)")
    known = app_run_config(app_dir)
    saved = {k: v for k, v in json.loads(saved_config.read_text()).items() if k in known}
    given = {k: v for k, v in overrides.items() if k != "out-dir"}
    merged = {**saved, **given, "resume": str(folder)}
    launch = folder / LAUNCH_FILE
    if launch.is_file():
        recorded = int(json.loads(launch.read_text())["clients"])
        if clients is not None and clients != recorded:
            raise ValueError(
                f"--resume: the stopped run had {recorded} clients; resume it with "
                f"--clients {recorded} (partitions depend on it)"
            )
        clients = recorded
    return merged, clients


def recorded_engine(folder: Path) -> str | None:
    """The engine a stopped run used (``launch.json``; runs from before engines: Flower)."""
    launch = folder.resolve() / LAUNCH_FILE
    if not launch.is_file():
        return None
    return str(json.loads(launch.read_text()).get("engine", "flower"))


def print_summary(folder: Path) -> None:
    """The per-round table of a results folder's ``history.json`` (what exists of it)."""
    history = folder / "history.json"
    if not history.exists():
        return
    rows = json.loads(history.read_text())
    print(f"\n{'round':>5} {'student':>8} {'teacher':>8} {'clients':>8} {'surv':>5} {'sec':>6}")

    def cell(row: dict[str, object], key: str, width: int = 8, digits: int = 4) -> str:
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{'-':>{width}}"
        return f"{value:{width}.{digits}f}" if isinstance(value, float) else f"{value:>{width}}"

    for row in rows:
        print(
            f"{row.get('round', '?'):>5} {cell(row, 'student_accuracy')} "
            f"{cell(row, 'teacher_accuracy')} {cell(row, 'client_accuracy_mean')} "
            f"{cell(row, 'survivors', 5)} {cell(row, 'seconds', 6, 1)}"
        )
    if any(row.get("dp_noise_std") is not None for row in rows):  # null (NaN) without DP
        epsilon = max(float(row.get("dp_epsilon") or 0.0) for row in rows)
        print(
            f"client-level DP, epsilon spent {epsilon:.2f}: 'clients' is the noised release "
            "of their accuracies (it can leave [0, 1]); read the student"
        )
    print_skipped(rows)


def print_skipped(rows: list[dict[str, Any]]) -> None:
    """Why the rounds that did not complete did not, each reason once, with the clients'
    most common reason for dropping out of them (a table of dashes says nothing)."""
    skipped = [row for row in rows if row.get("status", "ok") != "ok"]
    if not skipped:
        return
    print(f"\n{len(skipped)} of {len(rows)} round(s) did not complete:")
    for (status, reason), count in Counter(
        (r["status"], r.get("reason", "")) for r in skipped
    ).items():
        print(f"  {count} x {status}: {reason}")
    dropped = Counter(why for row in skipped for why in row.get("dropped_reasons") or [])
    if dropped:
        why, count = dropped.most_common(1)[0]
        print(f"  most common client reason ({count} x): {why}")


def load_command(command: str) -> ModuleType | None:
    """The module of a ``fedkd`` command; ``None`` for a study when there is no checkout.

    The studies live in the checkout's ``experiments/``, which is not installed (no generic
    top-level names in site-packages): the checkout this package runs from is put on the path.
    """
    name = MODULES[command]
    if CHECKOUT is not None and str(CHECKOUT) not in sys.path:
        sys.path.append(str(CHECKOUT))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == "experiments":
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fedkd`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ["run", *MODULES]
    if not argv or argv[0] in ("-h", "--help"):
        print((__doc__ or "").replace("::\n", ":\n", 1))  # "::" is for the docs site
        print("commands:", ", ".join(commands))
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "run":
            return run_main(rest)
        if command not in MODULES:
            print(f"unknown command {command!r}; known: {', '.join(commands)}", file=sys.stderr)
            return EXIT_USAGE
        module = load_command(command)
        if module is None:
            print(
                f"fedkd {command}: a study of the checkout's experiments/ folder; run it from "
                "a fedkd checkout (pip install -e . there)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return int(module.main(rest))
    except KeyboardInterrupt as error:  # before or after a launch; a launch handles its own
        print("\ninterrupted", file=sys.stderr)
        return 128 + Interrupted.caught(error).signum


def entry() -> None:
    """The console script: :func:`main`, then exit with its code.

    Once Ray was loaded the process leaves with ``os._exit`` after flushing, skipping the
    interpreter's finalisation: Ray's core-worker threads can crash it after a
    ``ray.shutdown()`` that followed a Ctrl-C (CI saw SIGSEGV, exit -11 instead of 130, after
    everything was written, printed and every Ray process swept).
    """
    code = main()
    if "ray" not in sys.modules:
        raise SystemExit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
