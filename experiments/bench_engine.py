"""The same rounds on every engine, in one run: where each round's seconds go, and peak memory.

Engines: ``inprocess`` (every client called in this process), ``ray`` (fedkd's Ray engine,
``fedkd.engines``) and ``flower`` (Flower's simulation through ``flwr run``, on a private
SuperLink). Each round's seconds are split into

* **client**: the clients' compute in the train exchange, on its critical path (the busiest
  worker; in-process: all of it);
* **secagg**: the clients' compute in the secure-aggregation exchanges (critical path) plus
  the server's own secure-aggregation compute;
* **distill**: the server's distillation (and evaluation) of the student;
* **other**: the rest -- routing, serialisation, waiting, sampling, recording.

Flower's ClientApps cannot be timed from outside, so its client and client-side secagg
compute are the Ray engine's for the same round (the same seed runs the same client code on
the same number of cores); its **other** is then what Flower adds. Peak memory is the peak of
the summed proportional set size (PSS, shared pages split between their users) of every
process the run started (they carry a marker in their environment). The first round (warm-up
epochs, start-up) is reported but left out of the steady figures (median of the rest).
Equality: each engine's per-round teachers against the in-process run's (max abs diff) and
the final student accuracy.

    python -m experiments.bench_engine                       # every case -> runs/bench_engine
    python -m experiments.bench_engine --cases digits-20 --rounds 3
    nice -n 10 python -m experiments.bench_engine --cases pop-1e4 pop-1e5 pop-1e6

Results: ``<out>/results.json`` (every round of every run) and a printed table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments import PROJECT_ROOT
from fedkd.cli.processes import tagged_processes
from fedkd.data.fashion_mnist import DEBIAN_FOLDER
from fedkd.fl import keys
from fedkd.fl.contribution import STATS
from fedkd.transport import Envelope, ExchangeResult, Transport

MARKER = "FEDKD_BENCH_ENGINE"  # in the environment of every process a measured run starts
# Debian's dataset-fashion-mnist, else a shared/data folder beside the checkout (or above it)
FASHION_ROOTS = (
    DEBIAN_FOLDER,
    *(parent / "shared/data/fashion-mnist" for parent in PROJECT_ROOT.parents),
)


@dataclass(frozen=True)
class Case:
    """One federation, run on several engines."""

    name: str
    clients: int
    cohort: int
    engines: tuple[str, ...]
    config: Mapping[str, Any]


def population_config(data_root: str) -> dict[str, Any]:
    """A cross-device federation: shards drawn on demand from Fashion-MNIST (or synthetic)."""
    data: dict[str, Any] = {"dataset": "synthetic", "synthetic-samples": 30_000}
    if data_root:
        data = {"dataset": "idx", "data-root": data_root}
    return {
        **data,
        "partitioner": "population",
        "split-private": 0.8,
        "split-public": 1000,
        "split-test": 2000,
        "model": "mlp",
        "local-epochs": 1,
        "local-public-samples": 256,
        "distill-epochs": 5,
    }


def cases(data_root: str) -> dict[str, Case]:
    """The issue's cases: 20 clients on digits; 10^4 at 100 per round; 10^4-10^6 at 1,000."""
    pop = population_config(data_root)
    every = ("inprocess", "ray", "flower")
    table = [Case("digits-20", 20, 20, every, {"min-clients": 20})]
    table.append(Case("pop-1e4-c100", 10_000, 100, every, pop))
    for exponent in (4, 5, 6):
        n = 10**exponent
        table.append(Case(f"pop-1e{exponent}", n, 1000, ("ray",), pop))
    return {case.name: case for case in table}


