"""A soak of the compose deployment: many SuperNode containers, many rounds, faults at random.

    python deploy/compose_soak.py --supernodes 20 --rounds 50 --tls --seed 0 --fault-every 4 \\
        --work-dir /tmp/fedkd-soak            (as root, after deploy/build_images.sh)

Brings up the compose stack (``deploy/compose_stack.py``: secure aggregation with real
identities, TLS with ``--tls``) with N SuperNode containers on loopback and runs FedKD for R
rounds while a seeded random plan (``fault_plan``) fires one fault every few rounds, at a random
stage of that round: ``docker kill`` of a SuperNode container (started again seconds later), the
server side killed (SuperLink and ServerApp containers; restarted, the run resumed), a client's
link cut for a while, a client's CPUs capped (``docker update --cpus``) for a while.
Meanwhile every process of every container is sampled (``samples.jsonl``: resident memory and
open file descriptors, every ``--sample-every`` seconds). At the end it writes
``<work-dir>/results.json``: the rounds recorded (and their status), the faults fired, whether
the history and checkpoints are complete, and each long-lived process's memory and file
descriptors from the end of round 5 to the end of the run (growth in percent); with
``--check`` also the replay check of ``experiments/fault_check.py`` (exact survivors' sums).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _path in (HERE, HERE.parent):  # deploy/ is not a package; experiments/ and fedkd/ are
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from compose_stack import RESULTS_IN_APP, ComposeStack  # noqa: E402

from experiments.fault_drill import ANY, STAGES, Drill, Fault  # noqa: E402
from fedkd.cli.processes import descendants  # noqa: E402
from fedkd.fl.journal import read_journal  # noqa: E402

SOAK_RUN = (
    "local-epochs=1 warmup-epochs=0 distill-epochs=1 eval-clients=false "
    "stage-timeout=600 secagg-timeout=300 node-wait=600"
)
# Faults drawn, with weights: most are lost clients, as in the field.
KINDS = (("kill-node", 4), ("cut-link", 2), ("slow-cpu", 1), ("kill-server", 1))


def fault_plan(rounds: int, *, every: int, seed: int, first: int = 2) -> list[Fault]:
    """One fault every ``every`` rounds from round ``first``, at a random stage; node faults hit
    one of the round's participants."""
    rng = random.Random(seed)
    plan = []
    for number in range(first, rounds + 1, every):
        kind = rng.choices([k for k, _ in KINDS], weights=[w for _, w in KINDS])[0]
        stage = rng.choice(STAGES)
        partition = ANY  # one of the round's participants, drawn when the fault fires
        seconds = {"kill-node": 5.0, "cut-link": 30.0, "slow-cpu": 300.0, "kill-server": 0.0}
        plan.append(Fault(number, stage, kind, partition, seconds[kind]))
    return plan


# ------------------------------------------------------------------------------ sampling
def _proc(pid: int) -> dict[str, Any] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    rss = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")), 0
    )
    name = " ".join(Path(part.decode(errors="replace")).name for part in command[:2] if part)
    return {"pid": pid, "started": started, "cmd": name, "rss_kb": rss, "fds": fds}


class Sampler:
    """Samples every process below each of ``roots()`` (name -> pid: a container's main
    process, a loopback component) into ``path`` (JSON lines)."""

    def __init__(self, roots: Callable[[], dict[str, int]], path: Path, every: float) -> None:
        self.roots, self.path, self.every = roots, path, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        with open(self.path, "a") as out:
            while not self._stop.is_set():
                now = time.time()
                try:
                    roots = self.roots()  # running components only
                except (subprocess.SubprocessError, OSError):
                    roots = {}
                for service, root in sorted(roots.items()):
                    for pid in [root, *descendants([root])]:
                        info = _proc(pid)
                        if info is not None:
                            out.write(json.dumps({"t": now, "service": service, **info}) + "\n")
                out.flush()
                self._stop.wait(self.every)


