"""The compose stack as a fault target: any number of SuperNode containers, killable one by one.

:class:`ComposeStack` takes the user-facing ``docker-compose.yml`` (and, with TLS,
``deploy/compose.tls.yml``), scales it to N SuperNodes (:func:`scale_config`: copies of
``supernode-0`` / ``superexec-clientapp-0`` with the next partition and Runtime API port), moves
it to loopback as ``deploy/compose_e2e.py`` does, and offers the verbs of a fault drill
(``experiments/fault_drill.py``): ``docker kill`` a SuperNode container and ``docker start`` it
again (a new SuperNode process: a new node id, a fresh state), kill the server side
(SuperLink and ServerApp containers) and start it again on the SuperLink's database (in the
container's own filesystem, which ``docker start`` keeps), cut a SuperNode's link (it reaches
the SuperLink through a :class:`~experiments.netfault.Relay`), cap a client's CPUs
(``docker update --cpus``). The ServerApp's results volume is read on the host, where Docker
keeps it, so a drill can watch the run's journal as it is written.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent
for _path in (HERE, PROJECT_ROOT):  # deploy/ is not a package; fedkd/ and experiments/ are
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import compose_e2e as e2e  # noqa: E402

from experiments.deployment import FlwrRun, load_certs_module, write_flower_config  # noqa: E402
from experiments.netfault import Relay  # noqa: E402

RESULTS_IN_APP = "/app/runs"
# The server side runs on a machine of its own in a real deployment; here every container gets
# an equal CPU share by default, so on two cores with 40 client containers the SuperLink got
# ~1/42 of them and let TLS handshakes time out (and Flower gave the connections up). A larger
# share for the SuperLink and the ServerApp only rebalances among this stack's containers.
SERVER_SIDE = ("superlink", "superexec-serverapp")
SERVER_SHARES = 16 * 1024
KEYS_IN_APP = "/app/keys"
STATE_IN_APP = "/app/state"


def _set_flag(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def scale_config(config: Mapping[str, Any], supernodes: int) -> dict[str, Any]:
    """``config`` with SuperNodes ``0..supernodes-1`` (each with its ClientApp SuperExec),
    made from ``supernode-0`` and ``superexec-clientapp-0``; ``num-partitions`` set on all."""
    if supernodes < 1:
        raise ValueError(f"supernodes must be >= 1, got {supernodes}")
    result = copy.deepcopy(dict(config))
    services = result["services"]
    node, executor = services["supernode-0"], services["superexec-clientapp-0"]
    base_port = int(node["command"][node["command"].index("--port") + 1])
    for name in [n for n in services if re.fullmatch(r"(supernode|superexec-clientapp)-\d+", n)]:
        del services[name]
    for index in range(supernodes):
        port = str(base_port + index)
        clone = copy.deepcopy(node)
        clone["command"] = _set_flag(
            [str(a) for a in clone["command"]],
            "--node-config",
            f"partition-id={index} num-partitions={supernodes}",
        )
        clone["command"] = _set_flag(clone["command"], "--port", port)
        services[f"supernode-{index}"] = clone
        runner = copy.deepcopy(executor)
        runner["command"] = _set_flag(
            [str(a) for a in runner["command"]],
            "--runtime-api-address",
            f"supernode-{index}:{port}",
        )
        runner["depends_on"] = [f"supernode-{index}"]
        services[f"superexec-clientapp-{index}"] = runner
    return result


class ComposeStack:
    """The compose deployment on loopback with ``supernodes`` SuperNode containers."""

    def __init__(
        self,
        work_dir: Path,
        *,
        supernodes: int = 3,
        tls: bool = False,
        keys: bool = True,
        relayed: Sequence[int] = (),
    ) -> None:
        self.e2e, self.work_dir = e2e, work_dir.resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.work_dir / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.env = dict(os.environ)
        self.ca_cert: Path | None = None
        if tls:
            certs = load_certs_module().generate_certificates(self.work_dir / "certs", force=True)
            for path in (certs.ca_cert, certs.server_cert, certs.server_key):
                os.chown(path, e2e.APP_UID, e2e.APP_UID)  # the containers run as user app
            self.env["FEDKD_CERTS"] = str(certs.ca_cert.parent)
            self.ca_cert = certs.ca_cert
        merged = yaml.safe_load(e2e._compose(e2e.compose_files(tls), self.env, "config"))
        loopback = e2e.loopback_config(scale_config(merged, supernodes), e2e.read_images_env())
        for service in SERVER_SIDE:  # as if on a machine of their own (see SERVER_SHARES)
            loopback["services"][service]["cpu_shares"] = SERVER_SHARES
        self.run_config: list[str] = []  # what every run needs (the roster path with keys)
        self._add_state_dirs(loopback, supernodes)
        if keys:
            self._add_identities(loopback, supernodes)
        link = f"127.0.0.1:{e2e.LINK_PORT}"
        # Down until the SuperLink listens (up()), so a relayed SuperNode retries meanwhile.
        self.relays = {index: Relay(link, up=False) for index in relayed}
        for index, relay in self.relays.items():
            spec = loopback["services"][f"supernode-{index}"]
            spec["command"] = _set_flag(spec["command"], "--superlink", relay.address)
        self.file = self.work_dir / "stack.yml"
        self.file.write_text(yaml.safe_dump(loopback))
        self.services = list(loopback["services"])
        home = self.work_dir / "flwr-home"  # a private Flower home: one fedkd-docker connection
        write_flower_config(home, link, ca_cert=self.ca_cert, name=e2e.CONNECTION)
        self.cli_env = {
            **os.environ,
            "FLWR_HOME": str(home),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        }
        self.runs: list[FlwrRun] = []

    def _add_state_dirs(self, config: dict[str, Any], supernodes: int) -> None:
        """Each client's own state folder (node config ``state-dir``), on the host, mounted
        into the container that runs its ClientApps: it outlives a killed container."""
        services = config["services"]
        for index in range(supernodes):
            folder = self.work_dir / "node-state" / str(index)
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, self.e2e.APP_UID, self.e2e.APP_UID)
            runner = services[f"superexec-clientapp-{index}"]
            runner.setdefault("volumes", []).append(f"{folder}:{STATE_IN_APP}")
            node = services[f"supernode-{index}"]
            config_text = node["command"][node["command"].index("--node-config") + 1]
            node["command"] = _set_flag(
                node["command"], "--node-config", f'{config_text} state-dir="{STATE_IN_APP}"'
            )

    def _add_identities(self, config: dict[str, Any], supernodes: int) -> None:
        """Real identities from ``fedkd keys``: each client container gets its own identity
        and the roster (read-only mounts), named in its SuperNode's node config; the ServerApp
        the roster. Nothing of it travels through the SuperLink."""
        from fedkd.cli.keygen import ROSTER_FILE, create_keys, identity_file

        folder = self.work_dir / "keys"
        create_keys([str(i) for i in range(supernodes)], folder, force=True)
        for path in folder.iterdir():
            os.chown(path, self.e2e.APP_UID, self.e2e.APP_UID)  # the containers run as app
        roster = f"{KEYS_IN_APP}/{ROSTER_FILE}"
        mount = f"{folder / ROSTER_FILE}:{roster}:ro"
        services = config["services"]
        services["superexec-serverapp"].setdefault("volumes", []).append(mount)
        self.run_config.append(f'secagg-roster="{roster}"')
        for index in range(supernodes):
            own = identity_file(folder, str(index))
            inside = f"{KEYS_IN_APP}/{own.name}"
            runner = services[f"superexec-clientapp-{index}"]
            runner.setdefault("volumes", []).extend([mount, f"{own}:{inside}:ro"])
            node = services[f"supernode-{index}"]
            config_text = node["command"][node["command"].index("--node-config") + 1]
            node["command"] = _set_flag(
                node["command"],
                "--node-config",
                f'{config_text} secagg-identity="{inside}" secagg-roster="{roster}"',
            )

    # ------------------------------------------------------------------ compose
    def compose(self, *args: str) -> str:
        return str(self.e2e._compose([self.file], self.env, *args))

    def up(self, patience: float = 600.0, batch: int = 5, pause: float = 10.0) -> None:
        """The SuperLink first, then the clients ``batch`` at a time ``pause`` seconds apart:
        a busy machine starting dozens of Python processes at once stalls TLS handshakes
        past Flower's timeouts."""
        self.compose("down", "-v", "--remove-orphans")  # leftovers of an aborted run
        self.compose("up", "-d", "--no-build", "superlink")
        self.e2e._wait_for_port(self.e2e.LINK_PORT, patience=patience)
        self.compose("up", "-d", "--no-build", "superexec-serverapp")
        clients = sorted(
            int(name.rsplit("-", 1)[1]) for name in self.services if name.startswith("supernode-")
        )
        for first in range(0, len(clients), batch):
            group = clients[first : first + batch]
            names = [f"{kind}-{i}" for i in group for kind in ("supernode", "superexec-clientapp")]
            self.compose("up", "-d", "--no-build", *names)
            if first + batch < len(clients):
                time.sleep(pause)
        for relay in self.relays.values():
            relay.restore()

    def down(self) -> None:
        with open(self.log_dir / "compose.log", "w") as log:
            command = [
                "docker-compose",
                "--project-name",
                self.e2e.PROJECT_NAME,
                "-f",
                str(self.file),
            ]
            subprocess.run(
                [*command, "logs", "--no-color"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        for run in self.runs:
            run.stop()
        for relay in self.relays.values():
            relay.close()
        self.compose("down", "-v", "--remove-orphans")

    def container(self, service: str) -> str:
        found = self.compose("ps", "-q", service).strip()
        if not found:
            raise RuntimeError(f"no container for service {service}")
        return found

    def main_pids(self) -> dict[str, int]:
        """Service -> the host pid of its container's main process (running containers)."""
        label = f"label=com.docker.compose.project={self.e2e.PROJECT_NAME}"
        listing = ["docker", "ps", "-q", "--filter", label]
        ids = subprocess.run(listing, capture_output=True, text=True, check=True).stdout.split()
        if not ids:
            return {}
        template = '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Pid}}'
        inspect = ["docker", "inspect", "-f", template, *ids]
        done = subprocess.run(inspect, capture_output=True, text=True, check=False).stdout
        pids = {}
        for line in done.splitlines():
            service, _, pid = line.rpartition(" ")
            if pid.isdigit() and int(pid) > 0:
                pids[service] = int(pid)
        return pids

    def _docker(self, *args: str) -> None:
        subprocess.run(["docker", *args], capture_output=True, text=True, check=True)

    @property
    def results_on_host(self) -> Path:
        """Where the ServerApp's ``/app/runs`` volume is on this machine."""
        volume = f"{self.e2e.PROJECT_NAME}_fedkd-runs"
        inspect = ["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", volume]
        return Path(
            subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.strip()
        )

    # ------------------------------------------------------------------ fault verbs
    def submit(self, overrides: Sequence[str]) -> FlwrRun:
        command = [
            str(Path(sys.executable).with_name("flwr")),
            "run",
            ".",
            self.e2e.CONNECTION,
            "--stream",
        ]
        for assignment in [*self.run_config, *overrides]:
            command += ["--run-config", assignment]
        run = FlwrRun(command, self.cli_env, self.log_dir / "flwr-run.log")
        self.runs.append(run)
        return run

    def resume(self, folder: Path, folder_in_app: str) -> FlwrRun:
        """``fedkd run --connection fedkd-docker --resume FOLDER --server-path PATH``."""
        command = [sys.executable, "-m", "fedkd.cli", "run", "--connection"]
        command += [self.e2e.CONNECTION, "--resume", str(folder), "--server-path", folder_in_app]
        run = FlwrRun(command, self.cli_env, self.log_dir / "flwr-run.log")
        self.runs.append(run)
        return run

    def kill_node(self, index: int) -> None:
        self._docker("kill", self.container(f"supernode-{index}"))

    def restart_node(self, index: int) -> None:
        self._docker("start", self.container(f"supernode-{index}"))

    def kill_server(self) -> None:
        for service in ("superexec-serverapp", "superlink"):
            self._docker("kill", self.container(service))

    def restart_server(self) -> None:
        self._docker("start", self.container("superlink"))
        self.e2e._wait_for_port(self.e2e.LINK_PORT, patience=120)
        self._docker("start", self.container("superexec-serverapp"))

    def cut_link(self, index: int) -> None:
        self.relays[index].cut()

    def restore_link(self, index: int) -> None:
        self.relays[index].restore()

    def throttle(self, index: int, cpus: float) -> None:
        """``docker update --cpus``: the client's ClientApps (and its SuperNode) get ``cpus``."""
        for service in (f"superexec-clientapp-{index}", f"supernode-{index}"):
            self._docker("update", "--cpus", f"{cpus:g}", self.container(service))

    def unthrottle(self, index: int) -> None:
        """Lift the cap (``--cpus 0``: no limit)."""
        self.throttle(index, 0.0)
