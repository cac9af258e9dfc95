"""A real Flower deployment on loopback: one SuperLink, N SuperNodes, one ``flwr run``.

    python -m experiments.deploy_local [--supernodes 3] [--port 19091] [--tls]
        [--run-config "num-rounds=1 local-epochs=1"] [--work-dir DIR] [--timeout S]

Unlike ``fedkd run`` (the simulation runtime), every component here is its own process, as on
separate machines: ``flower-superlink`` (Fleet, Control and Runtime HTTP API on one port,
``--isolation subprocess``), and per client a ``flower-supernode`` with its own Runtime API
``--port`` and ``--node-config "partition-id=<i> num-partitions=<N>"``. Each of them starts its
own ``flower-superexec``, which runs the ServerApp / ClientApps from the submitted app bundle.
With ``--tls`` a fresh CA and SuperLink certificate are generated (``deploy/certs.py``), the
SuperLink serves HTTPS and the SuperNodes and the CLI verify it against the CA.

The script writes a Flower config (``$FLWR_HOME/config.toml``) with a ``[superlink.<name>]``
connection, runs ``flwr run <app> <name> --stream``, waits for the ServerApp's
``fedkd results: <path>`` line, and stops every process it started, also on Ctrl-C or error.
Logs of each process are in ``<work-dir>/logs/``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import IO

from experiments.flower_status import RunStatus, failure_cause, wait_for_status
from experiments.launch import RESULT_MARKER
from experiments.processes import descendants, group_members, process_table, signal_group
from experiments.run_config import PROJECT_ROOT

__all__ = ["CONNECTION_NAME", "DeploymentResult", "deploy_local", "group_members", "main"]

CONNECTION_NAME = "fedkd-local"
_RUN_ID = re.compile(r"Successfully started run (\d+)")
DEFAULT_PORT = 19091
BIN_DIR = Path(sys.executable).parent


@dataclass(frozen=True)
class DeploymentResult:
    """How a loopback deployment ended.

    Attributes
    ----------
    returncode
        0 when the run's status is ``finished:completed`` and a results folder was reported,
        1 otherwise, 124 when it was stopped at the timeout (``flwr run`` itself exits 0
        whatever happens to the run, so its exit status is not used).
    results
        The results folder the ServerApp reported, ``None`` if it reported none.
    process_groups
        Process-group ids of everything started (all stopped when this is returned).
    log_dir
        One log file per process.
    seconds
        Wall time from the first process started to the last one stopped.
    """

    returncode: int
    results: Path | None
    process_groups: tuple[int, ...]
    log_dir: Path
    seconds: float
    status: str = "unknown"
    cause: str = ""


@dataclass
class _Processes:
    """The processes a deployment started, each the leader of its own process group."""

    log_dir: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log_file = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop_all)
        self._logs.append(log_file)
        log_file.write(f"$ {shlex.join(command)}\n".encode())
        log_file.flush()
        process = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append((name, process))
        return process

    def check_alive(self) -> None:
        for name, process in self.started:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}; see "
                    f"{self.log_dir / (name + '.log')}"
                )

    def stop_all(self, timeout: float = 15.0) -> list[int]:
        """Stop every process started and all their descendants; return their process groups.

        Flower starts some children in their own session (the SuperLink's SuperExec and the
        ServerApp under it), so the descendants are collected from ``/proc`` and their groups
        signalled too: SIGTERM first (newest first), SIGKILL whatever is left after ``timeout``.
        """
        leaders = [process.pid for _, process in reversed(self.started)]
        table = process_table()
        below = [table[pid].group for pid in descendants(leaders) if pid in table]
        own = os.getpgrp()  # never signal the group this script runs in
        groups = [g for g in dict.fromkeys([*leaders, *below]) if g > 0 and g != own]
        for group in groups:
            signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while any(group_members(g) for g in groups) and time.monotonic() < deadline:
            for _, process in self.started:
                process.poll()  # reap the leaders so they do not linger as zombies
            time.sleep(0.2)
        for group in groups:
            if group_members(group):
                signal_group(group, signal.SIGKILL)
        for _, process in self.started:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        for log_file in self._logs:
            log_file.close()
        return groups


def _load_certs_module() -> ModuleType:
    path = PROJECT_ROOT / "deploy" / "certs.py"
    spec = importlib.util.spec_from_file_location("fedkd_deploy_certs", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"certificate generator not found at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_flower_config(
    flwr_home: Path, address: str, *, ca_cert: Path | None, name: str = CONNECTION_NAME
) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one SuperLink connection named ``name``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    security = (
        "insecure = true"
        if ca_cert is None
        else f"root-certificates = {_toml_string(str(ca_cert.resolve()))}"
    )
    path = flwr_home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{name}"\n\n'
        f"[superlink.{name}]\naddress = {_toml_string(address)}\n{security}\n",
        encoding="utf-8",
    )
    return path


def _wait_for_health(
    url: str, context: ssl.SSLContext | None, patience: float, processes: _Processes
) -> None:
    deadline = time.monotonic() + patience
    while True:
        processes.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=1.0, context=context):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from {url} after {patience:.0f} s") from None
            time.sleep(0.2)


def _config_keys(assignments: Sequence[str]) -> set[str]:
    keys: set[str] = set()
    for text in assignments:
        keys.update(re.findall(r"(?:^|\s)([A-Za-z0-9_.-]+)\s*=", text))
    return keys


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so ``finally`` clauses stop the processes."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def deploy_local(
    num_supernodes: int = 3,
    run_config: Sequence[str] = (),
    *,
    port: int = DEFAULT_PORT,
    tls: bool = False,
    keys: bool = True,
    work_dir: Path | None = None,
    app_dir: Path = PROJECT_ROOT,
    timeout: float | None = None,
    startup_timeout: float = 30.0,
    echo: bool = True,
) -> DeploymentResult:
    """Start SuperLink + ``num_supernodes`` SuperNodes on 127.0.0.1, ``flwr run``, stop all.

    Parameters
    ----------
    num_supernodes
        SuperNodes to start; SuperNode ``i`` gets ``partition-id=i num-partitions=N`` and
        Runtime API port ``port + 1 + i``.
    run_config
        ``key=value`` strings (TOML values) for ``flwr run --run-config``. Unless given here,
        ``min-clients`` is set to ``num_supernodes`` (so the ServerApp waits for all of them)
        and ``out-dir`` to ``<work_dir>/runs``.
    port
        The SuperLink's HTTP port (Fleet, Control and Runtime API).
    tls
        Serve HTTPS with a freshly generated CA and certificate (in ``<work_dir>/certs``).
    keys
        Secure aggregation against a malicious server with real identities (the default): ``fedkd
        keys`` writes one identity per SuperNode and the roster into ``<work_dir>/keys``; each
        SuperNode gets its own identity and its copy of the roster through its node config
        (never from the server), the ServerApp the roster through ``secagg-roster``. Without
        it the run keeps its own roster setting, and a deployed SuperNode refuses the default
        (``simulated``) one. Each SuperNode keeps its release ledger under
        ``<work_dir>/nodes`` (node config ``state-dir``), so runs in one work dir are runs of
        the same nodes.
    work_dir
        Flower homes, logs, certificates and (by default) results; a new temporary folder
        when ``None``.
    timeout
        Seconds ``flwr run`` may take before everything is stopped.
    echo
        Print the run's output as it streams.
    """
    if num_supernodes < 1:
        raise ValueError(f"num_supernodes must be at least 1, got {num_supernodes}")
    work_dir = Path(tempfile.mkdtemp(prefix="fedkd-deploy-")) if work_dir is None else work_dir
    work_dir = work_dir.resolve()
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    address = f"127.0.0.1:{port}"

    base_env = {
        **os.environ,
        "PATH": os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", "")]),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # no internet: use this venv
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PYTHONUNBUFFERED": "1",
    }

    def env_for(home: str) -> dict[str, str]:
        (work_dir / "home" / home).mkdir(parents=True, exist_ok=True)
        return {**base_env, "FLWR_HOME": str(work_dir / "home" / home)}

    ca_cert: Path | None = None
    ssl_context: ssl.SSLContext | None = None
    superlink_tls = ["--insecure"]
    supernode_tls = ["--insecure"]
    if tls:
        paths = _load_certs_module().generate_certificates(work_dir / "certs", force=True)
        ca_cert = paths.ca_cert
        ssl_context = ssl.create_default_context(cafile=str(ca_cert))
        superlink_tls = [
            "--ssl-ca-certfile",
            str(paths.ca_cert),
            "--ssl-certfile",
            str(paths.server_cert),
            "--ssl-keyfile",
            str(paths.server_key),
        ]
        supernode_tls = ["--root-certificates", str(paths.ca_cert)]

    overrides = list(run_config)
    given = _config_keys(overrides)
    if "min-clients" not in given:
        overrides.append(f"min-clients={num_supernodes}")
    if "out-dir" not in given:
        overrides.append(f"out-dir={_toml_string(str(work_dir / 'runs'))}")

    state = f" state-dir={_toml_string(str(work_dir / 'nodes'))}"
    node_keys = [state] * num_supernodes
    if keys:
        from experiments.keys import ROSTER_FILE, create_keys, identity_file

        folder, names = work_dir / "keys", [str(i) for i in range(num_supernodes)]
        if _roster_names(folder / ROSTER_FILE) != set(names):  # the same nodes keep their keys
            create_keys(names, folder, force=True)
        overrides.append(f"secagg-roster={_toml_string(str(folder / ROSTER_FILE))}")
        node_keys = [
            state + f" secagg-identity={_toml_string(str(identity_file(folder, str(i))))}"
            f" secagg-roster={_toml_string(str(folder / ROSTER_FILE))}"
            for i in range(num_supernodes)
        ]

    cli_env = env_for("cli")
    write_flower_config(Path(cli_env["FLWR_HOME"]), address, ca_cert=ca_cert)
    flwr_command = [str(BIN_DIR / "flwr"), "run", str(app_dir), CONNECTION_NAME, "--stream"]
    for assignment in overrides:
        flwr_command += ["--run-config", assignment]

    processes = _Processes(log_dir)
    results: Path | None = None
    verdict = (1, RunStatus("not started"), "")
    groups: list[int] = []
    start = time.perf_counter()
    try:
        with _terminate_as_interrupt():
            processes.start(
                "superlink",
                [
                    str(BIN_DIR / "flower-superlink"),
                    *superlink_tls,
                    "--isolation",
                    "subprocess",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--disable-runtime-dependency-installation",
                ],
                env_for("superlink"),
            )
            scheme = "https" if tls else "http"
            _wait_for_health(
                f"{scheme}://{address}/health", ssl_context, startup_timeout, processes
            )
            for index in range(num_supernodes):
                processes.start(
                    f"supernode-{index}",
                    [
                        str(BIN_DIR / "flower-supernode"),
                        *supernode_tls,
                        "--superlink",
                        address,
                        "--isolation",
                        "subprocess",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port + 1 + index),
                        "--node-config",
                        f"partition-id={index} num-partitions={num_supernodes}" + node_keys[index],
                    ],
                    env_for(f"supernode-{index}"),
                )
            if echo:
                print("$", shlex.join(flwr_command), flush=True)
            results, timed_out = _flwr_run(
                flwr_command, cli_env, app_dir, log_dir, timeout, processes, echo
            )
            verdict = _judge(results, timed_out, cli_env, log_dir)
    finally:
        groups = processes.stop_all()
    returncode, status, cause = verdict
    return DeploymentResult(
        returncode=returncode,
        results=results,
        process_groups=tuple(groups),
        log_dir=log_dir,
        seconds=time.perf_counter() - start,
        status=status.status,
        cause=cause,
    )


def _roster_names(path: Path) -> set[str]:
    """The names of an existing roster file (empty when there is none or it is unreadable)."""
    from fedkd.secagg.errors import ConfigError
    from fedkd.secagg.identity import read_roster

    try:
        return set(read_roster(path).keys) if path.is_file() else set()
    except (ConfigError, OSError):
        return set()


def _judge(
    results: Path | None, timed_out: bool, env: dict[str, str], log_dir: Path
) -> tuple[int, RunStatus, str]:
    """Exit code, status and one-line cause, from the run's status (``flwr ls``) and logs."""
    lines = (log_dir / "flwr-run.log").read_text(errors="replace").splitlines()
    run_ids = [m.group(1) for line in lines if (m := _RUN_ID.search(line))]
    if not run_ids:
        status = RunStatus("not started")
    else:
        status = wait_for_status(
            int(run_ids[0]), env, CONNECTION_NAME, patience=5 if timed_out else 20
        )
    if timed_out:
        return 124, status, "still running at the timeout: stopped"
    if status.completed and results is not None:
        return 0, status, ""
    cause = failure_cause(status, lines, log_dir / "superlink.log")
    if status.completed:
        cause = "the run completed but the ServerApp reported no results folder"
    return 1, status, cause


