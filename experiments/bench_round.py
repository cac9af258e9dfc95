"""What Flower's simulation adds to a FedKD round: the same round in-process and through Ray.

Both sides run the same library code with the same run config (clients, data, epochs, secure
aggregation): (a) ``fedkd.fl.experiment.simulate`` -- every client called in this process,
one after another, no messaging at all -- and (b) ``flwr run`` through Flower's Ray
simulation (``fedkd.cli.launch.flwr_run``), one run each, in this order, in one command.
Seconds per round come from each run's own ``history.json``; the first round (warm-up
epochs, Ray's start-up) is reported apart from the steady rounds.

    python -m experiments.bench_round                     # 20 clients, 4 rounds, digits
    python -m experiments.bench_round --clients 20 --set dataset=idx data-root=<mnist>
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedkd.cli.launch import flwr_run
from fedkd.fl.config import FedConfig
from fedkd.fl.experiment import simulate
from fedkd.fl.history import RoundRecord


def _parse_sets(items: list[str]) -> dict[str, Any]:
    from fedkd.cli.run_config import parse_assignments

    return parse_assignments(items)


def _summary(rows: list[RoundRecord] | list[dict[str, Any]], wall: float) -> dict[str, Any]:
    get = (lambda r, k: r[k]) if rows and isinstance(rows[0], dict) else getattr
    seconds = [float(get(r, "seconds")) for r in rows]
    steady = seconds[1:] or seconds
    parts = ("seconds_train", "seconds_secagg", "seconds_distill")
    return {
        "rounds": len(rows),
        "first_round_s": seconds[0] if seconds else None,
        "steady_round_s": statistics.median(steady) if steady else None,
        "steady_parts_s": {
            p: statistics.median([float(get(r, p)) for r in rows[1:] or rows]) for p in parts
        },
        "final_student_accuracy": float(get(rows[-1], "student_accuracy")) if rows else None,
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_round", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default="runs/bench_round")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="bench-round-", dir=out))
    run_config = {
        **FedConfig().to_dict(),
        "num-rounds": args.rounds,
        "min-clients": args.clients,
        "eval-clients": False,
        **_parse_sets(args.set),
        "out-dir": str(runs),
    }
    start = time.perf_counter()
    local = simulate({**run_config, "run-name": "in-process"}, args.clients)
    in_process = _summary(local.rows, time.perf_counter() - start)
    start = time.perf_counter()
    launched = flwr_run(
        {**run_config, "run-name": "flower"},
        num_supernodes=args.clients,
        federation_config=["client-resources-num-cpus=1"],
        echo=False,
    )
    if not launched.ok or launched.results is None:
        print(f"bench_round: the Flower run failed: {launched.cause}", file=sys.stderr)
        return 1
    rows = json.loads((launched.results / "history.json").read_text())
    flower = _summary(rows, time.perf_counter() - start)
    ratio = flower["steady_round_s"] / in_process["steady_round_s"]
    result = {
        "clients": args.clients,
        "run_config": run_config,
        "in_process": in_process,
        "flower_simulation": flower,
        "steady_round_ratio_flower_over_in_process": ratio,
    }
    (out / "bench_round.json").write_text(json.dumps(result, indent=2))
    print(f"{'':24} {'first round':>12} {'steady round':>13} {'student':>8}")
    for name, row in (("in-process (library)", in_process), ("Flower simulation", flower)):
        print(
            f"{name:24} {row['first_round_s']:11.1f}s {row['steady_round_s']:12.1f}s "
            f"{row['final_student_accuracy']:8.4f}"
        )
    print(f"steady round, Flower / in-process: {ratio:.2f}x  ({out / 'bench_round.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
