"""``fedkd status RUN_FOLDER``: where a (deployed) run stands, from its own folder.

    fedkd status runs/fedkd-feddf-20261207-180000 [--connection fedkd-local] [--json]

Reads what the ServerApp writes as the run goes -- ``history.json`` (one row per finished
round) and ``journal.jsonl`` (every request before it goes out, every answer, every fault) --
and prints the round in progress and its stage, the last finished round with its survivors,
and the last fault (round, stage, node, partition, reason). With ``--connection`` it adds the
Flower runs' own status from ``flwr ls`` (the SuperLink's view). In a compose deployment the
folder is on the ServerApp's volume:
``docker-compose exec superexec-serverapp fedkd status /app/runs/<name>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from fedkd.cli.flower_status import read_run_status
from fedkd.fl.journal import read_journal


def run_status(folder: Path) -> dict[str, Any]:
    """The run's state as a dict (what ``--json`` prints)."""
    if not (folder / "config.json").is_file():
        raise ValueError(f"'{folder}' is not a run folder (no config.json)")
    config = json.loads((folder / "config.json").read_text())
    history_file = folder / "history.json"
    rows = json.loads(history_file.read_text()) if history_file.is_file() else []
    journal = read_journal(folder)
    counts = {s: sum(r.get("status") == s for r in rows) for s in ("ok", "skipped", "abandoned")}
    last = rows[-1] if rows else None
    in_progress = None
    if journal.open_round:
        answers = [
            e
            for e in journal.events
            if e["event"] == "answer" and e.get("round") == journal.open_round
        ]
        in_progress = {
            "round": journal.open_round,
            "stage": journal.open_stage,
            "released": journal.released,
            "answered": len(answers[-1].get("answered") or {}) if answers else None,
        }
    return {
        "folder": str(folder),
        "num_rounds": config.get("num-rounds"),
        "rounds_recorded": len(rows),
        "rounds": counts,
        "flower_runs": journal.flower_runs,
        "in_progress": in_progress,
        "last_round": None
        if last is None
        else {
            k: last.get(k) for k in ("round", "status", "survivors", "sampled", "dropped", "reason")
        },
        "last_fault": journal.last_fault,
        "finished": (folder / "summary.json").is_file(),
    }


def render(status: dict[str, Any]) -> str:
    """The human-readable lines."""
    counts = status["rounds"]
    lines = [
        f"run folder: {status['folder']}",
        f"flower runs: {', '.join(map(str, status['flower_runs'])) or '-'}"
        + (f" ({len(status['flower_runs']) - 1} resume(s))" if status["flower_runs"] else ""),
        f"rounds: {status['rounds_recorded']}/{status['num_rounds']} recorded "
        f"({counts['ok']} ok, {counts['skipped']} skipped, {counts['abandoned']} abandoned)"
        + (", finished" if status["finished"] else ""),
    ]
    if (now := status["in_progress"]) is not None:
        answered = "" if now["answered"] is None else f" ({now['answered']} answered the last)"
        lines.append(f"in progress: round {now['round']}, stage {now['stage']}{answered}")
    if (last := status["last_round"]) is not None:
        dropped = f", dropped partitions {last['dropped']}" if last["dropped"] else ""
        lines.append(
            f"last round: {last['round']} {last['status']}, survivors "
            f"{last['survivors']}/{last['sampled']}{dropped}"
            + (f" ({last['reason']})" if last["reason"] else "")
        )
    fault = status["last_fault"]
    if fault is None:
        lines.append("last fault: none")
    else:
        partition = fault.get("partition")
        shown = "?" if partition is None or partition < 0 else partition
        lines.append(
            f"last fault: round {fault['round']}, stage {fault['stage']}: node {fault['node']} "
            f"(partition {shown}): {fault['reason']}"
        )
    for run_id, flower in status.get("flower_status", {}).items():
        lines.append(f"flower run {run_id}: {flower}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedkd status", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="the run's results folder")
    parser.add_argument(
        "--connection", default="", help="a SuperLink connection of $FLWR_HOME/config.toml"
    )
    parser.add_argument("--json", action="store_true", help="print the state as JSON")
    args = parser.parse_args(argv)
    try:
        status = run_status(args.folder)
    except ValueError as error:
        print(f"fedkd status: {error}", file=sys.stderr)
        return 2
    if args.connection:
        status["flower_status"] = {
            run_id: read_run_status(run_id, dict(os.environ), args.connection).status
            for run_id in status["flower_runs"]
        }
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
