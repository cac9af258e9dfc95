"""Find and stop the processes a launch started, from ``/proc`` (Linux).

Flower detaches its local SuperLink (a new session) and Ray daemonizes some of its processes, so
neither the process tree nor process groups reach all of them once a parent has died. What they
all keep is the environment they inherited: a launch puts a unique tag there and finds every
process of its own by that tag, whoever its parent is now.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessInfo:
    """One line of the process table."""

    pid: int
    state: str
    parent: int
    group: int


def process_table() -> dict[int, ProcessInfo]:
    """Every process visible in ``/proc``, by pid."""
    table = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces, so split after ')'
        fields = stat.rsplit(")", 1)[1].split()
        pid = int(entry.name)
        table[pid] = ProcessInfo(pid, fields[0], int(fields[1]), int(fields[2]))
    return table


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:  # gone, or another user's
        return b""


def command_line(pid: int) -> str:
    """The command line of ``pid`` (arguments joined by spaces); ``""`` if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return raw.replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def tagged_processes(key: str, value: str, *, command_contains: str = "") -> list[int]:
    """Live processes whose environment has ``key=value`` (and whose command line contains
    ``command_contains``), never this process or its ancestors."""
    needle = f"{key}={value}".encode()
    spared = set(ancestors(os.getpid()))
    found = []
    for pid, info in process_table().items():
        if pid in spared or info.state == "Z":
            continue
        if needle in _environ(pid).split(b"\0") and command_contains in command_line(pid):
            found.append(pid)
    return found


def ancestors(pid: int) -> list[int]:
    """``pid`` and every process above it."""
    table = process_table()
    chain = [pid]
    while (info := table.get(chain[-1])) is not None and info.parent > 0:
        chain.append(info.parent)
    return chain


def descendants(pids: Sequence[int]) -> list[int]:
    """Every live process below ``pids`` in the process tree."""
    children: dict[int, list[int]] = {}
    for info in process_table().values():
        children.setdefault(info.parent, []).append(info.pid)
    found: list[int] = []
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pids: Iterable[int]) -> list[int]:
    """Those of ``pids`` that still run (zombies count as gone)."""
    table = process_table()
    return [pid for pid in pids if pid in table and table[pid].state != "Z"]


def group_members(group: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``group``."""
    return [p.pid for p in process_table().values() if p.group == group and p.state != "Z"]


def signal_pids(pids: Iterable[int], signum: int) -> None:
    """Send ``signum`` to each pid that still exists."""
    for pid in pids:
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def signal_group(group: int, signum: int) -> None:
    """Send ``signum`` to a process group if it still exists."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signum)


def terminate(pids: Sequence[int], timeout: float = 10.0) -> list[int]:
    """SIGTERM ``pids``, wait up to ``timeout`` s, SIGKILL what is left; return the killed.

    Processes started in the meantime by those being stopped (Ray restarting a worker) are
    not seen here: callers that need them call again with a fresh list.
    """
    signal_pids(pids, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = alive(pids)
    signal_pids(left, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while alive(left) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left
