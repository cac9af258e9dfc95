"""Who the secure-aggregation clients are: identities and the roster, per run.

Run config ``secagg-roster`` picks the trust model of secure aggregation:

- ``""``: curious-server mode, no identities (protects against a server that follows the
  protocol);
- ``"simulated"`` (the default): every client derives an Ed25519 identity from a simulation
  secret, its run and its partition id, and the roster (partition id -> public key) is derived
  the same way. This *simulates* the out-of-band step of a real deployment: the clients'
  secret never travels through the server, but anyone who reads this module can derive it,
  so it stops a server only in experiments where the attacker is the server's code path
  (the attack studies), not a server operator who reads the source;
- a path to a ``roster.json`` written by ``fedkd keys``: the server's copy of the roster of a
  real deployment. Each SuperNode then holds its own identity and its own copy of the roster,
  from its operator (node config ``secagg-identity`` and ``secagg-roster``: paths), and never
  takes either from the server.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedkd.fl import keys
from fedkd.secagg.identity import Identity, Roster, read_identity, read_roster, simulated_identities

SIMULATED = "simulated"
# The simulation's stand-in for secrets handed to clients out of band (see the module doc).
_SIMULATION_SECRET = b"fedkd simulated out-of-band identities v1"


@functools.lru_cache(maxsize=4)
def _simulated(run_id: int, num_partitions: int) -> tuple[dict[str, Identity], Roster]:
    """The run's simulated identities and roster, built once per process (a simulated client
    process serves many clients; 10,000 public keys take seconds to derive)."""
    names = [str(p) for p in range(num_partitions)]
    identities = simulated_identities(_SIMULATION_SECRET, run_id, names)
    return identities, Roster.of(identities.values())


def server_roster(setting: str, *, run_id: int, num_partitions: int) -> Roster | None:
    """The roster the server checks advertised keys against (``None``: curious mode)."""
    if not setting:
        return None
    if setting == SIMULATED:
        return _simulated(run_id, num_partitions)[1]
    return read_roster(Path(setting))


def client_identity(
    setting: str,
    node_config: Mapping[str, Any],
    *,
    run_id: int,
    partition_id: int,
    num_partitions: int,
) -> tuple[Identity | None, Roster | None]:
    """A client's identity and roster: its operator's files first, else the simulated ones.

    Raises
    ------
    ValueError
        When the run uses a roster file but this node was given no identity of its own.
    """
    identity_path = str(node_config.get(keys.NODE_SECAGG_IDENTITY, ""))
    roster_path = str(node_config.get(keys.NODE_SECAGG_ROSTER, ""))
    if identity_path or roster_path:
        if not (identity_path and roster_path):
            raise ValueError(
                "node config needs both 'secagg-identity' and 'secagg-roster' (paths), or neither"
            )
        roster = read_roster(Path(roster_path))
        return read_identity(Path(identity_path), roster), roster
    if not setting:
        return None, None
    if setting == SIMULATED:
        identities, roster = _simulated(run_id, num_partitions)
        return identities[str(partition_id)], roster
    raise ValueError(
        "the run uses a roster file, but this node has no identity: start the SuperNode with "
        "--node-config \"secagg-identity=<file> secagg-roster=<file>\" (files from 'fedkd keys')"
    )