class Timed:
    """A transport wrapper that adds up, per round, the clients' critical-path compute."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.rounds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def nodes(self) -> Sequence[int]:
        return self.inner.nodes()

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        result = self.inner.exchange(requests, timeout=timeout, group=group)
        kinds = {request.kind for request in requests.values()}
        part = "client_train" if keys.TRAIN in kinds else "client_secagg"
        self.rounds[group][part] += result.client_seconds
        self.rounds[group]["exchanges"] += result.seconds
        return result


class PeakMemory:
    """Samples the summed PSS of every process that carries ``MARKER=tag`` (its peak) and
    the CPU seconds each has used (their sum: a measure the machine's other load does not
    inflate, unlike seconds of wall clock)."""

    def __init__(self, tag: str, every: float = 0.5) -> None:
        self.tag, self.every, self.peak = tag, every, 0
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            pids = tagged_processes(MARKER, self.tag)
            self.peak = max(self.peak, sum(_pss(p) for p in pids))
            for pid in pids:
                self._cpu[pid] = max(self._cpu.get(pid, 0.0), _cpu(pid))


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class Run:
    """One case on one engine: its rounds, the split of their seconds, memory, equality."""

    case: str
    engine: str
    rounds: list[dict[str, Any]] = field(default_factory=list)
    peak_memory_bytes: int = 0
    wall_s: float = 0.0
    results: str = ""
    error: str = ""
    workers: list[dict[str, Any]] = field(default_factory=list)
    teacher_gap: float | None = None  # max abs teacher difference from the in-process run
    repeat: int = 0
    cpu_s: float = 0.0  # CPU seconds of every process of the run (start-up included)

    def steady_values(self, key: str) -> list[float]:
        return [r[key] for r in self.rounds[1:] or self.rounds if r.get(key) is not None]

    def steady(self, key: str) -> float:
        values = self.steady_values(key)
        return float(statistics.median(values)) if values else float("nan")


def split_round(row: Mapping[str, Any], timed: Mapping[str, float] | None) -> dict[str, Any]:
    """A history row's seconds split into client / secagg / distill / other."""
    seconds, distill = float(row["seconds"]), float(row.get("seconds_distill") or 0.0)
    server = float(row.get("seconds_secagg_server") or 0.0)
    out = {
        "round": row["round"],
        "seconds": seconds,
        "train_exchange": float(row.get("seconds_train") or 0.0),
        "secagg_exchanges": float(row.get("seconds_secagg") or 0.0),
        "secagg_server": server,
        "distill": distill,
        "student_accuracy": row.get("student_accuracy"),
        "survivors": row.get("survivors"),
    }
    if timed is not None:
        client, secagg = timed.get("client_train", 0.0), timed.get("client_secagg", 0.0) + server
        out.update(client=client, secagg=secagg, other=seconds - client - secagg - distill)
    return out


def _history(folder: Path) -> list[dict[str, Any]]:
    return list(json.loads((folder / "history.json").read_text()))


def run_library(case: Case, engine: str, run_config: dict[str, Any]) -> Run:
    """One case on the in-process transport or the Ray engine."""
    from fedkd.engines import run_federation

    run, wrapped = Run(case.name, engine), {}

    def wrap(inner: Transport) -> Transport:
        wrapped["timed"] = Timed(inner)
        return wrapped["timed"]

    def workers(transport: Any) -> None:
        if hasattr(transport, "stats"):
            run.workers = [vars(s) for s in transport.stats()]

    start = time.perf_counter()
    recorder = run_federation(
        {**run_config, "run-name": f"{run_config.get('run-name', case.name)}-{engine}"},
        case.clients,
        engine=engine,
        wrap=wrap,
        on_transport=workers,
    )
    run.wall_s, run.results = time.perf_counter() - start, str(recorder.path)
    timed = wrapped["timed"].rounds
    run.rounds = [split_round(r, timed.get(f"round-{r['round']}")) for r in _history(recorder.path)]
    return run


def run_flower(case: Case, run_config: dict[str, Any], borrowed: Run | None) -> Run:
    """One case through ``flwr run`` (Flower's simulation), client compute borrowed."""
    from fedkd.cli.launch import flwr_run

    run, start = Run(case.name, "flower"), time.perf_counter()
    launched = flwr_run(
        {**run_config, "run-name": f"{run_config.get('run-name', case.name)}-flower"},
        num_supernodes=case.clients,
        federation_config=["client-resources-num-cpus=1"],
        echo=False,
    )
    run.wall_s = time.perf_counter() - start
    if not launched.ok or launched.results is None:
        run.error = f"{launched.status}: {launched.cause}"
        return run
    run.results = str(launched.results)
    reference = {r["round"]: r for r in borrowed.rounds} if borrowed else {}
    for row in _history(launched.results):
        lent = reference.get(row["round"])
        timed = None
        if lent is not None and "client" in lent:
            timed = {"client_train": lent["client"], "client_secagg": lent["secagg"]}
            timed["client_secagg"] -= lent["secagg_server"]
        run.rounds.append(split_round(row, timed))
    return run


