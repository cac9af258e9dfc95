"""Injected client faults: crash or time out at a chosen stage with a chosen probability.

The decision is a pure function of (seed, round, partition, stage), so a faulty run is
reproducible and the server's view (who dropped where) can be checked against it.
"""

from __future__ import annotations

import hashlib
import time

from fedkd.fl.config import FedConfig


class InjectedFault(RuntimeError):
    """Raised by a client that the fault knob told to crash."""


def fault_hits(config: FedConfig, stage: str, server_round: int, partition_id: int) -> bool:
    """Whether the client of ``partition_id`` fails at ``stage`` of ``server_round``."""
    if config.faults.stage != stage or config.faults.prob <= 0.0:
        return False
    token = f"{config.seed}/{server_round}/{partition_id}/{stage}".encode()
    draw = int.from_bytes(hashlib.sha256(token).digest()[:8], "big") / 2**64
    return draw < config.faults.prob


def inject_fault(config: FedConfig, stage: str, server_round: int, partition_id: int) -> None:
    """Crash (raise) or stall past the server's stage timeout when the fault knob says so."""
    if not fault_hits(config, stage, server_round, partition_id):
        return
    if config.faults.kind == "timeout":
        time.sleep(config.stage_timeout + 2.0)
        return
    raise InjectedFault(
        f"injected crash of partition {partition_id} at stage '{stage}' of round {server_round}"
    )
