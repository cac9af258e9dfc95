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
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from experiments import PROJECT_ROOT
from experiments.deployment import (
    CONNECTION_NAME,
    FlwrRun,
    LoopbackDeployment,
    load_certs_module,
    toml_string,
    write_flower_config,
)
from fedkd.cli.flower_status import RunStatus, failure_cause, wait_for_status
from fedkd.cli.launch import Interrupted, signals_as_interrupt

__all__ = [
    "CONNECTION_NAME",
    "DeploymentResult",
    "deploy_local",
    "load_certs_module",
    "main",
    "write_flower_config",
]

DEFAULT_PORT = 19091


def _config_keys(assignments: Sequence[str]) -> set[str]:
    keys: set[str] = set()
    for text in assignments:
        keys.update(re.findall(r"(?:^|\s)([A-Za-z0-9_.-]+)\s*=", text))
    return keys


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
    pids
        Every process that was running at the end (all stopped when this is returned).
    log_dir
        One log file per process.
    seconds
        Wall time from the first process started to the last one stopped.
    """

    returncode: int
    results: Path | None
    pids: tuple[int, ...]
    log_dir: Path
    seconds: float
    status: str = "unknown"
    cause: str = ""


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
    work_dir = Path(tempfile.mkdtemp(prefix="fedkd-deploy-")) if work_dir is None else work_dir
    deployment = LoopbackDeployment(num_supernodes, work_dir, port=port, tls=tls, keys=keys)
    overrides = list(run_config)
    given = _config_keys(overrides)
    if "min-clients" not in given:
        overrides.append(f"min-clients={num_supernodes}")
    if "out-dir" not in given:
        overrides.append(f"out-dir={toml_string(str(deployment.work_dir / 'runs'))}")
    verdict = (1, RunStatus("not started"), "")
    results: Path | None = None
    start = time.perf_counter()
    try:
        with signals_as_interrupt():
            deployment.start(startup_timeout)
            run = deployment.submit(overrides, app_dir)
            if echo:
                print("$", " ".join(run.command), flush=True)
            finished = _follow(run, deployment, timeout, echo)
            results = run.results
            verdict = _judge(run, not finished, deployment.cli_env)
    finally:
        pids = deployment.stop_all()
    returncode, status, cause = verdict
    return DeploymentResult(
        returncode=returncode,
        results=results,
        pids=tuple(pids),
        log_dir=deployment.log_dir,
        seconds=time.perf_counter() - start,
        status=status.status,
        cause=cause,
    )


def _follow(
    run: FlwrRun, deployment: LoopbackDeployment, timeout: float | None, echo: bool
) -> bool:
    """Echo the run's output until it ends; False when ``timeout`` came first (run stopped)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = 0
    while True:
        done = run.wait(0.2)
        if echo:
            for line in run.lines[shown:]:
                print(line, flush=True)
            shown = len(run.lines)
        if done:
            return True
        if deadline is not None and time.monotonic() > deadline:
            if echo:
                print(f"\nflwr run still going after {timeout:.0f} s: stopping", flush=True)
            run.stop()
            return False
        deployment.check_alive()


def _judge(run: FlwrRun, timed_out: bool, env: dict[str, str]) -> tuple[int, RunStatus, str]:
    """Exit code, status and one-line cause, from the run's status (``flwr ls``) and logs."""
    if run.run_id is None:
        status = RunStatus("not started")
    else:
        status = wait_for_status(run.run_id, env, CONNECTION_NAME, patience=5 if timed_out else 20)
    if timed_out:
        return 124, status, "still running at the timeout: stopped"
    if status.completed and run.results is not None:
        return 0, status, ""
    superlink_log = Path(env["FLWR_HOME"]).parent.parent / "logs" / "superlink.log"
    cause = failure_cause(status, run.lines, superlink_log)
    if status.completed:
        cause = "the run completed but the ServerApp reported no results folder"
    return 1, status, cause


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
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM (signals_as_interrupt)
        print("\ninterrupted: every process started was stopped", file=sys.stderr)
        return 128 + Interrupted.caught(error).signum
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
