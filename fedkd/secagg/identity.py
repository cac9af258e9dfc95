"""Long-term client identities (Ed25519) and the roster that authenticates them.

Each client holds an :class:`Identity`: a name (e.g. its partition id) and an Ed25519 signing
key. The :class:`Roster` maps every name to its public key and reaches every client *out of
band* -- a file the operator copies to each node (``fedkd keys`` writes one), never through the
server. Clients sign what they advertise (their round keys, bound to the run, round and config
digest) and the survivor set of the consistency stage; peers verify against the roster, so a
server can neither substitute keys nor invent participants.

In simulation, :func:`simulated_identities` derives the identities from a seed per run and
partition and :meth:`Roster.of` collects their public halves: this simulates the out-of-band
step (the server code never reads the seed; a real deployment uses files written by
``fedkd keys``).

Files: the roster is JSON ``{"format": "fedkd-roster/v1", "identities": {name: hex}}``; an
identity is JSON ``{"format": "fedkd-identity/v1", "name": ..., "private_key": hex}``, written
with mode 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedkd.secagg.errors import ConfigError

ROSTER_FORMAT = "fedkd-roster/v1"
IDENTITY_FORMAT = "fedkd-identity/v1"
KEY_BYTES = 32
SIGNATURE_BYTES = 64
NO_ROSTER = bytes(32)  # roster digest of a round without identities (curious-server mode)
_ROSTER_LABEL = b"fedkd-secagg/roster/v1"
_SIMULATION_LABEL = b"fedkd-secagg/simulated-identity/v1"
_PAIR_LABEL = b"fedkd-secagg/identity-pair-key/v1"
_P25519 = 2**255 - 19


def montgomery_public(ed25519_public: bytes) -> bytes:
    """The X25519 public key of an Ed25519 public key (u = (1 + y) / (1 - y) mod p).

    The same birational map as libsodium's ``crypto_sign_ed25519_pk_to_curve25519``; with
    :meth:`Identity.agreement_key` it gives every pair of roster members a static shared key
    without a second key in the roster.
    """
    y = int.from_bytes(ed25519_public, "little") & ((1 << 255) - 1)
    if y >= _P25519 or (1 - y) % _P25519 == 0:
        raise ConfigError("not a valid Ed25519 public key (no Montgomery form)")
    u = (1 + y) * pow((1 - y) % _P25519, -1, _P25519) % _P25519
    return u.to_bytes(32, "little")


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 256 or not name.isprintable():
        raise ConfigError(f"identity name {name!r} is invalid; accepted: 1-256 printable chars")
    return name


@dataclass(frozen=True)
class Identity:
    """A client's long-term signing identity.

    Parameters
    ----------
    name : str
        The client's name in the roster.
    private_key : bytes
        Raw 32-byte Ed25519 private key.
    """

    name: str
    private_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.private_key) != KEY_BYTES:
            raise ConfigError(f"an Ed25519 private key is {KEY_BYTES} bytes")

    @classmethod
    def generate(cls, name: str) -> Identity:
        """A fresh identity from the operating system's CSPRNG."""
        return cls(name, Ed25519PrivateKey.generate().private_bytes_raw())

    @cached_property
    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.private_key)

    @property
    def public_key(self) -> bytes:
        """Raw 32-byte Ed25519 public key."""
        return self._key.public_key().public_bytes_raw()

    def sign(self, message: bytes) -> bytes:
        """64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)

    @cached_property
    def agreement_key(self) -> X25519PrivateKey:
        """The X25519 private key of this identity (the Ed25519 scalar, as libsodium maps it)."""
        digest = hashes.Hash(hashes.SHA512())
        digest.update(self.private_key)
        return X25519PrivateKey.from_private_bytes(digest.finalize()[:32])

    def pair_key(self, roster: Roster, peer: str) -> bytes:
        """Static 32-byte key shared with roster member ``peer`` (same value on both sides)."""
        secret = self.agreement_key.exchange(
            X25519PublicKey.from_public_bytes(montgomery_public(roster.keys[peer]))
        )
        low, high = sorted((self.name.encode("utf-8"), peer.encode("utf-8")))
        info = _PAIR_LABEL + roster.digest() + len(low).to_bytes(4, "big") + low + high
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


@dataclass(frozen=True)
class Roster:
    """Name -> Ed25519 public key of every client allowed in the federation."""

    keys: Mapping[str, bytes]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ConfigError("a roster needs at least one identity")
        for name, key in self.keys.items():
            _check_name(name)
            if len(key) != KEY_BYTES:
                raise ConfigError(f"roster key of {name!r} is not {KEY_BYTES} bytes")
        object.__setattr__(self, "keys", dict(sorted(self.keys.items())))

    @classmethod
    def of(cls, identities: Iterable[Identity]) -> Roster:
        """The roster of some identities (names must be distinct)."""
        keys: dict[str, bytes] = {}
        for identity in identities:
            if identity.name in keys:
                raise ConfigError(f"two identities are named {identity.name!r}")
            keys[identity.name] = identity.public_key
        return cls(keys)

    def digest(self) -> bytes:
        """SHA-256 over every (name, key): bound into the config, so all clients hold one roster."""
        return self._digest

    @cached_property
    def _digest(self) -> bytes:
        h = hashlib.sha256(_ROSTER_LABEL)
        for name, key in self.keys.items():
            raw = name.encode("utf-8")
            h.update(len(raw).to_bytes(4, "big") + raw + key)
        return h.digest()

    @cached_property
    def _public(self) -> dict[str, Ed25519PublicKey]:
        return {}  # filled on demand: a round touches its participants, not the whole roster

    def verifies(self, name: str, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``name``'s valid signature of ``message``."""
        key = self._public.get(name)
        if key is None and name in self.keys:
            key = self._public[name] = Ed25519PublicKey.from_public_bytes(self.keys[name])
        if key is None or len(signature) != SIGNATURE_BYTES:
            return False
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