def memory_growth(
    samples: Path, round_ends: dict[int, float], *, first: int = 5, min_rounds: int = 10
) -> list[dict[str, Any]]:
    """Resident memory and open fds of each long-lived process, from the end of round
    ``first`` (or, for a process started later by a fault, the end of the first round it lived
    through whole) to the last round end it saw; processes that saw fewer than ``min_rounds``
    round ends in that span (one ClientApp per message, say) are left out."""
    series: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for line in samples.read_text().splitlines():
        row = json.loads(line)
        series.setdefault((row["service"], row["pid"], row["started"]), []).append(row)
    ends = sorted((n, t) for n, t in round_ends.items() if n >= first)
    table = []
    for (service, pid, _), rows in sorted(series.items()):
        born, last_seen = rows[0]["t"], rows[-1]["t"]
        span = [(n, t) for n, t in ends if t >= born + 1 and t <= last_seen]
        if len(span) < min_rounds:
            continue
        (r0, t0), (r1, t1) = span[0], span[-1]
        start = min(rows, key=lambda r: abs(r["t"] - t0))
        end = min(rows, key=lambda r: abs(r["t"] - t1))
        table.append(
            {
                "service": service,
                "pid": pid,
                "cmd": start["cmd"],
                "rounds": [r0, r1],
                "rss_mb_start": round(start["rss_kb"] / 1024, 1),
                "rss_mb_end": round(end["rss_kb"] / 1024, 1),
                "rss_growth_pct": round(100 * (end["rss_kb"] / start["rss_kb"] - 1), 2),
                "fds_start": start["fds"],
                "fds_end": end["fds"],
            }
        )
    return table


# ------------------------------------------------------------------------------ the soak
def round_ends(folder: Path) -> dict[int, float]:
    """Round -> when it was committed or abandoned (the journal's clock)."""
    return {
        int(e["round"]): float(e["time"])
        for e in read_journal(folder).events
        if e["event"] in ("round", "abandon")
    }


def soak(args: argparse.Namespace) -> dict[str, Any]:
    work_dir: Path = args.work_dir
    plan = (
        [Fault.parse(text) for text in args.fault]
        if args.fault
        else fault_plan(args.rounds, every=args.fault_every, seed=args.seed)
    )
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "plan.json").write_text(json.dumps([str(f) for f in plan]))
    cuts = {f.partition for f in plan if f.action == "cut-link"}
    relayed = sorted(range(args.supernodes) if ANY in cuts else cuts)
    overrides = [
        SOAK_RUN,
        f"num-rounds={args.rounds} min-clients={args.supernodes}",
        *args.run_config,
    ]
    started = time.time()
    target, drill_options, stop = _deployment(args, work_dir, relayed)
    sampler = Sampler(drill_options.pop("roots"), work_dir / "samples.jsonl", args.sample_every)
    sampler.start()
    try:
        drill = Drill(target, plan, overrides, run_name="soak", **drill_options)
        result = drill.run(args.timeout)
        sampler.stop()
        folder = work_dir / "runs"
        _copy(result.folder, folder)
    finally:
        sampler.stop()
        stop()
    return _report(args, plan, result, folder, work_dir, time.time() - started)


def _deployment(
    args: argparse.Namespace, work_dir: Path, relayed: list[int]
) -> tuple[Any, dict[str, Any], Callable[[], object]]:
    """The soak's target: the compose stack (default), or with ``--engine loopback`` the same
    topology as processes on this machine (``experiments/deployment.py``)."""
    if args.engine == "loopback":
        from experiments.deployment import CONNECTION_NAME, LoopbackDeployment

        loop = LoopbackDeployment(
            args.supernodes, work_dir, port=19591, tls=args.tls, keys=True, relayed=relayed
        )
        loop.start(patience=600)
        runs = loop.work_dir / "runs"
        options = {
            "connection": CONNECTION_NAME,
            "results_on_host": runs,
            "results_in_app": str(runs),
            "auto_resume": args.auto_resume,
            "roots": lambda: {
                name: p.pid for name, p in loop.processes.items() if p.poll() is None
            },
        }
        return loop, options, loop.stop_all
    stack = ComposeStack(work_dir, supernodes=args.supernodes, tls=args.tls, relayed=relayed)
    stack.up()
    options = {
        "connection": stack.e2e.CONNECTION,
        "results_on_host": stack.results_on_host,
        "results_in_app": RESULTS_IN_APP,
        "auto_resume": args.auto_resume,
        "roots": stack.main_pids,
    }
    return stack, options, stack.down


def _copy(source: Path, target: Path) -> None:
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        target.mkdir(parents=True)  # the run never opened its folder: an empty report


