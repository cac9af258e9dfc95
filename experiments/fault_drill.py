"""Fault drills on a real loopback deployment: kill, cut or throttle at a chosen round and stage.

    python -m experiments.fault_drill --supernodes 3 --keys --rounds 3 \\
        --fault 1:share_keys:kill-node:2 --fault 2:masked_input:kill-server [--check]

A fault is ``ROUND:STAGE:ACTION[:PARTITION[:SECONDS]]`` (PARTITION ``any``: one of the round's
participants, drawn when it fires). It fires when the server's round journal
(``journal.jsonl``, written before each request goes out) shows round ROUND asking for STAGE
(``train``, ``share_keys``, ``masked_input``, ``consistency``, ``unmask``):

- ``kill-node``: SIGKILL SuperNode PARTITION and all it started; start it again SECONDS later
  (default 2; a new process: a new node id and a fresh state);
- ``kill-server``: SIGKILL the SuperLink, its SuperExec and the ServerApp; start the SuperLink
  again on its database, stop the dead run (``flwr stop``) and resume the run
  (``resume=<folder>``), as ``fedkd run --resume`` does;
- ``cut-link``: drop SuperNode PARTITION's connection for SECONDS (default 20), then restore it;
- ``slow-cpu``: cap client PARTITION (its SuperNode and ClientApps) at 5% of a core for SECONDS
  (default 300), then lift the cap (a CPU cgroup quota, the mechanism of ``docker --cpus``).

With ``--check`` the result is held against :mod:`experiments.fault_check`: every round once,
no client asked twice to release for one round, each completed round's teacher equal to the
one computed from the surviving clients' own plaintext contributions.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from experiments.deployment import CONNECTION_NAME, FlwrRun, LoopbackDeployment, toml_string
from fedkd.cli.flower_status import stop_run, wait_for_status
from fedkd.fl.journal import JOURNAL_FILE, JournalState, read_journal

STAGES = ("train", "share_keys", "masked_input", "consistency", "unmask")
ACTIONS = {"kill-node": 2.0, "kill-server": 0.0, "cut-link": 20.0, "slow-cpu": 300.0}
SLOW_CPUS = 0.05  # the share of a core a slowed client keeps
ANY = -1  # partition "any": one of the round's participants, drawn when the fault fires
SMALL_RUN = (
    "local-epochs=1 warmup-epochs=0 distill-epochs=1 eval-clients=false "
    "stage-timeout=120 secagg-timeout=40"
)


@dataclass(frozen=True)
class Fault:
    """One scheduled fault (see the module docstring for the syntax)."""

    round: int
    stage: str
    action: str
    partition: int = 0
    seconds: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Fault:
        parts = text.split(":")
        if len(parts) < 3 or len(parts) > 5:
            raise ValueError(f"fault {text!r}: expected ROUND:STAGE:ACTION[:PARTITION[:SECONDS]]")
        if parts[1] not in STAGES:
            raise ValueError(f"fault {text!r}: stage must be one of {', '.join(STAGES)}")
        if parts[2] not in ACTIONS:
            raise ValueError(f"fault {text!r}: action must be one of {', '.join(ACTIONS)}")
        seconds = float(parts[4]) if len(parts) == 5 else ACTIONS[parts[2]]
        named = parts[3] if len(parts) >= 4 else "0"
        partition = ANY if named == "any" else int(named)
        return cls(int(parts[0]), parts[1], parts[2], partition, seconds)

    def __str__(self) -> str:
        partition = "any" if self.partition == ANY else str(self.partition)
        return f"{self.round}:{self.stage}:{self.action}:{partition}:{self.seconds:g}"


@dataclass
class DrillResult:
    """What a drill did: the run folder, the Flower runs, the faults fired and when."""

    folder: Path
    flower_runs: list[int]
    fired: list[dict[str, object]] = field(default_factory=list)
    status: str = "unknown"
    seconds: float = 0.0

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


class FaultTarget(Protocol):
    """What a drill needs of a deployment (loopback processes or the compose stack)."""

    cli_env: dict[str, str]

    def submit(self, overrides: Sequence[str]) -> FlwrRun: ...
    def kill_node(self, index: int) -> None: ...
    def restart_node(self, index: int) -> None: ...
    def kill_server(self) -> None: ...
    def restart_server(self) -> None: ...
    def resume(self, folder: Path, folder_in_app: str) -> FlwrRun: ...
    def cut_link(self, index: int) -> None: ...
    def restore_link(self, index: int) -> None: ...
    def throttle(self, index: int, cpus: float) -> None: ...
    def unthrottle(self, index: int) -> None: ...


class Drill:
    """Runs one federated run on ``target`` and fires ``faults`` as the journal shows their
    round and stage.

    ``results_on_host`` is where this process reads the ServerApp's results root,
    ``results_in_app`` where the ServerApp writes it (the same folder for loopback processes,
    a volume in the compose stack); the run is named ``run_name``.
    """

    def __init__(
        self,
        target: FaultTarget,
        faults: Sequence[Fault],
        overrides: Sequence[str],
        *,
        connection: str,
        results_on_host: Path,
        results_in_app: str,
        run_name: str = "drill",
        auto_resume: int = 0,
    ) -> None:
        self.target, self.faults, self.connection = target, list(faults), connection
        self.folder = results_on_host / run_name
        self.folder_in_app = f"{results_in_app.rstrip('/')}/{run_name}"
        self.overrides = [
            *overrides,
            f"out-dir={toml_string(results_in_app)}",
            f"run-name={toml_string(run_name)}",
        ]
        self.fired: list[dict[str, object]] = []
        self.later: list[tuple[float, str, int]] = []  # (when, what, partition)
        self.start = time.monotonic()
        self.auto_resume = auto_resume  # unplanned ends of the run to resume from
        self._journal_size, self._journal_state = -1, JournalState()

    def run(self, timeout: float) -> DrillResult:
        self.start = time.monotonic()
        deadline = self.start + timeout
        run = self._launch(lambda: self.target.submit(self.overrides))
        pending = list(self.faults)
        while True:
            asked = self._asked()
            for fault in [f for f in pending if (f.round, f.stage) in asked]:
                pending.remove(fault)
                run = self._fire(fault, run)
            self._due()
            if run.wait(0.1):
                if not self._unfinished(run):
                    break
                run = self._resume_unplanned(run)
            if time.monotonic() > deadline:
                run.stop()
                break
        for _, what, partition in self.later:  # restarts still due when the run ended
            self._act(what, partition)
        status = "unknown" if run.run_id is None else self._status(run.run_id)
        return DrillResult(
            self.folder,
            self._journal().flower_runs,
            self.fired,
            status,
            time.monotonic() - self.start,
        )

    def _unfinished(self, run: FlwrRun) -> bool:
        """The run ended (not by a planned kill) before it finished, and may be resumed."""
        return self.auto_resume > 0 and not (self.folder / "summary.json").is_file()

    def _resume_unplanned(self, run: FlwrRun) -> FlwrRun:
        """The run died of something no fault plan did (Flower gave up a connection on a
        starved machine, say): note it, and resume as an operator would."""
        self.auto_resume -= 1
        state = self._journal()
        where = f"round {state.open_round} stage {state.open_stage}" if state.open_round else "-"
        status = "unknown" if run.run_id is None else self._status(run.run_id)
        self.fired.append(
            {
                "fault": f"unplanned: the run ended ({status}) at {where}; resumed",
                "at": round(time.monotonic() - self.start, 2),
            }
        )
        print(f"drill: {self.fired[-1]['fault']}", flush=True)
        if run.run_id is not None:
            stop_run(run.run_id, self.target.cli_env, self.connection)
        if not (self.folder / "config.json").is_file():  # it died before opening its folder
            return self._launch(lambda: self.target.submit(self.overrides))
        return self._launch(lambda: self.target.resume(self.folder, self.folder_in_app))

    def _launch(self, submit: Callable[[], FlwrRun], tries: int = 5) -> FlwrRun:
        """Submit, and submit again (after a pause) while the run does not even start: on a
        starved machine the CLI's own connection to the SuperLink can time out."""
        for attempt in range(1, tries + 1):
            run = submit()
            while run.run_id is None and not run.wait(0.5):
                pass
            if run.run_id is not None or attempt == tries:
                return run
            print(f"drill: the run did not start (attempt {attempt}); submitting again", flush=True)
            time.sleep(20)
        raise AssertionError("unreachable")

    def _journal(self) -> JournalState:
        """The run's journal, replayed again only when the file has grown: the drill polls it
        ten times a second, and a replay costs ~7 ms at 50 rounds of 20 clients (growing with
        the run) on a machine the run under test already starves."""
        path = self.folder / JOURNAL_FILE
        size = path.stat().st_size if path.is_file() else -1
        if size != self._journal_size:
            self._journal_state, self._journal_size = read_journal(self.folder), size
        return self._journal_state

    def _asked(self) -> set[tuple[int, str]]:
        state = self._journal()
        return {(int(e["round"]), str(e["stage"])) for e in state.events if e["event"] == "ask"}

    def _status(self, run_id: int) -> str:
        return wait_for_status(run_id, self.target.cli_env, self.connection).status

    def _participant(self, fault: Fault) -> Fault:
        """``fault`` aimed at one of its round's participants (seeded by the round) whose
        partition is known, when it names partition ``any``."""
        if fault.partition != ANY:
            return fault
        state = self._journal()
        asked: list[int] = []
        for event in state.events:
            if event["event"] == "ask" and event.get("round") == fault.round:
                asked = [int(n) for n in event["nodes"]] if event["stage"] == "train" else asked
        known = sorted({state.partitions[n] for n in asked if n in state.partitions})
        chosen = random.Random(fault.round).choice(known) if known else 0
        return Fault(fault.round, fault.stage, fault.action, chosen, fault.seconds)

    def _fire(self, fault: Fault, run: FlwrRun) -> FlwrRun:
        fault = self._participant(fault)
        self.fired.append({"fault": str(fault), "at": round(time.monotonic() - self.start, 2)})
        print(f"drill: firing {fault}", flush=True)
        target, later = self.target, time.monotonic() + fault.seconds
        if fault.action == "kill-node":
            target.kill_node(fault.partition)
            self.later.append((later, "restart", fault.partition))
        elif fault.action == "cut-link":
            target.cut_link(fault.partition)
            self.later.append((later, "restore", fault.partition))
        elif fault.action == "slow-cpu":
            target.throttle(fault.partition, SLOW_CPUS)
            self.later.append((later, "unthrottle", fault.partition))
        else:
            return self._restart_server(run)
        return run

    def _restart_server(self, run: FlwrRun) -> FlwrRun:
        """The server machine dies and comes back: SuperLink on its database, the dead run
        stopped, the run resumed from its folder with ``fedkd run --connection --resume`` (the
        ServerApp applies the resume rule)."""
        self.target.kill_server()
        run.wait(30)
        run.stop()
        self.target.restart_server()
        if run.run_id is not None:
            stop_run(run.run_id, self.target.cli_env, self.connection)
        return self._launch(lambda: self.target.resume(self.folder, self.folder_in_app))

    def _due(self) -> None:
        now = time.monotonic()
        for item in [x for x in self.later if x[0] <= now]:
            self.later.remove(item)
            self._act(item[1], item[2])

    def _act(self, what: str, partition: int) -> None:
        if what == "restart":
            self.target.restart_node(partition)
        elif what == "unthrottle":
            self.target.unthrottle(partition)
        else:
            self.target.restore_link(partition)