# ---------------------------------------------------------------------------- secure aggregation
def secagg_costs(
    cohorts: Sequence[int], length: int, seed: int, full_up_to: int
) -> list[dict[str, Any]]:
    """Per-client and server seconds of one secure round (a roster of the cohort, signed keys,
    the consistency stage), with the SecAgg+ degree ``secagg-neighbours = 0`` picks and, up
    to ``full_up_to`` clients, full SecAgg (O(n^2) for the round: minutes at n = 1,000)."""
    from fedkd.fl.cohort import plus_neighbours, threshold_for
    from fedkd.fl.config import SecAggSettings
    from fedkd.secagg.driver import run_secagg

    rows, rng, defaults = [], np.random.default_rng(seed), SecAggSettings()
    for n in cohorts:
        inputs = [rng.uniform(-1, 1, length) for _ in range(n)]
        graphs = [("secagg+", plus_neighbours(n, defaults.threshold))]
        graphs += [("full", n - 1)] if n <= full_up_to and graphs[0][1] != n - 1 else []
        for label, k in graphs:
            start = time.perf_counter()
            done = run_secagg(
                inputs,
                neighbours=k,
                threshold=threshold_for(k, defaults.threshold),
                roster=True,
                seed=seed,
                bits=defaults.bits,
            )
            rows.append(
                {
                    "cohort": n,
                    "graph": label,
                    "neighbours": k,
                    "vector_length": length,
                    "client_s_mean": done.client_seconds["total"],
                    "server_s": done.server_seconds["total"],
                    "bytes_up_per_client": done.bytes_up_per_client,
                    "wall_s": time.perf_counter() - start,
                }
            )
            print(
                f"secagg n={n} {label} k={k}: client {rows[-1]['client_s_mean']:.3f} s, "
                f"server {rows[-1]['server_s']:.2f} s",
                flush=True,
            )
    return rows


# ---------------------------------------------------------------------------- one run
def run_one(case: Case, engine: str, run_config: dict[str, Any], borrowed: Path | None) -> Run:
    """One case on one engine, in this process (the parent measures its memory)."""
    if engine == "flower":
        lent = None
        if borrowed is not None and borrowed.is_file():
            lent = Run(**json.loads(borrowed.read_text()))
        return run_flower(case, run_config, lent)
    return run_library(case, engine, run_config)


def measured(case: Case, engine: str, run_config: dict[str, Any], folder: Path) -> Run:
    """Run one (case, engine) in a child process, its processes' peak PSS sampled."""
    import subprocess

    name = str(run_config["run-name"])
    tag, out, ray_run = (
        uuid.uuid4().hex,
        folder / f"{name}-{engine}.json",
        folder / f"{name}-ray.json",
    )
    command = [
        sys.executable,
        "-m",
        "experiments.bench_engine",
        "--one",
        case.name,
        engine,
        "--config",
        json.dumps(run_config),
        "--json",
        str(out),
        "--borrow",
        str(ray_run),
    ]
    # Ray (the Ray engine's and Flower's simulation's) runs its workers at the driver's
    # priority: on a busy machine the engines then compete on equal terms with in-process.
    env = {**os.environ, MARKER: tag, "RAY_worker_niceness": "0"}
    # Fresh simulated nodes for every run: with one FEDKD_HOME their release ledgers refuse
    # the same seed's vectors for another cohort (as they must), and the bench measured that
    env["FEDKD_HOME"] = str(folder / f"home-{name}-{engine}")
    with PeakMemory(tag) as memory:
        done = subprocess.run(command, env=env)
    if done.returncode != 0 or not out.is_file():
        return Run(case.name, engine, error=f"exit code {done.returncode}")
    run = Run(**json.loads(out.read_text()))
    run.peak_memory_bytes, run.cpu_s = memory.peak, memory.cpu_seconds
    out.write_text(json.dumps(vars(run), indent=1))
    return run


def teacher_gap(run: Run, reference: Run) -> float | None:
    """Max abs difference of the per-round teachers from the reference run's (None: absent)."""
    gaps = []
    for row in run.rounds:
        name = f"teachers/round-{row['round']:03d}.npy"
        mine, theirs = Path(run.results) / name, Path(reference.results) / name
        if mine.is_file() and theirs.is_file():
            gaps.append(float(np.max(np.abs(np.load(mine) - np.load(theirs)))))
    return max(gaps) if gaps else None


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if v == v]
    return float(statistics.median(finite)) if finite else float("nan")


