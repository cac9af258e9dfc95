"""The processes of a loopback Flower deployment, each one startable, killable and restartable.

:class:`LoopbackDeployment` owns one ``flower-superlink`` (its state in an SQLite database,
``--database``, so a restarted SuperLink keeps its nodes and runs) and N ``flower-supernode``
processes on 127.0.0.1, and submits runs with ``flwr run`` (:class:`FlwrRun`). Fault drills use
its verbs: :meth:`~LoopbackDeployment.kill` a component with SIGKILL (and everything it
started: the SuperLink's SuperExec and ServerApp, a SuperNode's ClientApps), start it again,
route a SuperNode through a :class:`~experiments.netfault.Relay` to drop or slow its
connection, or cap its CPU. ``experiments/deploy_local.py`` is the one-run command over it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import IO

from experiments import PROJECT_ROOT
from experiments.netfault import Relay
from fedkd.cli.launch import RESULT_MARKER
from fedkd.cli.processes import alive, descendants, process_table, signal_pids

CONNECTION_NAME = "fedkd-local"
BIN_DIR = Path(sys.executable).parent
_RUN_ID = re.compile(r"Successfully started run (\d+)")


def load_certs_module() -> ModuleType:
    """``deploy/certs.py`` (the test CA and SuperLink certificate generator)."""
    path = PROJECT_ROOT / "deploy" / "certs.py"
    spec = importlib.util.spec_from_file_location("fedkd_deploy_certs", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"certificate generator not found at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


def toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_flower_config(
    flwr_home: Path, address: str, *, ca_cert: Path | None, name: str = CONNECTION_NAME
) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one SuperLink connection named ``name``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    security = (
        "insecure = true"
        if ca_cert is None
        else f"root-certificates = {toml_string(str(ca_cert.resolve()))}"
    )
    path = flwr_home / "config.toml"
    path.write_text(
        f'[superlink]\ndefault = "{name}"\n\n'
        f"[superlink.{name}]\naddress = {toml_string(address)}\n{security}\n",
        encoding="utf-8",
    )
    return path


def kill_tree(pid: int, signum: int = signal.SIGKILL) -> list[int]:
    """Signal ``pid`` and every process below it (Flower starts some in their own session,
    so process groups do not reach them); returns the pids signalled."""
    victims = [pid, *descendants([pid])]
    signal_pids(victims, signum)
    return victims


class FlwrRun:
    """One ``flwr run --stream`` in the background: its output, run id and results folder."""

    def __init__(self, command: list[str], env: dict[str, str], log_file: Path) -> None:
        self.command = command
        self.lines: list[str] = []
        self.run_id: int | None = None
        self.results: Path | None = None
        self._log = open(log_file, "a", encoding="utf-8")  # noqa: SIM115 (closed by the reader)
        self._log.write(f"$ {shlex.join(command)}\n")
        self.process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self._log:
            for line in self.process.stdout:
                self._log.write(line)
                self._log.flush()
                self.lines.append(line.rstrip("\n"))
                if self.run_id is None and (match := _RUN_ID.search(line)):
                    self.run_id = int(match.group(1))
                if RESULT_MARKER in line:
                    self.results = Path(line.split(RESULT_MARKER, 1)[1].strip())

    def wait(self, timeout: float | None) -> bool:
        """Wait for the stream to end; False if ``timeout`` passed first."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        self._reader.join(timeout=10)
        return True

    def stop(self) -> None:
        if self.process.poll() is None:
            kill_tree(self.process.pid)
            self.process.wait()
        self._reader.join(timeout=10)