def simulated_identities(seed: bytes, run_id: int, names: Iterable[str]) -> dict[str, Identity]:
    """Identities derived from ``seed`` per run and name (simulation of the out-of-band step).

    Parameters
    ----------
    seed : bytes
        A secret the simulation keeps away from the server code (>= 16 bytes).
    run_id : int
        The run; each run gets fresh identities.
    names : Iterable[str]
        One name per client, e.g. its partition id.
    """
    if len(seed) < 16:
        raise ConfigError("the simulation identity seed must be at least 16 bytes")
    out = {}
    for name in names:
        raw = _check_name(name).encode("utf-8")
        material = _SIMULATION_LABEL + seed + run_id.to_bytes(8, "big") + raw
        out[name] = Identity(name, hashlib.sha256(material).digest())
    return out


# ------------------------------------------------------------------------------ files
def _read_json(path: Path, what: str) -> dict[str, object]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"{what} file {path} is not readable JSON: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {path} must hold a JSON object")
    return data


def _hex(value: object, path: Path, what: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value))
    except ValueError:
        raise ConfigError(f"{path}: {what} is not hexadecimal") from None
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{path}: {what} is {len(raw)} bytes, expected {KEY_BYTES}")
    return raw


def write_roster(roster: Roster, path: Path) -> None:
    """Write the roster file (public: copy it to every node and to the server)."""
    body = {"format": ROSTER_FORMAT, "identities": {n: k.hex() for n, k in roster.keys.items()}}
    Path(path).write_text(json.dumps(body, indent=1) + "\n")


def read_roster(path: Path) -> Roster:
    """Read a roster file written by :func:`write_roster`; :class:`ConfigError` names problems."""
    data = _read_json(path, "roster")
    if data.get("format") != ROSTER_FORMAT:
        raise ConfigError(f"{path} is not a {ROSTER_FORMAT} file (format={data.get('format')!r})")
    entries = data.get("identities")
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"{path}: 'identities' must be a non-empty object of name -> hex key")
    return Roster({str(n): _hex(k, path, f"key of {n!r}") for n, k in entries.items()})


def write_identity(identity: Identity, path: Path) -> None:
    """Write an identity file, readable by its owner only (it holds the private key)."""
    body = {
        "format": IDENTITY_FORMAT,
        "name": identity.name,
        "private_key": identity.private_key.hex(),
        "public_key": identity.public_key.hex(),
    }
    descriptor = os.open(Path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(json.dumps(body, indent=1) + "\n")


def read_identity(path: Path, roster: Roster | None = None) -> Identity:
    """Read an identity file; with ``roster``, check that the roster lists its public key."""
    data = _read_json(path, "identity")
    if data.get("format") != IDENTITY_FORMAT:
        raise ConfigError(f"{path} is not a {IDENTITY_FORMAT} file")
    name = data.get("name")
    identity = Identity(_check_name(name), _hex(data.get("private_key"), path, "private_key"))
    if roster is not None and roster.keys.get(identity.name) != identity.public_key:
        raise ConfigError(
            f"{path}: the roster has no key for {identity.name!r} or a different one; "
            "this identity would be refused by every peer"
        )
    return identity
