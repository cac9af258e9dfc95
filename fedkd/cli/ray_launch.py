"""``fedkd run --engine ray``: the run in this process, its clients on fedkd's Ray engine.

The same run config as ``flwr run`` gets (the app's ``[tool.flwr.app.config]``, or the
library's defaults where no app folder is installed, with the ``--set`` overrides on top), the
same round, the same results folder and the same exit codes
(:class:`~fedkd.cli.launch.LaunchResult`). Flower's ``client-resources-*`` federation
settings size the actor pool; ``RAY_ADDRESS`` (or ``--ray-address``) points it at a cluster.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import traceback
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedkd.cli.launch import (
    EXIT_FAILED,
    EXIT_TIMEOUT,
    LAUNCH_TAG,
    Interrupted,
    LaunchResult,
    signals_as_interrupt,
    stop_tagged,
)
from fedkd.cli.run_config import app_run_config

RESOURCE_KEYS = {"client-resources-num-cpus": "cpus", "client-resources-num-gpus": "gpus"}
ENGINE_KEYS = {"num-workers": "workers", "state-budget-mb": "state_budget"}


def ray_resources(federation_config: Sequence[str], address: str = "") -> Any:
    """``--federation key=value`` items as the Ray engine's resources.

    Raises
    ------
    ValueError
        For a key the Ray engine does not know or a value that is not a number.
    """
    from fedkd.engines import RayResources

    settings: dict[str, Any] = {"address": address}
    known = {**RESOURCE_KEYS, **ENGINE_KEYS}
    for item in federation_config:
        key, _, raw = item.partition("=")
        if key not in known:
            raise ValueError(
                f"--federation {key!r} does not apply to the Ray engine; accepted: "
                + ", ".join(sorted(known))
            )
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"--federation {key} must be a number, got {raw!r}") from None
        name = known[key]
        settings[name] = value
        if name == "workers":
            settings[name] = int(value)
        if name == "state_budget":
            settings[name] = int(value * 2**20)
    return RayResources(**settings)


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`Interrupted` (SIGALRM) in the main thread after ``seconds``."""
    if not seconds:
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _tagged_children() -> Iterator[None]:
    """Tag what this run starts (a local Ray's daemons inherit the environment), and stop
    whatever of it outlives ``ray.shutdown()``: its raylet's agents are not our children
    once the raylet is gone, and CI saw a DashboardAgent alive after a Ctrl-C'd run."""
    tag = uuid.uuid4().hex
    previous = os.environ.get(LAUNCH_TAG)
    os.environ[LAUNCH_TAG] = tag
    try:
        yield
    finally:
        if previous is None:
            del os.environ[LAUNCH_TAG]
        else:
            os.environ[LAUNCH_TAG] = previous
        stop_tagged(tag)


def _configure_logging(echo: bool) -> None:
    log = logging.getLogger("fedkd")
    if echo and not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s fedkd %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def ray_run(
    overrides: Mapping[str, object],
    *,
    num_clients: int,
    federation_config: Sequence[str] = (),
    address: str = "",
    echo: bool = True,
    timeout: float | None = None,
    app_dir: Path | None = None,
) -> LaunchResult:
    """Run the app's round on the Ray engine in this process; stop what it started."""
    from fedkd.engines.run import run_opened
    from fedkd.fl.experiment import open_run

    _configure_logging(echo)
    run_config = {**app_run_config(app_dir), **overrides}
    resources = ray_resources(federation_config, address)
    if resources.gpus > 0 and "client-device" not in overrides:
        run_config["client-device"] = "auto"  # clients train on the GPU share they are given
    results: Path | None = None
    try:
        with _tagged_children(), signals_as_interrupt(), _deadline(timeout):
            run = open_run(run_config, num_clients)
            results = run.recorder.path
            run_opened(run, run_config, num_clients, "ray", secrets.randbits(63), resources)
    except KeyboardInterrupt as error:  # Interrupted, or Ray's bare re-raise of it
        stop = Interrupted.caught(error)
    except Exception as error:  # noqa: BLE001 -- reported as the run's failure, one line
        wrapped = Interrupted.within(error)  # a signal that landed in an import, say
        if wrapped is None:
            if echo:
                traceback.print_exc()
            cause = f"{type(error).__name__}: {error}"
            return LaunchResult(EXIT_FAILED, results, status="finished:failed", cause=cause)
        stop = wrapped
    else:
        return LaunchResult(0, results, status="finished:completed")
    if stop.signum == signal.SIGALRM:
        cause = f"timed out after {timeout:g} s"
        return LaunchResult(EXIT_TIMEOUT, results, status="finished:stopped", cause=cause)
    return LaunchResult(128 + stop.signum, results, status="finished:stopped", cause=str(stop))
