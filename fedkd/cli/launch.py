"""Run the Flower app with ``flwr run`` on a private local SuperLink and leave nothing behind.

Every launch gets its own Flower home (a temporary folder, so the user's ``~/.flwr`` is never
read or written), its own free ports for the local simulation SuperLink
(``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``, ``FLWR_LOCAL_CONTROL_API_PORT``: the only two ports it
binds in simulation mode) and a tag in the environment (``FEDKD_LAUNCH_ID``) that every process
it starts inherits: ``flwr run``, the detached ``flower-superlink``, its SuperExec, the
simulation and Ray's daemons and workers. Two launches, by one user or two, never share a
SuperLink.

``flwr run`` exits 0 even when the run failed, so the outcome is read from the run's status
(``flwr ls --run-id N --format json``) and the cause from its log. On Ctrl-C or SIGTERM the run
is stopped with ``flwr stop``; in every case all tagged processes are then terminated, and what
the run wrote so far stays where it is.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from fedkd.cli.flower_status import (
    RunStatus,
    cli_error,
    exception_line,
    failure_cause,
    stop_run,
    wait_for_status,
)
from fedkd.cli.processes import (
    command_line,
    descendants,
    process_table,
    tagged_processes,
    terminate,
)
from fedkd.cli.run_config import flower_app, toml_value

RESULT_MARKER = "fedkd results: "
LAUNCH_TAG = "FEDKD_LAUNCH_ID"
BIN_DIR = Path(sys.executable).parent
# Flower lines that ask nothing of a fedkd user (the size is always passed explicitly).
FLOWER_NOISE = re.compile(
    r"Since flwr 1\.32, default simulated SuperNodes|To change federation size, use the "
    r"following command|flwr federation simulation-config|Manually terminating ClientAppActor"
    r"|Flower configuration not found\. Created default configuration"
)
# Ray's tip that its GPU masking for num_gpus=0 actors will change: fedkd relies on today's
# behaviour (clients without a GPU share see no GPU), so the tip asks nothing of the user.
RAY_TIP_FILTER = "ignore::FutureWarning:ray._private.worker"
_RUN_ID = re.compile(r"Successfully started run (\d+)")
_EMPTY = re.compile(r"\s*(?:\x1b\[[0-9;]*m)*(?:INFO\s*)?(?:\x1b\[[0-9;]*m)*\s*:?\s*")  # "INFO :"
_RESULTS_AT_START = re.compile(r"results in (/\S+)")
EXIT_FAILED, EXIT_TIMEOUT = 1, 124
SUPERLINK_TOO_SLOW = "Failed to start local SuperLink within"
SUPERLINK_ATTEMPTS = 3
CPUS_PER_CLIENT = 1  # simulated clients per core: one (torch-threads defaults to 1 per client)


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that are free right now (the OS picks)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:  # all held open until each has its port: no duplicates
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class LocalSuperLink:
    """Where one launch's local simulation SuperLink lives: ports, Flower home, tag."""

    http_port: int
    control_port: int
    flwr_home: Path
    tag: str

    @classmethod
    def create(cls, flwr_home: Path | None = None) -> LocalSuperLink:
        """Fresh free ports, a fresh tag and (unless given) a fresh temporary Flower home."""
        http_port, control_port = free_ports(2)
        home = flwr_home or Path(tempfile.mkdtemp(prefix="fedkd-flwr-home-"))
        return cls(http_port, control_port, home.resolve(), uuid.uuid4().hex)

    def env(self, *, install_dependencies: bool = False) -> dict[str, str]:
        """The environment for every Flower command of this launch."""
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", "")]),
            "FLWR_HOME": str(self.flwr_home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.http_port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(self.control_port),
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONWARNINGS": ",".join(
                w for w in (os.environ.get("PYTHONWARNINGS", ""), RAY_TIP_FILTER) if w
            ),
            LAUNCH_TAG: self.tag,
        }
        if install_dependencies:
            env.pop("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", None)
        else:
            env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
        return env

    @property
    def log_file(self) -> Path:
        """The SuperLink's own log (Flower writes it under the Flower home)."""
        return self.flwr_home / "local-superlink" / "superlink.log"