def print_table(runs: Sequence[Run]) -> None:
    """Per (case, engine), the median over repeats and steady rounds of the round and its
    split, and the best (least disturbed) steady round; the ratio of medians against Flower
    in the same case; CPU seconds per round of all its processes (start-up included)."""
    columns = ("round s", "best", "client", "secagg", "distill", "other", "other%", "peak GiB",
               "CPU s/r")  # fmt: skip
    print(f"\n{'case':14} {'engine':9} " + " ".join(f"{c:>8}" for c in columns), end=" ")
    print(f"{'flower/x':>8} {'teacher Δ':>9} {'student':>8} {'runs':>4}")
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.case, run.engine)].append(run)
    flower = {c: _median([r.steady("seconds") for r in g if r.rounds])
              for (c, e), g in groups.items() if e == "flower"}  # fmt: skip
    for (case, engine), group in groups.items():
        ok = [r for r in group if not r.error and r.rounds]
        if not ok:
            print(f"{case:14} {engine:9} failed: {group[0].error}")
            continue
        split = {k: _median([r.steady(k) for r in ok]) for k in ("seconds", "client", "secagg")}
        split.update({k: _median([r.steady(k) for r in ok]) for k in ("distill", "other")})
        best = min(v for r in ok for v in r.steady_values("seconds"))  # the least disturbed
        cells = [f"{split['seconds']:8.2f}", f"{best:8.2f}"]
        cells += [f"{split[k]:8.2f}" for k in ("client", "secagg", "distill", "other")]
        cells.append(f"{100 * split['other'] / split['seconds']:7.1f}%")
        cells.append(f"{max(r.peak_memory_bytes for r in ok) / 2**30:8.2f}")
        cells.append(f"{_median([r.cpu_s / len(r.rounds) for r in ok]):8.1f}")
        gaps = [r.teacher_gap for r in ok if r.teacher_gap is not None]
        gap = f"{max(gaps):.1e}" if gaps else "-"
        ratio = flower.get(case, float("nan")) / split["seconds"]
        print(f"{case:14} {engine:9} " + " ".join(cells), end=" ")
        print(f"{ratio:8.1f} {gap:>9} {ok[0].rounds[-1]['student_accuracy']:8.4f} {len(ok):4d}")


def run_case(case: Case, args: argparse.Namespace, folder: Path, repeat: int) -> list[Run]:
    """One case on each of its engines, one after another; teachers against in-process."""
    run_config = {
        **case.config,
        "num-rounds": args.rounds,
        "seed": args.seed,
        "fraction": (case.cohort - 0.5) / case.clients,
        "min-clients": case.cohort,
        "out-dir": str(folder),
        "run-name": f"{case.name}-r{repeat}",
    }
    done: dict[str, Run] = {}
    for engine in [e for e in case.engines if args.engines is None or e in args.engines]:
        print(f"== {case.name} on {engine} (repeat {repeat})", flush=True)
        done[engine] = measured(case, engine, run_config, folder)
        done[engine].repeat = repeat
    reference = done.get("inprocess")
    for run in done.values():
        # Flower numbers its simulated nodes at random: with fraction < 1 it samples other
        # clients than the in-process and Ray engines do (docs/engines.md).
        comparable = run.engine != "flower" or case.cohort == case.clients
        if reference is not None and run is not reference and comparable and run.results:
            run.teacher_gap = teacher_gap(run, reference)
    return list(done.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_engine", description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=None, help="default: all (none: --cases)")
    parser.add_argument("--engines", nargs="*", default=None, help="default: each case's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2, help="runs per (case, engine)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST IDX folder")
    parser.add_argument("--secagg-cohorts", type=int, nargs="*", default=[100, 1000])
    parser.add_argument("--secagg-full-up-to", type=int, default=100, metavar="N")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_engine"))
    parser.add_argument("--table", type=Path, help="print the table of a results.json")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "ENGINE"), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--borrow", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.table is not None:
        print_table([Run(**run) for run in json.loads(args.table.read_text())["runs"]])
        return 0
    root = args.data_root
    if root is None:
        found = (r for r in FASHION_ROOTS if (r / "train-labels-idx1-ubyte.gz").is_file())
        root = str(next(found, ""))
    table = cases(os.path.abspath(root) if root else "")
    if args.one:
        case, engine = table[args.one[0]], args.one[1]
        run = run_one(case, engine, json.loads(args.config), args.borrow)
        args.json.write_text(json.dumps(vars(run), indent=1))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="runs-", dir=args.out))
    runs: list[Run] = []
    for repeat in range(args.repeat):  # engines (and cases) alternate: load drifts between
        for name in list(table) if args.cases is None else args.cases:
            runs.extend(run_case(table[name], args, folder, repeat))
    results = {
        "command": "python -m experiments.bench_engine " + " ".join(argv or sys.argv[1:]),
        "cpus": os.cpu_count(),
        "runs": [vars(r) for r in runs],
        "secagg": [],
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print_table(runs)
    length = 1000 * 10 + 10 + len(STATS)  # the population cases' vector: public x classes...
    cohorts, full = args.secagg_cohorts, args.secagg_full_up_to
    results["secagg"] = secagg_costs(cohorts, length, args.seed, full) if cohorts else []
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nresults: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
