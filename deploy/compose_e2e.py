"""Bring the real compose stack up in Docker on loopback, run FedKD with ``flwr run``, tear down.

    python deploy/compose_e2e.py [--tls] [--work-dir DIR] [--rounds 2] [--timeout 900]

Needs a Docker engine, ``docker-compose`` and the images of ``deploy/build_images.sh``
(``deploy/compose_test.sh`` does all of it). The user-facing ``docker-compose.yml`` (and, with
``--tls``, ``deploy/compose.tls.yml``) is used as it is: their merged configuration
(``docker-compose config``) is written out with every service on the host network and only the
addresses in each service's own command rewritten: service names become ``127.0.0.1``,
``--host 0.0.0.0`` becomes ``--host 127.0.0.1`` and the ports move to a test range (8000 ->
18000, 9094 -> 18094, ...), so nothing listens beyond loopback and nothing collides with a
developer's SuperLink on 8000. (A compose v1 override cannot do this: it can add published
``ports`` but never drop them, and a host-network container cannot publish any.) Where the
official Flower images could not be pulled, the local stand-ins replace them.

The run is checked the way a user would: ``flwr run . fedkd-docker --stream``, the run's status
from ``flwr ls``, and the ServerApp's ``history.json`` copied out of the results volume. The
stack is always taken down with ``down -v`` (images are kept).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent
for _path in (HERE, PROJECT_ROOT):  # deploy/ is not a package; fedkd/ and experiments/ are
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from fedkd.cli.flower_status import read_run_status  # noqa: E402

CACHE = Path(os.environ.get("FEDKD_DOCKER_CACHE", "/var/cache/fedkd-docker"))
# A second stack beside a running one (a soak) needs its own name and ports.
PROJECT_NAME = os.environ.get("FEDKD_COMPOSE_PROJECT", "fedkd-e2e")
CONNECTION = "fedkd-docker"
# The SuperLink; SuperNode i gets LINK_PORT + 94 + i (as 8000 -> 9094).
LINK_PORT = int(os.environ.get("FEDKD_COMPOSE_PORT", "18000"))
APP_UID = 49999  # user `app` in Flower's images
# Small local work; a generous stage deadline, since in a deployment every message starts a
# fresh ClientApp process (Python, torch, fedkd, data) and CI machines are shared. The roster
# is the stack's (`fedkd keys` identities, one per SuperNode: deploy/compose_stack.py), so the
# run is secure against a malicious server; deployed SuperNodes refuse the simulated roster
# and, without `allow-curious=true`, the curious mode.
DEFAULT_RUN_CONFIG = (
    "num-rounds={rounds} local-epochs=1 warmup-epochs=0 distill-epochs=1 secagg=true "
    'min-clients=3 stage-timeout=600 out-dir="/app/runs" run-name="compose"'
)


@dataclass(frozen=True)
class StackResult:
    """What one compose run did.

    Attributes
    ----------
    run_status
        The run's status as ``flwr ls`` reports it (``finished:completed`` on success).
    history
        The rows of the ServerApp's ``history.json`` ([] when none was written).
    results_dir
        The results volume's content, copied to the host.
    log_dir
        ``flwr-run.log`` and ``compose.log`` (every container's output).
    up_seconds
        From ``docker-compose up`` until the SuperLink accepts connections.
    run_seconds
        ``flwr run`` from submission to the end of its log stream.
    total_seconds
        Everything, teardown included.
    """

    run_status: str
    history: list[dict[str, Any]]
    results_dir: Path
    log_dir: Path
    up_seconds: float
    run_seconds: float
    total_seconds: float


def compose_files(tls: bool) -> list[str]:
    """The user-facing compose files of a plain or TLS deployment, in ``-f`` order."""
    return ["docker-compose.yml", *(["deploy/compose.tls.yml"] if tls else [])]


def _compose(files: Sequence[str | Path], env: Mapping[str, str], *args: str) -> str:
    command = ["docker-compose", "--project-name", PROJECT_NAME]
    for name in files:
        command += ["-f", str(name)]
    done = subprocess.run(
        [*command, *args], cwd=PROJECT_ROOT, env=dict(env), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command + list(args))} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def _loopback_port(service: str, original: int) -> int:
    """The test port standing in for ``original`` (8000 -> 18000, 9094 -> 18094, ...)."""
    if original < 1 or LINK_PORT + original % 1000 > 65535:
        raise ValueError(f"{service}: port {original} cannot be mapped to the test range")
    return LINK_PORT + original % 1000


def _own_ports(services: Mapping[str, Any]) -> dict[str, int]:
    """``service -> --port`` of every service that listens (SuperLink, SuperNodes)."""
    ports: dict[str, int] = {}
    for name, spec in services.items():
        args = [str(arg) for arg in spec.get("command") or []]
        if "--port" in args:
            ports[name] = int(args[args.index("--port") + 1])
    return ports


def loopback_config(
    config: Mapping[str, Any], images: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``config`` with every service on the host network, listening on 127.0.0.1 only.

    Parameters
    ----------
    config
        The merged compose configuration of the user's files (``docker-compose config``).
    images
        ``{"superlink": image, "supernode": image}`` replacing Flower's official images
        (e.g. the local stand-ins); services keep their image when absent.

    Returns
    -------
    dict
        A copy of ``config`` in which each service has ``network_mode: host``, no published
        ``ports`` (a host-network container cannot publish any, and a compose v1 override can
        add ports but never drop them, hence a whole file rather than an override), the image
        where replaced and its own command with the addresses moved to 127.0.0.1 and the test
        ports. Everything else (flags, TLS, secrets, volumes, environment) is untouched.
    """
    services = config.get("services")
    if not services:
        raise ValueError("compose configuration has no services")
    ports = _own_ports(services)
    if not ports:
        raise ValueError("no service of the compose configuration has a --port")
    targets = {
        f"{name}:{port}": f"127.0.0.1:{_loopback_port(name, port)}" for name, port in ports.items()
    }
    result = copy.deepcopy(dict(config))
    for name, spec in result["services"].items():
        args = [str(arg) for arg in spec.get("command") or []]
        rewritten: list[str] = []
        for index, arg in enumerate(args):
            flag = args[index - 1] if index else ""
            if flag == "--host":
                arg = "127.0.0.1"
            elif flag == "--port":
                arg = str(_loopback_port(name, int(arg)))
            rewritten.append(targets.get(arg, arg))
        unresolved = [a for a in rewritten if re.fullmatch(r"[a-z][\w-]*:\d+", a)]
        if unresolved:
            raise ValueError(f"{name}: no loopback address for {unresolved}")
        spec.pop("ports", None)
        spec.pop("networks", None)
        spec["network_mode"] = "host"
        spec["command"] = rewritten
        kind = name.split("-")[0]
        if images and kind in images and str(spec.get("image", "")).startswith("flwr/"):
            spec["image"] = images[kind]
    result.pop("networks", None)
    return result


def read_images_env(path: Path = CACHE / "images.env") -> dict[str, str]:
    """Image names ``deploy/build_images.sh`` chose (``{"superlink": ..., "supernode": ...}``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run deploy/build_images.sh first")
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {"superlink": values["SUPERLINK_IMAGE"], "supernode": values["SUPERNODE_IMAGE"]}


def _wait_for_port(port: int, patience: float) -> None:
    deadline = time.monotonic() + patience
    while True:
        with socket.socket() as sock:
            sock.settimeout(1.0)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {patience:.0f} s")
        time.sleep(0.25)


def run_stack(
    *, tls: bool, work_dir: Path, rounds: int = 2, timeout: float = 900.0, supernodes: int = 3
) -> StackResult:
    """Start the stack, run FedKD for ``rounds`` rounds through it, copy the results, tear down.

    Parameters
    ----------
    tls
        Add ``deploy/compose.tls.yml`` (HTTPS SuperLink; certificates from ``deploy/certs.py``).
    work_dir
        Receives the loopback compose file, certificates, identities, Flower home, logs and
        the copied results.
    rounds
        ``num-rounds`` of the run (secure aggregation with ``fedkd keys`` identities).
    timeout
        Seconds ``flwr run`` may take.
    supernodes
        SuperNode containers (``deploy/compose_stack.py`` scales the file's three).

    Returns
    -------
    StackResult
        Status, history and timings; the stack is down (``down -v``) when this returns.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    from compose_stack import ComposeStack  # it builds on this module: imported here

    start = time.perf_counter()
    stack = ComposeStack(work_dir, supernodes=supernodes, tls=tls)
    results = work_dir / "runs"
    status, run_seconds, up_seconds = "not started", 0.0, 0.0
    history: list[dict[str, Any]] = []
    try:
        stack.up()
        up_seconds = time.perf_counter() - start
        run_start = time.perf_counter()
        config = DEFAULT_RUN_CONFIG.format(rounds=rounds).replace(
            "min-clients=3", f"min-clients={supernodes}"
        )
        run = stack.submit([config])
        if not run.wait(timeout):
            run.stop()
        run_seconds = time.perf_counter() - run_start
        if run.run_id is not None:
            status = read_run_status(run.run_id, stack.cli_env, CONNECTION).status
        folder = stack.results_on_host / "compose"
        if folder.is_dir():
            shutil.copytree(folder, results / "compose", dirs_exist_ok=True)
        history_file = results / "compose" / "history.json"
        history = json.loads(history_file.read_text()) if history_file.is_file() else []
    finally:
        stack.down()
    return StackResult(
        run_status=status,
        history=history,
        results_dir=results,
        log_dir=stack.log_dir,
        up_seconds=up_seconds,
        run_seconds=run_seconds,
        total_seconds=time.perf_counter() - start,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tls", action="store_true", help="add deploy/compose.tls.yml")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="fedkd-compose-"))
    result = run_stack(tls=args.tls, work_dir=work_dir, rounds=args.rounds, timeout=args.timeout)
    summary = {
        "status": result.run_status,
        "rounds": [
            {k: row.get(k) for k in ("round", "status", "student_accuracy")}
            for row in result.history
        ],
        "up_s": round(result.up_seconds, 1),
        "run_s": round(result.run_seconds, 1),
        "total_s": round(result.total_seconds, 1),
        "work_dir": str(work_dir),
    }
    print(json.dumps(summary, indent=2))
    ok = result.run_status == "finished:completed" and len(result.history) == args.rounds
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