def _flwr_run(
    command: list[str],
    env: dict[str, str],
    app_dir: Path,
    log_dir: Path,
    timeout: float | None,
    processes: _Processes,
    echo: bool,
) -> tuple[Path | None, bool]:
    """Run ``flwr run`` (its own process group, stopped with the others) and read its output;
    return the results folder reported and whether the timeout stopped it."""
    process = subprocess.Popen(
        command,
        cwd=app_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    processes.started.append(("flwr-run", process))
    assert process.stdout is not None
    deadline = None if timeout is None else time.monotonic() + timeout
    results: Path | None = None
    timed_out = False
    os.set_blocking(process.stdout.fileno(), False)
    buffer = b""
    with open(log_dir / "flwr-run.log", "wb") as log_file:
        while True:
            chunk = process.stdout.read()
            if chunk:
                log_file.write(chunk)
                log_file.flush()
                if echo:
                    sys.stdout.write(chunk.decode(errors="replace"))
                    sys.stdout.flush()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace")
                    if RESULT_MARKER in text:
                        results = Path(text.split(RESULT_MARKER, 1)[1].strip())
            elif process.poll() is not None:
                break
            else:
                if deadline is not None and time.monotonic() > deadline:
                    if echo:
                        print(f"\nflwr run still going after {timeout:.0f} s: stopping", flush=True)
                    signal_group(process.pid, signal.SIGKILL)
                    process.wait()
                    timed_out = True
                    break
                processes.check_alive()
                time.sleep(0.1)
    text = buffer.decode(errors="replace")
    if RESULT_MARKER in text:
        results = Path(text.split(RESULT_MARKER, 1)[1].strip())
    return results, timed_out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.deploy_local",
        description="Run fedkd on a real loopback deployment: flower-superlink, N "
        "flower-supernode processes and `flwr run`; stop them all at the end.",
    )
    parser.add_argument("--supernodes", type=int, default=3, help="SuperNodes (clients)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="SuperLink HTTP port; SuperNode i uses port+1+i",
    )
    parser.add_argument("--tls", action="store_true", help="HTTPS with a generated CA")
    parser.add_argument(
        "--no-keys",
        dest="keys",
        action="store_false",
        help="no fedkd keys: the run's own secagg-roster (deployed SuperNodes refuse the "
        "simulated one; 'secagg-roster=\"\"' needs allow-curious, which this script never sets)",
    )
    parser.add_argument(
        "--run-config",
        action="append",
        default=[],
        metavar="'K=V ...'",
        help="run-config overrides, as for `flwr run --run-config`",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="logs, Flower homes, certificates, results (default: temporary)",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds for the run")
    parser.add_argument("--quiet", action="store_true", help="do not stream the run's output")
    args = parser.parse_args(argv)
    try:
        result = deploy_local(
            args.supernodes,
            args.run_config,
            port=args.port,
            tls=args.tls,
            keys=args.keys,
            work_dir=args.work_dir,
            timeout=args.timeout,
            echo=not args.quiet,
        )
    except KeyboardInterrupt:
        print("\ninterrupted: every process started was stopped", file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError) as error:
        print(f"deployment failed: {error}", file=sys.stderr)
        return 1
    print(f"\nlogs: {result.log_dir}  ({result.seconds:.0f} s)")
    if result.results is not None:
        print(f"results: {result.results}")
    if result.returncode != 0:
        print(f"run failed ({result.status}): {result.cause}", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
