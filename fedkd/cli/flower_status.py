"""What a Flower run's status and log say: finished or not, and why it failed, on one line.

``flwr run`` exits 0 whatever happens to the run, so the outcome is read where Flower keeps
it: the run's status (``flwr ls --run-id N --format json``: ``finished:completed``,
``finished:failed``, ``finished:stopped``, with details), the run's log (the exception the
ServerApp raised) and the SuperLink's own log (where it explains a run it refused).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

BIN_DIR = Path(sys.executable).parent
_EXCEPTION = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Exit)): (.+)$")


@dataclass(frozen=True)
class RunStatus:
    """A Flower run's status as ``flwr ls`` reports it, e.g. ``finished:failed``."""

    status: str
    details: str = ""

    @property
    def finished(self) -> bool:
        return self.status.startswith("finished")

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


def read_run_status(run_id: int, env: Mapping[str, str], connection: str = "") -> RunStatus:
    """``flwr ls --run-id <id> --format json`` for one run; ``unknown`` when it cannot say."""
    command = [str(BIN_DIR / "flwr"), "ls", *([connection] if connection else [])]
    command += ["--run-id", str(run_id), "--format", "json"]
    try:
        done = subprocess.run(
            command, env=dict(env), capture_output=True, text=True, timeout=60, check=False
        )
        payload = json.loads(done.stdout[done.stdout.find("{") :])
        run = payload["runs"][0]
        return RunStatus(str(run["status"]), str(run.get("status-details") or ""))
    except (subprocess.TimeoutExpired, ValueError, KeyError, IndexError, TypeError):
        return RunStatus("unknown", "`flwr ls` gave no status for the run")


def wait_for_status(
    run_id: int, env: Mapping[str, str], connection: str = "", patience: float = 20.0
) -> RunStatus:
    """Poll the run's status until it is ``finished:*`` (the log stream ends slightly first)."""
    deadline = time.monotonic() + patience
    status = read_run_status(run_id, env, connection)
    while not status.finished and time.monotonic() < deadline:
        time.sleep(1.0)
        status = read_run_status(run_id, env, connection)
    return status


def stop_run(run_id: int, env: Mapping[str, str], connection: str = "") -> None:
    """``flwr stop <run_id>``: the SuperLink marks the run stopped and the app winds down."""
    command = [str(BIN_DIR / "flwr"), "stop", str(run_id), *([connection] if connection else [])]
    with suppress(subprocess.TimeoutExpired):
        subprocess.run(command, env=dict(env), capture_output=True, timeout=30, check=False)


def exception_line(lines: Sequence[str]) -> str:
    """The last ``SomethingError: message`` line of a log, stripped; ``""`` if none."""
    for line in reversed(lines):
        match = _EXCEPTION.match(line)
        if match:
            return f"{match.group(1)}: {match.group(2).strip()}"
    return ""


def cli_error(lines: Sequence[str]) -> str:
    """The text of the boxed ``Error`` the Flower CLI printed, on one line; ``""`` if none."""
    text: list[str] = []
    inside = False
    for line in lines:
        if "─ Error ─" in line:
            inside, text = True, []
        elif inside and line.lstrip().startswith("│"):
            text.append(line.strip().strip("│").strip())
        elif inside:
            inside = False
    return " ".join(" ".join(text).split())


def failure_cause(status: RunStatus, log_lines: Sequence[str], superlink_log: Path) -> str:
    """One line saying why a run failed: the log's last exception, else the status details,
    else the Flower CLI's error, else the last error in the SuperLink's own log (where
    Flower explains a refused run)."""
    details = status.details.strip().splitlines()
    cause = exception_line(log_lines) or (details[0] if details else "") or cli_error(log_lines)
    if not cause and superlink_log.exists():
        errors = [
            line.split("ERROR", 1)[1].strip(" :|")
            for line in superlink_log.read_text(errors="replace").splitlines()
            if "ERROR" in line
        ]
        cause = errors[-1] if errors else ""
    return cause or f"run ended with status {status.status}"
