"""Who the secure-aggregation clients are: identities and the roster, per run.

Run config ``secagg-roster`` picks the trust model of secure aggregation:

- ``""``: curious-server mode, no identities (protects against a server that follows the
  protocol);
- ``"simulated"`` (the default): every client derives an Ed25519 identity from a simulation
  secret, its run and its partition id, and the roster (partition id -> public key) is derived
  the same way. This *simulates* the out-of-band step of a real deployment: the clients'
  secret never travels through the server, but anyone who reads this module can derive it,
  so it stops a server only in experiments where the attacker is the server's code path
  (the attack studies), not a server operator who reads the source. Identities and the roster
  are derived member by member when they are used (:class:`DerivedRoster`): a population of
  a million costs no key generation before its first round;
- a path to a ``roster.json`` written by ``fedkd keys``: the server's copy of the roster of a
  real deployment. Each SuperNode then holds its own identity and its own copy of the roster,
  from its operator (node config ``secagg-identity`` and ``secagg-roster``: paths), and never
  takes either from the server.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fedkd.fl import keys
from fedkd.secagg.identity import (
    SIGNATURE_BYTES,
    Identity,
    Roster,
    read_identity,
    read_roster,
    simulated_identities,
)

SIMULATED = "simulated"
# The simulation's stand-in for secrets handed to clients out of band (see the module doc).
_SIMULATION_SECRET = b"fedkd simulated out-of-band identities v1"
_DERIVED_ROSTER_LABEL = b"fedkd-secagg/derived-roster/v1"
_KEY_CACHE = 1 << 16  # public keys kept per process (a cohort's worth, many times over)


@functools.lru_cache(maxsize=_KEY_CACHE)
def _simulated_identity(run_id: int, partition_id: int) -> Identity:
    """One client's simulated identity: a hash of the secret, the run and its partition id."""
    name = str(partition_id)
    return simulated_identities(_SIMULATION_SECRET, run_id, [name])[name]


@functools.lru_cache(maxsize=_KEY_CACHE)
def _verifier(run_id: int, partition_id: int) -> Any:
    """The Ed25519 public key object of one simulated identity (derived once, then reused)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    public = _simulated_identity(run_id, partition_id).public_key
    return Ed25519PublicKey.from_public_bytes(public)


def _verified(run_id: int, number: int, digest: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is member ``number``'s signature of ``message`` (``digest``: its
    SHA-256). One simulated process plays many clients, and in a round of n each checks the
    same survivor-set signatures: the outcome is kept per (signer, message, signature), so a
    worker verifies each once (a valid signature stays valid; the exact bytes are the key)."""
    key = (run_id, number, digest, signature)
    known = _VERIFIED.get(key)
    if known is None:
        from cryptography.exceptions import InvalidSignature

        try:
            _verifier(run_id, number).verify(signature, message)
            known = True
        except InvalidSignature:
            known = False
        if len(_VERIFIED) >= _KEY_CACHE:
            _VERIFIED.clear()
        _VERIFIED[key] = known
    return known


_VERIFIED: dict[tuple[int, int, bytes, bytes], bool] = {}


class DerivedKeys(Mapping[str, bytes]):
    """The public keys of simulated identities ``"0"`` to ``str(size - 1)``, each derived when it
    is looked up: a roster of a million costs nothing until its members take part."""

    def __init__(self, run_id: int, size: int) -> None:
        self.run_id, self.size = run_id, size

    def partition(self, name: object) -> int | None:
        """The partition id a roster name stands for (``None``: not a member)."""
        if not isinstance(name, str) or not name.isdecimal() or name != str(int(name)):
            return None
        number = int(name)
        return number if number < self.size else None

    def __getitem__(self, name: str) -> bytes:
        number = self.partition(name)
        if number is None:
            raise KeyError(name)
        return _simulated_identity(self.run_id, number).public_key

    def __contains__(self, name: object) -> bool:
        return self.partition(name) is not None

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[str]:  # O(size): only small rosters are ever listed
        return (str(p) for p in range(self.size))


class DerivedRoster(Roster):
    """The simulated roster of ``size`` clients, derived member by member on demand.

    Behind :class:`~fedkd.secagg.identity.Roster`'s interface: ``keys`` looks members up
    (deriving their keys), :meth:`verifies` derives the one key it needs (and remembers the
    outcome for the other simulated clients of its process), and the digest that
    every client binds into the round commits to the derivation (a hash of the simulation
    secret and the run) and the size instead of hashing a million keys. Two derived rosters
    with one digest are the same roster; a derived roster and a file's never share a digest.
    """

    def __init__(self, run_id: int, size: int) -> None:  # no Roster.__post_init__: O(size)
        if size < 1:
            raise ValueError(f"a roster needs at least one identity, got size {size}")
        object.__setattr__(self, "keys", DerivedKeys(run_id, size))

    @property
    def members(self) -> DerivedKeys:
        assert isinstance(self.keys, DerivedKeys)
        return self.keys

    def digest(self) -> bytes:
        commitment = hashlib.sha256(
            _DERIVED_ROSTER_LABEL + _SIMULATION_SECRET + self.members.run_id.to_bytes(8, "big")
        ).digest()
        size = self.members.size.to_bytes(8, "big")
        return hashlib.sha256(_DERIVED_ROSTER_LABEL + commitment + size).digest()

    def verifies(self, name: str, message: bytes, signature: bytes) -> bool:
        number = self.members.partition(name)
        if number is None or len(signature) != SIGNATURE_BYTES:
            return False
        digest = hashlib.sha256(message).digest()
        return _verified(self.members.run_id, number, digest, message, signature)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Roster) and self.digest() == other.digest()

    def __hash__(self) -> int:
        return hash(self.digest())

    def __repr__(self) -> str:
        return f"DerivedRoster(run_id={self.members.run_id}, size={self.members.size})"


@functools.lru_cache(maxsize=4)
def _simulated_roster(run_id: int, num_partitions: int) -> DerivedRoster:
    return DerivedRoster(run_id, num_partitions)


def server_roster(setting: str, *, run_id: int, num_partitions: int) -> Roster | None:
    """The roster the server checks advertised keys against (``None``: curious mode)."""
    if not setting:
        return None
    if setting == SIMULATED:
        return _simulated_roster(run_id, num_partitions)
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
        if not 0 <= partition_id < num_partitions:
            raise ValueError(f"partition-id {partition_id} is outside 0..{num_partitions - 1}")
        return _simulated_identity(run_id, partition_id), _simulated_roster(run_id, num_partitions)
    raise ValueError(
        "the run uses a roster file, but this node has no identity: start the SuperNode with "
        "--node-config \"secagg-identity=<file> secagg-roster=<file>\" (files from 'fedkd keys')"
    )