@dataclass(frozen=True)
class LaunchResult:
    """How one ``flwr run`` ended.

    Attributes
    ----------
    returncode
        What a command should exit with: 0 completed, 1 failed, 124 timed out,
        130 / 143 interrupted by SIGINT / SIGTERM.
    results
        The results folder the ServerApp reported (also a partial one after a stop).
    run_id
        Flower's run id (``None`` if the run never started).
    status
        The run's final status from ``flwr ls`` (``finished:completed``, ``finished:failed``,
        ``finished:stopped``, ``not started``, ``unknown``).
    cause
        One line saying why the run did not complete (``""`` when it did).
    flwr_home
        The launch's Flower home; a temporary one is kept (its logs) only after a failure
        or a timeout.
    ports
        The local SuperLink's HTTP and Control API ports.
    tag
        The ``FEDKD_LAUNCH_ID`` this launch put in its processes' environment.
    """

    returncode: int
    results: Path | None
    run_id: int | None = None
    status: str = "unknown"
    cause: str = ""
    flwr_home: Path | None = None
    ports: tuple[int, ...] = ()
    tag: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Interrupted(KeyboardInterrupt):
    """A signal (SIGINT, SIGTERM, or the SIGALRM of a launch's deadline) stopped a launch.

    A ``KeyboardInterrupt``, so that no ``except Exception`` on the way swallows it, and so
    that a blocking ``ray.get`` hands it on: Ray's wait turns a ``KeyboardInterrupt`` raised by
    a signal handler into its own, bare one (any other exception raised there left an error
    set inside Ray: a ``SystemError``, and once a SIGSEGV at exit, in CI). :meth:`caught`
    recovers the signal from a bare one.
    """

    _last = signal.SIGINT  # the signal the handler last raised for

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        Interrupted._last = signal.Signals(signum)

    @classmethod
    def caught(cls, error: KeyboardInterrupt) -> Interrupted:
        """``error`` as an :class:`Interrupted` (a bare one came from the last signal)."""
        return error if isinstance(error, Interrupted) else cls(cls._last)

    @classmethod
    def within(cls, error: BaseException) -> Interrupted | None:
        """The signal behind ``error`` where code between the handler and the launch wrapped
        it (an import the signal landed in raises ``RuntimeError`` from it), else None."""
        seen: set[int] = set()
        cause: BaseException | None = error
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            if isinstance(cause, KeyboardInterrupt):
                return cls.caught(cause)
            cause = cause.__cause__ or cause.__context__
        return None


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` so cleanup code always runs."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class _Stream:
    """What ``flwr run --stream`` printed that matters: run id, results folder, log lines."""

    echo: bool
    run_id: int | None = None
    results: Path | None = None
    lines: list[str] = field(default_factory=list)

    def feed(self, line: str) -> None:
        self.lines.append(line.rstrip("\n"))
        if self.run_id is None and (match := _RUN_ID.search(line)):
            self.run_id = int(match.group(1))
        if RESULT_MARKER in line:
            self.results = Path(line.split(RESULT_MARKER, 1)[1].strip())
        elif self.results is None and (match := _RESULTS_AT_START.search(line)):
            self.results = Path(match.group(1))
        if self.echo and not _EMPTY.fullmatch(line) and not FLOWER_NOISE.search(line):
            print(line, end="" if line.endswith("\n") else "\n", flush=True)


def flwr_command(
    run_config: Mapping[str, object],
    num_supernodes: int,
    federation_config: Sequence[str] = (),
    app_dir: Path | None = None,
) -> list[str]:
    """``flwr run <app> --stream`` with run-config and federation-config overrides.

    Unless told otherwise, each simulated client gets one CPU (Flower's default is two, which
    on a 2-core machine runs one client at a time and leaves a core idle). ``app_dir``
    defaults to the checkout this package runs from (:func:`~fedkd.cli.run_config.flower_app`).
    """
    app_dir = flower_app(app_dir)
    command = [str(BIN_DIR / "flwr"), "run", str(app_dir), "--stream"]
    settings = list(federation_config)
    if not any(item.startswith("client-resources-num-cpus=") for item in settings):
        settings.append(f"client-resources-num-cpus={CPUS_PER_CLIENT}")
    fed = " ".join([f"num-supernodes={num_supernodes}", *settings])
    command += ["--federation-config", fed]
    overrides = " ".join(f"{key}={toml_value(value)}" for key, value in run_config.items())
    return command + (["--run-config", overrides] if overrides else [])


def flwr_run(
    run_config: Mapping[str, object],
    *,
    num_supernodes: int = 10,
    federation_config: Sequence[str] = (),
    app_dir: Path | None = None,
    echo: bool = True,
    timeout: float | None = None,
    install_dependencies: bool = False,
    flwr_home: Path | None = None,
) -> LaunchResult:
    """Run the app once on a private local SuperLink; stop everything it started.

    Parameters
    ----------
    run_config
        Run-config overrides (``key=value``, written as TOML values).
    num_supernodes
        Simulated clients (``--federation-config num-supernodes=N``).
    federation_config
        Further ``key=value`` federation settings (e.g. ``client-resources-num-cpus=1``).
    app_dir
        The Flower app (a folder with ``pyproject.toml``); default: the checkout this package
        runs from (a ``ValueError`` naming ``--app DIR`` when installed from a wheel).
    echo
        Print the run's log as it streams (Flower's lines that ask nothing of the user are
        left out).
    timeout
        Seconds before the run is stopped and the launch reports exit code 124.
    install_dependencies
        Let Flower install the app's dependencies per run (``uv sync`` into a fresh
        environment under the Flower home); by default the current environment is used.
    flwr_home
        Flower home for this launch; a fresh temporary folder when ``None``.

    Returns
    -------
    LaunchResult
        Exit code, results folder, run id, final status and one-line cause.
    """
    app_dir = flower_app(app_dir)
    link = LocalSuperLink.create(flwr_home)
    env = link.env(install_dependencies=install_dependencies)
    command = flwr_command(run_config, num_supernodes, federation_config, app_dir)
    if echo:
        print(f"$ flwr run {app_dir} (local SuperLink on 127.0.0.1:{link.http_port})", flush=True)
    stream = _Stream(echo)
    result: LaunchResult | None = None
    try:
        with signals_as_interrupt():
            try:
                result = _run_and_judge(command, env, link, stream, app_dir, timeout)
            except Interrupted as stop:
                result = _interrupted(stop.signum, env, link, stream)
    finally:
        _shutdown(link)
    if flwr_home is None and result.returncode not in (EXIT_FAILED, EXIT_TIMEOUT):
        shutil.rmtree(link.flwr_home, ignore_errors=True)  # kept only to explain a failure
    return result


def deployed_run(
    run_config: Mapping[str, object],
    connection: str,
    *,
    app_dir: Path | None = None,
    echo: bool = True,
    timeout: float | None = None,
) -> LaunchResult:
    """Submit the app to a deployed SuperLink (``flwr run <app> <connection> --stream``).

    ``connection`` names a SuperLink connection of the user's Flower config
    (``$FLWR_HOME/config.toml``, as ``flwr`` reads it). Nothing is started or stopped here but
    the run itself: on Ctrl-C, SIGTERM or the timeout the run is stopped (``flwr stop``) and
    the deployment keeps running.
    """
    app_dir = flower_app(app_dir, "--connection")
    env = {**os.environ, "FLWR_DISABLE_UPDATE_CHECK": "1", "PYTHONUNBUFFERED": "1"}
    command = [str(BIN_DIR / "flwr"), "run", str(app_dir), connection, "--stream"]
    overrides = " ".join(f"{key}={toml_value(value)}" for key, value in run_config.items())
    command += ["--run-config", overrides] if overrides else []
    if echo:
        print(f"$ flwr run {app_dir} {connection}", flush=True)
    stream = _Stream(echo)
    deadline = None if timeout is None else time.monotonic() + timeout
    with signals_as_interrupt():
        try:
            timed_out = _stream_flwr_run(command, env, stream, app_dir, deadline)
        except Interrupted as stop:
            if stream.run_id is not None:
                stop_run(stream.run_id, env, connection)
            name = signal.Signals(stop.signum).name
            return LaunchResult(
                128 + stop.signum,
                stream.results,
                stream.run_id,
                "finished:stopped",
                f"interrupted by {name}",
            )
    if stream.run_id is None:
        cause = cli_error(stream.lines) or exception_line(stream.lines) or "run not started"
        return LaunchResult(EXIT_FAILED, None, None, "not started", cause)
    if timed_out:
        stop_run(stream.run_id, env, connection)
        return LaunchResult(
            EXIT_TIMEOUT,
            stream.results,
            stream.run_id,
            "stopped (timeout)",
            f"still running after {timeout:.0f} s: stopped",
        )
    status = wait_for_status(stream.run_id, env, connection)
    if status.completed and stream.results is not None:
        return LaunchResult(0, stream.results, stream.run_id, status.status, "")
    cause = exception_line(stream.lines) or status.details or f"run ended {status.status}"
    return LaunchResult(EXIT_FAILED, stream.results, stream.run_id, status.status, cause)


def _run_and_judge(
    command: list[str],
    env: Mapping[str, str],
    link: LocalSuperLink,
    stream: _Stream,
    app_dir: Path,
    timeout: float | None,
) -> LaunchResult:
    deadline = None if timeout is None else time.monotonic() + timeout
    for attempt in range(1, SUPERLINK_ATTEMPTS + 1):
        seen = len(stream.lines)
        if _stream_flwr_run(command, env, stream, app_dir, deadline):
            return _timed_out(timeout or 0.0, env, link, stream)
        slow_start = any(SUPERLINK_TOO_SLOW in line for line in stream.lines[seen:])
        if stream.run_id is not None or not slow_start or attempt == SUPERLINK_ATTEMPTS:
            break
        # Flower gives its SuperLink 15 s to come up, too little on a busy machine
        print("the local SuperLink was slow to start (busy machine): trying again", flush=True)
    if stream.run_id is None:
        cause = failure_cause(RunStatus("not started"), stream.lines, link.log_file)
        return _result(EXIT_FAILED, stream, link, "not started", cause)
    status = wait_for_status(stream.run_id, env)
    if status.completed and stream.results is not None:
        return _result(0, stream, link, status.status, "")
    cause = failure_cause(status, stream.lines, link.log_file)
    if status.completed:
        cause = "the run completed but the ServerApp reported no results folder"
    return _result(EXIT_FAILED, stream, link, status.status, cause)


def _stream_flwr_run(
    command: list[str],
    env: Mapping[str, str],
    stream: _Stream,
    app_dir: Path,
    deadline: float | None,
) -> bool:
    """Run ``flwr run --stream`` to its end, feeding its output; True if the deadline hit."""
    process = subprocess.Popen(
        command,
        cwd=app_dir,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # Ctrl-C reaches us only; we stop the run ourselves
    )
    assert process.stdout is not None
    try:
        for line in process.stdout:
            stream.feed(line)
            if deadline is not None and time.monotonic() > deadline:
                return True
        return False
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def _timed_out(
    timeout: float, env: Mapping[str, str], link: LocalSuperLink, stream: _Stream
) -> LaunchResult:
    if stream.run_id is not None:
        stop_run(stream.run_id, env)
    cause = f"still running after {timeout:.0f} s: stopped"
    return _result(EXIT_TIMEOUT, stream, link, "stopped (timeout)", cause)


def _interrupted(
    signum: int, env: Mapping[str, str], link: LocalSuperLink, stream: _Stream
) -> LaunchResult:
    name = signal.Signals(signum).name
    print(f"\n{name}: stopping the run and every process it started ...", flush=True)
    with suppress(Interrupted):  # a second Ctrl-C skips the polite stop
        if stream.run_id is not None:
            stop_run(stream.run_id, env)
    return _result(128 + signum, stream, link, "finished:stopped", f"interrupted by {name}")


def _result(
    code: int, stream: _Stream, link: LocalSuperLink, status: str, cause: str
) -> LaunchResult:
    ports = (link.http_port, link.control_port)
    return LaunchResult(
        code, stream.results, stream.run_id, status, cause, link.flwr_home, ports, link.tag
    )


def _shutdown(link: LocalSuperLink) -> None:
    stop_tagged(link.tag)


def stop_tagged(tag: str) -> None:
    """Terminate every process that carries ``tag`` (SIGTERM, then SIGKILL), signals held off."""
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in held}
    try:
        # Again and again, for anything started while the first ones were stopping (Ray's
        # raylet spawns its dashboard and runtime-env agents late), until two scans 0.5 s
        # apart find none (a process in the middle of exec can show an empty environment to
        # one scan) or 60 s have passed.
        deadline, quiet = time.monotonic() + 60.0, 0
        while time.monotonic() < deadline and quiet < 2:
            tagged = tagged_processes(LAUNCH_TAG, tag)
            # and their children: a Ray agent need not carry the tag (its environment is the
            # raylet's choice), and one outlived a SIGINT-stopped run in CI once its raylet died
            pids = sorted({*tagged, *descendants(tagged)})
            if not pids:
                quiet += 1
                time.sleep(0.5)
                continue
            quiet = 0
            terminate(pids)
            time.sleep(0.3)  # let a child spawned during the last pass show up
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def report(result: LaunchResult, *, label: str = "run") -> None:
    """Print how a launch ended: the results folder, or one line with the cause (stderr)."""
    if result.results is not None:
        print(f"{label} results: {result.results}", flush=True)
    if not result.ok:
        verb = "stopped" if result.returncode in (130, 143) else "failed"
        where = f" (run {result.run_id})" if result.run_id is not None else ""
        print(f"{label} {verb}{where}: {result.cause}", file=sys.stderr, flush=True)
        if result.flwr_home is not None and result.flwr_home.exists():
            print(f"  Flower logs kept in {result.flwr_home}", file=sys.stderr, flush=True)


def stop_stale_superlinks() -> list[int]:
    """Stop the detached local SuperLink a bare ``flwr run .`` left on this shell's ports.

    It is found by its command line (``flower-superlink ... --control-api-address
    127.0.0.1:<FLWR_LOCAL_CONTROL_API_PORT>``, default 39093); Ray and the simulation below it
    go with it. Returns the pids stopped.
    """
    control = os.environ.get("FLWR_LOCAL_CONTROL_API_PORT", "39093")
    marker = f"--control-api-address 127.0.0.1:{control}"
    links = [
        pid
        for pid in process_table()
        if "flower-superlink" in (cmd := command_line(pid)) and marker in cmd
    ]
    victims = [*links, *descendants(links)]
    terminate(victims)
    return victims


def main(argv: Sequence[str]) -> int:
    """``fedkd stop-superlink``: stop what a bare ``flwr run .`` left running."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="fedkd stop-superlink",
        description="Stop the detached local SuperLink that a bare `flwr run .` started (the "
        "one on this shell's FLWR_LOCAL_CONTROL_API_PORT, default 39093) and Ray below it.",
    )
    parser.parse_args(argv)
    print(f"stopped {len(stop_stale_superlinks())} process(es)")
    return 0
