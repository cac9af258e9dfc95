"""Injected client faults: crash or time out at a chosen stage with a chosen probability.

The decision is a pure function of (seed, round, partition, stage), so a faulty run is
reproducible and the server's view (who dropped where) can be checked against it.
"""

from __future__ import annotations

import hashlib
import time

from fedkd.fl.config import FAULT_STAGE_ALIASES, FedConfig


class InjectedFault(RuntimeError):
    """Raised by a client that the fault knob told to crash."""


def fault_hits(config: FedConfig, stage: str, server_round: int, partition_id: int) -> bool:
    """Whether the client of ``partition_id`` fails at ``stage`` of ``server_round``."""
    if config.faults.stage != stage or config.faults.prob <= 0.0:
        return False
    # Drawn under the stage's name from before the rename, so a seed fails the same clients.
    name = {v: k for k, v in FAULT_STAGE_ALIASES.items()}.get(stage, stage)
    token = f"{config.seed}/{server_round}/{partition_id}/{name}".encode()
    draw = int.from_bytes(hashlib.sha256(token).digest()[:8], "big") / 2**64
    return draw < config.faults.prob


def inject_fault(
    config: FedConfig,
    stage: str,
    server_round: int,
    partition_id: int,
    *,
    deadline: float | None = None,
) -> None:
    """Crash (raise) or stall past the server's deadline when the fault knob says so.

    The stall lasts past ``deadline`` (wall-clock seconds) when the request carries one, else
    past ``stage-timeout`` (or a minute when that is automatic).
    """
    if not fault_hits(config, stage, server_round, partition_id):
        return
    if config.faults.kind == "timeout":
        wait = config.stage_timeout if config.stage_timeout > 0 else 60.0
        if deadline is not None:
            wait = max(0.0, deadline - time.time())
        time.sleep(wait + 2.0)
        return
    raise InjectedFault(
        f"injected crash of partition {partition_id} at stage '{stage}' of round {server_round}"
    )
