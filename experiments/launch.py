"""Run the Flower app through ``flwr run`` and leave no local SuperLink behind.

``flwr run .`` starts a detached local simulation SuperLink the first time and leaves it
running. This launcher runs the app exactly as a Flower user would (``flwr run . --stream``)
and stops the SuperLink afterwards if it was the one that started it.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULT_MARKER = "fedkd results: "


def superlink_port() -> str:
    return os.environ.get("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39091")


def superlink_running() -> bool:
    """Whether a local SuperLink answers its health endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{superlink_port()}/health", timeout=0.5):
            return True
    except OSError:
        return False


def _superlink_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if "flower-superlink" in text and f"--port {superlink_port()}" in text:
            pids.append(int(entry.name))
    return pids


def stop_superlink(timeout: float = 10.0) -> None:
    """Terminate the local simulation SuperLink (and its Ray workers with it)."""
    pids = _superlink_pids()
    for pid in pids:
        try:
            os.killpg(os.getpgid(pid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            continue
    deadline = time.monotonic() + timeout
    while _superlink_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _superlink_pids():
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue


@dataclass(frozen=True)
class LaunchResult:
    """Exit code of ``flwr run`` and the results folder the ServerApp reported."""

    returncode: int
    results: Path | None


def flwr_run(
    run_config: dict[str, object],
    *,
    num_supernodes: int = 10,
    federation_config: Sequence[str] = (),
    app_dir: Path = PROJECT_ROOT,
    stream: bool = True,
    echo: bool = True,
    timeout: float | None = None,
) -> LaunchResult:
    """``flwr run <app_dir> --stream`` with run-config overrides; stop the SuperLink we start.

    Parameters
    ----------
    run_config
        Run-config overrides (``key=value`` as TOML values).
    num_supernodes
        Simulated clients (``--federation-config num-supernodes=N``).
    federation_config
        Further ``key=value`` federation settings (e.g. ``client-resources-num-cpus=1``).
    """
    overrides = " ".join(f"{key}={_toml(value)}" for key, value in run_config.items())
    fed = " ".join([f"num-supernodes={num_supernodes}", *federation_config])
    command = [
        str(Path(sys.executable).with_name("flwr")),
        "run",
        str(app_dir),
        "--federation-config",
        fed,
    ]
    if overrides:
        command += ["--run-config", overrides]
    if stream:
        command.append("--stream")
    bin_dir = str(Path(sys.executable).parent)  # flwr starts flower-superlink from PATH
    env = {
        **os.environ,
        "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    started_here = not superlink_running()
    if echo:
        print("$", shlex.join(command), flush=True)
    results: Path | None = None
    try:
        process = subprocess.Popen(
            command,
            cwd=app_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert process.stdout is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        for line in process.stdout:
            if echo:
                print(line, end="", flush=True)
            if RESULT_MARKER in line:
                results = Path(line.split(RESULT_MARKER, 1)[1].strip())
            if deadline is not None and time.monotonic() > deadline:
                process.kill()
                break
        returncode = process.wait()
    finally:
        if started_here:
            stop_superlink()
    return LaunchResult(returncode=returncode, results=results)


DEFAULT_FLOWER_CONFIG = """[superlink]
default = "local"

[superlink.local]
address = ":local:"
"""


def configure_local_federation(num_supernodes: int = 10) -> str:
    """Give Flower's ``local`` simulation connection a default size, unless one is set.

    Since Flower 1.32 a bare ``flwr run .`` simulates 2 SuperNodes. The size lives in the
    user's Flower config (``$FLWR_HOME/config.toml``, default ``~/.flwr``); we add
    ``[superlink.local.options] num-supernodes = N`` there only when the ``local`` connection
    has no options yet, and never touch anything else. Returns what was done.
    """
    import tomllib

    home = Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))
    path = home / "config.toml"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(DEFAULT_FLOWER_CONFIG)
    config = tomllib.loads(path.read_text())
    local = config.get("superlink", {}).get("local")
    if not isinstance(local, dict):
        return f"{path}: no [superlink.local] connection; left unchanged"
    if "options" in local:
        return f"{path}: [superlink.local] already has options; left unchanged"
    with path.open("a") as handle:
        handle.write(
            "\n# Added by fedkd (make install): default size of `flwr run .` simulations.\n"
            f"[superlink.local.options]\nnum-supernodes = {num_supernodes}\n"
        )
    return f"{path}: local simulations now default to {num_supernodes} SuperNodes"


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Flower set-up helpers")
    parser.add_argument(
        "--configure",
        type=int,
        metavar="N",
        help="default number of SuperNodes of `flwr run .` simulations",
    )
    parser.add_argument(
        "--stop-superlink", action="store_true", help="stop the local simulation SuperLink"
    )
    args = parser.parse_args()
    if args.configure:
        print(configure_local_federation(args.configure))
    if args.stop_superlink:
        stop_superlink()