class LoopbackDeployment:
    """A SuperLink and ``num_supernodes`` SuperNodes on 127.0.0.1, as separate processes.

    Parameters
    ----------
    num_supernodes
        SuperNode ``i`` gets ``partition-id=i num-partitions=N`` and Runtime API port
        ``port + 1 + i``.
    work_dir
        Flower homes, logs (``logs/<name>.log``, a restart appends), certificates, keys, the
        SuperLink's database.
    port
        The SuperLink's HTTP port (Fleet, Control and Runtime API).
    tls
        HTTPS with a freshly generated CA and certificate (``deploy/certs.py``).
    keys
        Real identities from ``fedkd keys``: one per SuperNode, passed in its node config with
        the operator's copy of the roster; the ServerApp gets the roster path
        (:attr:`run_config`).
    relayed
        SuperNodes that reach the SuperLink through a :class:`Relay` (:attr:`relays`), so a
        drill can cut or slow their connection.
    """

    def __init__(
        self,
        num_supernodes: int,
        work_dir: Path,
        *,
        port: int,
        tls: bool = False,
        keys: bool = False,
        relayed: Sequence[int] = (),
    ) -> None:
        if num_supernodes < 1:
            raise ValueError(f"num_supernodes must be at least 1, got {num_supernodes}")
        self.num_supernodes, self.port, self.tls = num_supernodes, port, tls
        self.work_dir = work_dir.resolve()
        self.log_dir = self.work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.address = f"127.0.0.1:{port}"
        self.database = self.work_dir / "superlink.db"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.cgroups: list[Path] = []
        self.runs: list[FlwrRun] = []
        self.run_config: list[str] = []  # what every run needs (the roster path with keys)
        self._logs: list[IO[bytes]] = []
        self.ca_cert: Path | None = None
        self._link_tls, self._node_tls = ["--insecure"], ["--insecure"]
        if tls:
            paths = load_certs_module().generate_certificates(self.work_dir / "certs", force=True)
            self.ca_cert = paths.ca_cert
            self._link_tls = ["--ssl-ca-certfile", str(paths.ca_cert)]
            self._link_tls += ["--ssl-certfile", str(paths.server_cert)]
            self._link_tls += ["--ssl-keyfile", str(paths.server_key)]
            self._node_tls = ["--root-certificates", str(paths.ca_cert)]
        self._node_keys = [""] * num_supernodes
        if keys:
            self._make_keys()
        self.relays = {index: Relay(self.address, up=False) for index in relayed}
        self.cli_env = self.env_for("cli")
        write_flower_config(Path(self.cli_env["FLWR_HOME"]), self.address, ca_cert=self.ca_cert)

    def _make_keys(self) -> None:
        from fedkd.cli.keygen import ROSTER_FILE, create_keys, identity_file

        folder, names = self.work_dir / "keys", [str(i) for i in range(self.num_supernodes)]
        if _roster_names(folder / ROSTER_FILE) != set(names):  # the same nodes keep their keys
            create_keys(names, folder, force=True)
        roster = toml_string(str(folder / ROSTER_FILE))
        self.run_config.append(f"secagg-roster={roster}")
        self._node_keys = [
            f" secagg-identity={toml_string(str(identity_file(folder, str(i))))}"
            f" secagg-roster={roster}"
            for i in range(self.num_supernodes)
        ]

    def env_for(self, home: str) -> dict[str, str]:
        """The environment of one component: this venv, no runtime installs, its own home."""
        (self.work_dir / "home" / home).mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "PATH": os.pathsep.join([str(BIN_DIR), os.environ.get("PATH", "")]),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # no internet: use this venv
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "PYTHONUNBUFFERED": "1",
            "FLWR_HOME": str(self.work_dir / "home" / home),
        }

    # ------------------------------------------------------------------ processes
    def _start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log_file = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop_all)
        self._logs.append(log_file)
        log_file.write(f"$ {shlex.join(command)}\n".encode())
        log_file.flush()
        self.processes[name] = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_superlink(self, patience: float = 60.0) -> None:
        """Start (or restart) the SuperLink on its database and wait until it answers."""
        self._start(
            "superlink",
            [
                str(BIN_DIR / "flower-superlink"),
                *self._link_tls,
                "--isolation",
                "subprocess",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database",
                str(self.database),
                "--disable-runtime-dependency-installation",
            ],
            self.env_for("superlink"),
        )
        self._wait_for_health(patience)

    def supernode_name(self, index: int) -> str:
        return f"supernode-{index}"

    def start_supernode(self, index: int) -> None:
        """Start (or restart) SuperNode ``index``: a new process, so a new node id and a
        fresh in-memory state, with the same partition, port, identity and state folder
        (node config ``state-dir``: what the node keeps across its restarts)."""
        relay = self.relays.get(index)
        target = self.address if relay is None else relay.address
        # The node's own state folder outlives its process (a restart keeps what it released).
        state_dir = self.work_dir / "node-state" / str(index)
        state_dir.mkdir(parents=True, exist_ok=True)
        config = (
            f"partition-id={index} num-partitions={self.num_supernodes} "
            f"state-dir={toml_string(str(state_dir))}"
        )
        self._start(
            self.supernode_name(index),
            [
                str(BIN_DIR / "flower-supernode"),
                *self._node_tls,
                "--superlink",
                target,
                "--isolation",
                "subprocess",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port + 1 + index),
                "--node-config",
                config + self._node_keys[index],
            ],
            self.env_for(self.supernode_name(index)),
        )

    def start(self, patience: float = 60.0) -> None:
        """The SuperLink (``patience`` seconds to answer), then every SuperNode."""
        self.start_superlink(patience)
        for relay in self.relays.values():
            relay.restore()
        for index in range(self.num_supernodes):
            self.start_supernode(index)

    def kill(self, name: str) -> list[int]:
        """SIGKILL a component and everything it started; returns the pids killed."""
        process = self.processes[name]
        victims = kill_tree(process.pid)
        process.wait()
        deadline = time.monotonic() + 10
        while alive(victims) and time.monotonic() < deadline:
            time.sleep(0.05)
        return victims

    def kill_server(self) -> None:
        """SIGKILL the SuperLink, its SuperExec and the ServerApp (the server machine dies)."""
        self.kill("superlink")

    # ------------------------------------------------------------------ fault verbs
    def kill_node(self, index: int) -> None:
        self.kill(self.supernode_name(index))

    def restart_node(self, index: int) -> None:
        self.start_supernode(index)

    def restart_server(self) -> None:
        self.start_superlink()

    def cut_link(self, index: int) -> None:
        self.relays[index].cut()

    def restore_link(self, index: int) -> None:
        self.relays[index].restore()

    def throttle(self, index: int, cpus: float) -> None:
        self.cap_cpu(index, cpus)

    def unthrottle(self, index: int) -> None:
        """Lift the cap of :meth:`cap_cpu` (the group stays, without a quota)."""
        group = self._cgroup(index)
        if group.is_dir():
            (group / "cpu.cfs_quota_us").write_text("-1")

    def _cgroup(self, index: int) -> Path:
        return Path("/sys/fs/cgroup/cpu") / f"fedkd-{os.getpid()}-{index}"

    def cap_cpu(self, index: int, fraction: float) -> Path:
        """Cap SuperNode ``index`` and all it starts at ``fraction`` of one core (a cgroup-v1
        CPU quota, what ``docker run --cpus`` sets); returns the cgroup folder."""
        group = self._cgroup(index)
        group.mkdir(exist_ok=True)
        self.cgroups.append(group)
        period = 100_000
        (group / "cpu.cfs_period_us").write_text(str(period))
        (group / "cpu.cfs_quota_us").write_text(str(max(1000, int(fraction * period))))
        root = self.processes[self.supernode_name(index)].pid
        for pid in [root, *descendants([root])]:
            try:
                (group / "cgroup.procs").write_text(str(pid))
            except OSError:  # gone meanwhile
                continue
        return group

    def submit(self, overrides: Sequence[str], app_dir: Path = PROJECT_ROOT) -> FlwrRun:
        """``flwr run <app> fedkd-local --stream`` with the deployment's and these overrides."""
        command = [str(BIN_DIR / "flwr"), "run", str(app_dir), CONNECTION_NAME, "--stream"]
        for assignment in [*self.run_config, *overrides]:
            command += ["--run-config", assignment]
        run = FlwrRun(command, self.cli_env, self.log_dir / "flwr-run.log")
        self.runs.append(run)
        return run

    def resume(self, folder: Path, folder_in_app: str = "") -> FlwrRun:
        """``fedkd run --connection fedkd-local --resume FOLDER``: the stopped run goes on."""
        command = [sys.executable, "-m", "fedkd.cli", "run", "--connection"]
        command += [CONNECTION_NAME, "--resume", str(folder)]
        if folder_in_app:
            command += ["--server-path", folder_in_app]
        run = FlwrRun(command, self.cli_env, self.log_dir / "flwr-run.log")
        self.runs.append(run)
        return run

    def check_alive(self) -> None:
        """Raise when a component exited that nobody stopped."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {process.returncode}; see "
                    f"{self.log_dir / (name + '.log')}"
                )

    def stop_all(self, timeout: float = 15.0) -> list[int]:
        """SIGTERM everything started (newest first), SIGKILL what is left after ``timeout``;
        returns the pids that were running."""
        for run in self.runs:
            run.stop()
        leaders = [p.pid for p in reversed(self.processes.values()) if p.poll() is None]
        table = process_table()
        pids = [pid for pid in [*leaders, *descendants(leaders)] if pid in table]
        signal_pids(pids, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pids) and time.monotonic() < deadline:
            for process in self.processes.values():
                process.poll()  # reap the leaders so they do not linger as zombies
            time.sleep(0.2)
        signal_pids(alive(pids), signal.SIGKILL)
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        for relay in self.relays.values():
            relay.close()
        for group in self.cgroups:
            with contextlib.suppress(OSError):
                group.rmdir()  # empty once its processes are gone
        for log_file in self._logs:
            log_file.close()
        return pids

    def _wait_for_health(self, patience: float) -> None:
        scheme = "https" if self.tls else "http"
        url = f"{scheme}://{self.address}/health"
        context = (
            None if self.ca_cert is None else ssl.create_default_context(cafile=str(self.ca_cert))
        )
        deadline = time.monotonic() + patience
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=1.0, context=context):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no answer from {url} after {patience:.0f} s") from None
                time.sleep(0.2)

    def __enter__(self) -> LoopbackDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _roster_names(path: Path) -> set[str]:
    """The names of an existing roster file (empty when there is none or it is unreadable)."""
    from fedkd.secagg.errors import ConfigError
    from fedkd.secagg.identity import read_roster

    try:
        return set(read_roster(path).keys) if path.is_file() else set()
    except (ConfigError, OSError):
        return set()