def _report(
    args: argparse.Namespace,
    plan: list[Fault],
    result: Any,
    folder: Path,
    work_dir: Path,
    seconds: float,
) -> dict[str, Any]:
    history = (
        json.loads((folder / "history.json").read_text())
        if (folder / "history.json").is_file()
        else []
    )
    statuses = [row["status"] for row in history]
    ok_rounds = [row["round"] for row in history if row["status"] == "ok"]
    teachers = sorted(int(p.stem.split("-")[1]) for p in (folder / "teachers").glob("round-*.npy"))
    checkpoints = sorted(p.name for p in (folder / "checkpoints").glob("round-*.pt"))
    ends = round_ends(folder)
    first = 5 if args.rounds >= 15 else 1  # a short soak measures from its first round
    growth = memory_growth(
        work_dir / "samples.jsonl",
        ends,
        first=first,
        min_rounds=max(1, min(10, args.rounds - first)),
    )
    report: dict[str, Any] = {
        "command": "python deploy/compose_soak.py " + shlex.join(sys.argv[1:]),
        "engine": args.engine,
        "supernodes": args.supernodes,
        "rounds": args.rounds,
        "tls": args.tls,
        "seed": args.seed,
        "status": result.status,
        "seconds": round(seconds, 1),
        "flower_runs": result.flower_runs,
        "faults_planned": [str(f) for f in plan],
        "faults_fired": result.fired,
        "rounds_recorded": len(history),
        "rounds_in_order": [row["round"] for row in history] == list(range(1, len(history) + 1)),
        "rounds_by_status": {s: statuses.count(s) for s in sorted(set(statuses))},
        "teachers_complete": teachers == ok_rounds,
        "checkpoint": checkpoints[-1] if checkpoints else None,
        "checkpoint_is_last_ok_round": bool(ok_rounds)
        and checkpoints == [f"round-{ok_rounds[-1]:03d}.pt"]
        and (folder / "student.pt").is_file(),
        "summary_written": (folder / "summary.json").is_file(),
        "memory_from_round": first,
        "processes": growth,
        "max_rss_growth_pct": max((p["rss_growth_pct"] for p in growth), default=None),
        "max_fds_growth": max((p["fds_end"] - p["fds_start"] for p in growth), default=None),
    }
    if args.check and history:
        from experiments.fault_check import check_run

        report["check"] = check_run(folder, args.supernodes).as_dict()
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The soak's command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supernodes", type=int, default=20)
    parser.add_argument(
        "--engine",
        choices=("compose", "loopback"),
        default="compose",
        help="SuperNode containers (compose) or the same processes on loopback",
    )
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fault-every", type=int, default=4, help="rounds between faults")
    parser.add_argument("--fault", action="append", default=[], help="explicit plan (drill syntax)")
    parser.add_argument("--run-config", action="append", default=[], metavar="'K=V ...'")
    parser.add_argument("--sample-every", type=float, default=30.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=6 * 3600.0)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/fedkd-soak"))
    parser.add_argument("--check", action="store_true", help="replay check (exact sums)")
    parser.add_argument(
        "--auto-resume",
        type=int,
        default=3,
        help="resume the run this many times when it dies of a fault no plan fired",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="recompute results.json from a finished soak's work dir (runs/, samples.jsonl)",
    )
    args = parser.parse_args(argv)
    args.work_dir = args.work_dir.resolve()
    return args


def report_again(args: argparse.Namespace) -> dict[str, Any]:
    """The report of a soak that ran, from what it left in its work dir."""
    from types import SimpleNamespace

    work_dir: Path = args.work_dir
    plan = [Fault.parse(text) for text in json.loads((work_dir / "plan.json").read_text())]
    old = json.loads((work_dir / "results.json").read_text())
    result = SimpleNamespace(
        status=old["status"], flower_runs=old["flower_runs"], fired=old["faults_fired"]
    )
    return _report(args, plan, result, work_dir / "runs", work_dir, old["seconds"])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = report_again(args) if args.report_only else soak(args)
    (args.work_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "processes"}, indent=2))
    ok = (
        report["status"] == "finished:completed"
        and report["rounds_recorded"] == args.rounds
        and report["rounds_in_order"]
        and report["teachers_complete"]
        and report["checkpoint_is_last_ok_round"]
        and report.get("check", {"ok": True})["ok"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