def run_drill(
    faults: Sequence[Fault],
    *,
    supernodes: int = 3,
    rounds: int = 3,
    run_config: Sequence[str] = (),
    work_dir: Path | None = None,
    port: int = 19391,
    tls: bool = False,
    keys: bool = True,
    timeout: float = 1800.0,
) -> DrillResult:
    """Start a loopback deployment, run ``rounds`` rounds with ``faults``, stop everything."""
    work_dir = Path(tempfile.mkdtemp(prefix="fedkd-drill-")) if work_dir is None else work_dir
    relayed = sorted({f.partition for f in faults if f.action == "cut-link"})
    overrides = [SMALL_RUN, f"num-rounds={rounds} min-clients={supernodes}", *run_config]
    with LoopbackDeployment(
        supernodes, work_dir, port=port, tls=tls, keys=keys, relayed=relayed
    ) as deployment:
        deployment.start()
        runs = deployment.work_dir / "runs"
        drill = Drill(
            deployment,
            faults,
            overrides,
            connection=CONNECTION_NAME,
            results_on_host=runs,
            results_in_app=str(runs),
        )
        return drill.run(timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.fault_drill", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--supernodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fault", action="append", default=[], type=Fault.parse, metavar="SPEC")
    parser.add_argument("--run-config", action="append", default=[], metavar="'K=V ...'")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--port", type=int, default=19391)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--no-keys", action="store_true", help="no fedkd keys identities")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--check", action="store_true", help="hold the run against its replay")
    args = parser.parse_args(argv)
    result = run_drill(
        args.fault,
        supernodes=args.supernodes,
        rounds=args.rounds,
        run_config=args.run_config,
        work_dir=args.work_dir,
        port=args.port,
        tls=args.tls,
        keys=not args.no_keys,
        timeout=args.timeout,
    )
    summary: dict[str, object] = {
        "status": result.status,
        "folder": str(result.folder),
        "flower_runs": result.flower_runs,
        "fired": result.fired,
        "seconds": round(result.seconds, 1),
    }
    ok = result.completed
    if args.check:
        from experiments.fault_check import check_run

        report = check_run(result.folder, args.supernodes)
        summary["check"] = report.as_dict()
        ok = ok and report.ok
    print(json.dumps(summary, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
