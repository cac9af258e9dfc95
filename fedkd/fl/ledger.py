"""A node's release ledger: what it has released, kept across runs, in its own directory.

Flower gives a ClientApp per-run state only, and clients train deterministically, so without
memory a node answers a repeated round with a bit-identical vector: a server that runs a round
twice (a new run, a resume) with one client left out reads that client's whole vector in the
difference of the two sums. The ledger is the node's memory of its releases, and its rules:

* a given contribution vector is masked only for the participant set it was first masked for
  (with client-level DP, encoded and noised only one way) and certified (consistency stage)
  for one survivor set, ever -- so an identical re-run returns the same sum and nothing new,
  and a re-run with another subset is refused (:meth:`ReleaseLedger.record_release`,
  :meth:`certify`);
* in a federation with a privacy budget, a round is released (and DP-SGD trains for it) at
  most once: a second, different release for a round is refused (:meth:`record_release`,
  :meth:`record_training`); the budget itself is pinned here (:meth:`pin_budget`) and enforced
  by :mod:`fedkd.fl.node_budget`;
* the node's noise is keyed by its own secret (:meth:`seed`), so a repeated release carries
  the same noise (averaging two releases gains nothing) and a run reproduces on the same nodes.

Layout (a directory per node, under node config ``state-dir`` or ``$FEDKD_HOME/nodes``)::

    <root>/<node name>/secret        32 random bytes, mode 0600; never leaves the node
    <root>/<node name>/ledger.jsonl  one JSON object per line, appended; see :data:`FORMAT`

Every append happens under an exclusive ``flock`` after re-reading the file, and is flushed and
``fsync``-ed before the release it records leaves the node. A torn last line (a crash while
appending, before the release left) is ignored on reading.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from fedkd.secagg.errors import RefusedRequest

HOME_ENV = "FEDKD_HOME"  # the per-user root of fedkd's node state (default ~/.fedkd)
LEDGER_FILE, SECRET_FILE = "ledger.jsonl", "secret"
VERSION = 1
FORMAT = {
    "budget": "federation, epsilon, delta, dpsgd_epsilon, dpsgd_delta, rounds, source",
    "release": (
        "federation, round, run, vector, encoded, participants (set digest), members, "
        "noise_multiplier, sampling"
    ),
    "certify": "vector, survivors (set digest), members, federation (fixed-participants)",
    "training": "federation, round, run, input, noise_multiplier, sample_rate, steps",
}  # every line also has "kind", "v" (format version) and "time" (epoch seconds)


def default_root() -> Path:
    """``$FEDKD_HOME/nodes`` (``FEDKD_HOME`` defaults to ``~/.fedkd``)."""
    return Path(os.environ.get(HOME_ENV) or "~/.fedkd").expanduser() / "nodes"


class LedgerRefusal(RefusedRequest):
    """A request the node's ledger forbids. ``rule`` names it: ``vector`` (another participant
    set or encoding for a vector already masked), ``survivors`` (another survivor set),
    ``round`` (a second release or training for a round of a budgeted federation),
    ``participants`` (another set in a federation with fixed participants), ``budget``
    (epsilon or rounds exceeded, or a looser budget asked), ``trust`` (a trust mode this node
    refuses)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{_PREFIX}{rule}): {message}")
        self.rule = rule


RULES = ("vector", "survivors", "round", "participants", "budget", "trust")
_PREFIX = "ledger refuses ("


def refusal_rule(reason: str) -> str | None:
    """The ledger rule a dropout reason names (``None``: not a ledger refusal). The server's
    history keeps each dropout's reason (``RoundRecord.dropped_reasons``); a resuming server
    reads from it, e.g., that a round was refused as released already (``round``)."""
    start = reason.find(_PREFIX)
    if start < 0:
        return None
    rule = reason[start + len(_PREFIX) :].split(")", 1)[0]
    return rule if rule in RULES else None


@dataclass(frozen=True)
class Release:
    """One release of a contribution: what, for whom, in which round, with which noise."""

    federation: str
    round: int
    run: int
    vector: str  # hex SHA-256 of the raw contribution vector (before clipping and noise)
    encoded: str  # hex SHA-256 of what was encoded: the released vector, quantiser, noise
    participants: str | None  # set_digest of the names it was masked for (None: in the clear)
    members: int = 0  # how many participants
    noise_multiplier: float | None = None  # worst-case realised z of the release (None: no DP)
    sampling: float | None = None  # the fraction its noise was calibrated for

    def same_release(self, other: Release) -> bool:
        """Whether ``other`` releases the same thing to the same set (round labels aside)."""
        mine = (self.vector, self.encoded, self.participants)
        return mine == (other.vector, other.encoded, other.participants)


@dataclass(frozen=True)
class Training:
    """One DP-SGD training of the node's private shard (its accountant's entry)."""

    federation: str
    round: int
    run: int
    input: str  # hex SHA-256 of everything the training depends on but the noise
    noise_multiplier: float
    sample_rate: float
    steps: int


def digest(*parts: bytes | str) -> str:
    """Hex SHA-256 of length-prefixed parts (unambiguous concatenation)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def set_digest(names: Iterable[str]) -> str:
    """Digest of a set of names (order-free): how the ledger records a participant set."""
    return digest("set", *sorted(set(names)))


class _Index:
    """The ledger's records, indexed for its rules (rebuilt from the file on every read)."""

    def __init__(self) -> None:
        self.releases: list[Release] = []
        self.first_masked: dict[str, Release] = {}  # vector -> its first masked release
        self.rounds: dict[tuple[str, int], Release] = {}  # (federation, round) -> first
        self.repeats: set[tuple[str, int, str, str, str | None]] = set()
        self.fixed: dict[str, Release] = {}  # federation -> its first masked release
        self.certified: dict[str, tuple[str, int]] = {}  # vector -> (set digest, members)
        self.fixed_survivors: dict[str, tuple[str, int]] = {}  # federation -> first certified
        self.trainings: dict[str, list[Training]] = {}
        self.budgets: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "release":
            fields: dict[str, Any] = {f: record.get(f) for f in Release.__dataclass_fields__}
            r = Release(**fields)
            self.releases.append(r)
            self.rounds.setdefault((r.federation, r.round), r)
            self.repeats.add((r.federation, r.round, r.vector, r.encoded, r.participants))
            if r.participants is not None:
                self.first_masked.setdefault(r.vector, r)
                self.fixed.setdefault(r.federation, r)
        elif kind == "certify":
            pinned = (record["survivors"], int(record["members"]))
            self.certified.setdefault(record["vector"], pinned)
            if record.get("federation"):
                self.fixed_survivors.setdefault(record["federation"], pinned)
        elif kind == "training":
            entry: dict[str, Any] = {f: record[f] for f in Training.__dataclass_fields__}
            training = Training(**entry)
            self.trainings.setdefault(training.federation, []).append(training)
        elif kind == "budget":
            self.budgets.append(record)


class ReleaseLedger:
    """The ledger of one node (see the module docstring for its rules and format)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / LEDGER_FILE
        self.path.touch(exist_ok=True)
        self._secret = _secret(self.folder / SECRET_FILE)
        self._index = _Index()
        self._file: tuple[int, int] | None = None  # (device, inode) the index was read from
        self._offset = 0  # bytes of that file the index holds (whole lines only)
        self.refresh()

    @classmethod
    def open(cls, root: str | Path, node_name: str) -> ReleaseLedger:
        """The ledger of node ``node_name`` under ``root`` (created on first use), brought up
        to date with its file. One instance per folder and process: a node opens its ledger
        at every stage of every round, and only what was appended since is read again."""
        if not node_name or "/" in node_name or node_name.startswith("."):
            raise ValueError(f"node name {node_name!r} cannot name a ledger directory")
        folder = (Path(root).expanduser() / node_name).absolute()
        ledger = _OPEN.get(folder)
        if ledger is not None and ledger._file == _identity(ledger.path):
            ledger.refresh()
            return ledger
        ledger = _OPEN[folder] = cls(folder)  # first use, or the node's state was replaced
        return ledger

    def refresh(self) -> None:
        """Read what other processes appended (under a shared lock)."""
        with self._locked(fcntl.LOCK_SH) as handle:
            self._read(handle)

    # ------------------------------------------------------------------ reading
    def seed(self, label: str, *parts: bytes | str) -> int:
        """A 128-bit seed only this node can compute: HMAC of its secret over the parts."""
        message = digest(label, *parts).encode()
        return int.from_bytes(hmac.new(self._secret, message, hashlib.sha256).digest()[:16], "big")

    def budget(self, federation: str) -> dict[str, Any] | None:
        """The budget pinned for ``federation`` (later pins fill components left unset)."""
        pinned: dict[str, Any] | None = None
        for record in self._index.budgets:
            if record["federation"] == federation:
                fields = {k: v for k, v in record.items() if v is not None}
                pinned = fields if pinned is None else {**fields, **pinned}
        return pinned

    def releases(self, federation: str | None = None) -> list[Release]:
        """Releases recorded, in order (of one federation, or all)."""
        found = self._index.releases
        return [r for r in found if federation is None or r.federation == federation]

    def trainings(self, federation: str) -> list[Training]:
        """DP-SGD trainings recorded for ``federation``, in order."""
        return list(self._index.trainings.get(federation, []))

    def certified(self, vector: str) -> str | None:
        """The set digest of the survivors certified for ``vector``, if any were."""
        pinned = self._index.certified.get(vector)
        return None if pinned is None else pinned[0]

    def released_rounds(self, federation: str) -> dict[int, str]:
        """Round -> vector digest of every round this node released in ``federation``: what a
        resuming server may ask the operator about (a round released is never re-asked)."""
        return {r.round: r.vector for r in self.releases(federation)}

    # ------------------------------------------------------------------ checks and writes
    def check_release(self, release: Release, *, budgeted: bool) -> bool:
        """Refuse ``release`` if a rule forbids it; ``True`` when it repeats a recorded one.

        The vector rule binds masked releases: the first one of a vector pins its participant
        set, and with client-level DP its encoding (another quantiser, clip or noise would be
        a second noisy view of the same vector). A release in the clear gives the server the
        vector itself, so nothing is pinned by one or checked against one (whether a node
        sends anything in the clear is its operator's ``require-secagg``).
        """
        first = self._index.first_masked.get(release.vector)
        if first is not None and release.participants is not None:
            what = ""
            if first.participants != release.participants:
                what = f"participant set ({first.members} members, not {release.members})"
            elif release.noise_multiplier is not None and first.encoded != release.encoded:
                what = "encoding (quantiser, clip or noise) of its noisy release"
            if what:
                raise LedgerRefusal(
                    "vector",
                    f"this contribution (sha256 {release.vector[:12]}...) was masked in round "
                    f"{first.round} of run {first.run} for another {what}; releasing it again "
                    "would let the server difference the two sums",
                )
        if budgeted:
            self.check_round(release)
        key = (release.federation, release.round, release.vector, release.encoded)
        return (*key, release.participants) in self._index.repeats

    def check_round(self, release: Release) -> None:
        """Refuse a second, different release for a round of ``release``'s federation."""
        earlier = self._index.rounds.get((release.federation, release.round))
        if earlier is not None and earlier.vector != release.vector:
            raise LedgerRefusal(
                "round",
                f"round {release.round} of this federation was released already (run "
                f"{earlier.run}) with another contribution; a budgeted node releases each "
                "round once",
            )

    def check_fixed(self, release: Release) -> None:
        """With fixed participants (node config ``fixed-participants``): refuse a masked
        release of ``release``'s federation for another set than its first one."""
        first = self._index.fixed.get(release.federation)
        if first is not None and first.participants != release.participants:
            raise LedgerRefusal(
                "participants",
                f"this node takes part in this federation only with the {first.members} "
                f"participants of its first round (run {first.run}, round {first.round}); the "
                "rounds' sums of other sets could be differenced (fixed-participants)",
            )

    def record_release(self, release: Release, *, budgeted: bool) -> None:
        """Check ``release`` against the file as it is now and append it (idempotent)."""
        with self._locked(fcntl.LOCK_EX) as handle:
            self._read(handle)
            if not self.check_release(release, budgeted=budgeted):
                self._append(handle, "release", asdict(release))

    def certify(
        self, vector: str, survivors: Iterable[str], *, federation: str | None = None
    ) -> None:
        """Pin the survivor set ``vector`` is certified (or unmasked) for; refuse another.
        With ``federation`` (fixed participants), the federation's first certified set too."""
        names = set(survivors)
        wanted = set_digest(names)
        with self._locked(fcntl.LOCK_EX) as handle:
            self._read(handle)
            fixed = self._index.fixed_survivors.get(federation or "")
            if fixed is not None and fixed[0] != wanted:
                raise LedgerRefusal(
                    "participants",
                    f"this federation's rounds are certified for one survivor set ({fixed[1]} "
                    f"members), not these {len(names)} (fixed-participants)",
                )
            pinned = self._index.certified.get(vector)
            if pinned is None:
                record = {"vector": vector, "survivors": wanted, "members": len(names)}
                self._append(handle, "certify", {**record, "federation": federation})
            elif pinned[0] != wanted:
                raise LedgerRefusal(
                    "survivors",
                    f"this contribution (sha256 {vector[:12]}...) was certified for another "
                    f"survivor set ({pinned[1]} members); certifying these {len(names)} would "
                    "let the server difference the two sums",
                )

    def check_training(self, training: Training) -> bool:
        """Refuse a different DP-SGD training for a round already trained; ``True`` when
        ``training`` repeats a recorded one (the same inputs: the same noise, no new spend)."""
        for earlier in self._index.trainings.get(training.federation, []):
            if earlier.round != training.round:
                continue
            if earlier.input == training.input:
                return True
            raise LedgerRefusal(
                "round",
                f"DP-SGD already trained for round {training.round} of this federation (run "
                f"{earlier.run}) on other inputs; it trains each round once",
            )
        return False

    def record_training(self, training: Training) -> bool:
        """Check and append a DP-SGD training (a repeat is not appended); ``True`` for one."""
        with self._locked(fcntl.LOCK_EX) as handle:
            self._read(handle)
            if self.check_training(training):
                return True
            self._append(handle, "training", asdict(training))
            return False

    def pin_budget(self, federation: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Pin the components of ``fields`` not pinned yet; return the budget now pinned."""
        with self._locked(fcntl.LOCK_EX) as handle:
            self._read(handle)
            pinned = self.budget(federation) or {}
            new = {k: v for k, v in fields.items() if v is not None and k not in pinned}
            if set(new) - {"federation", "source"}:
                self._append(handle, "budget", {**new, "federation": federation})
        return self.budget(federation) or {}

    # ------------------------------------------------------------------ file
    @contextmanager
    def _locked(self, mode: int) -> Iterator[TextIO]:
        with self.path.open("a+", encoding="utf-8") as handle:
            fcntl.flock(handle, mode)
            try:
                yield handle
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self, handle: TextIO) -> None:
        """Bring the index up to the file: the lines appended since the last read. The file is
        append-only; one that is another file, or shorter than what was read, is read whole
        again. A line without its newline yet (torn, or being written) is read next time."""
        stat = os.fstat(handle.fileno())
        if (stat.st_dev, stat.st_ino) != self._file or stat.st_size < self._offset:
            self._index, self._offset = _Index(), 0
            self._file = (stat.st_dev, stat.st_ino)
        handle.seek(self._offset)
        text = handle.read()
        text = text[: text.rfind("\n") + 1]
        self._offset += len(text.encode("utf-8"))
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn line, ended by a later append: its release never left
            if isinstance(record, dict) and record.get("v") == VERSION:
                self._index.add(record)

    def _append(self, handle: TextIO, kind: str, fields: dict[str, Any]) -> None:
        record = {"v": VERSION, "kind": kind, "time": round(time.time(), 3), **fields}
        end = handle.seek(0, os.SEEK_END)
        if end:
            handle.seek(end - 1)
            torn = handle.read(1) != "\n"  # a crash mid-append left half a line: end it
        line = json.dumps(record, sort_keys=True) + "\n"
        handle.write(("\n" if end and torn else "") + line)
        handle.flush()
        os.fsync(handle.fileno())
        # what was just written, and a torn line it ended (if that held a whole record, it is
        # counted, as a fresh read of the file would count it)
        self._read(handle)


_OPEN: dict[Path, ReleaseLedger] = {}  # folder -> the open ledger of this process


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _secret(path: Path) -> bytes:
    """The node's 32-byte secret, created once: written aside, then linked into place (a
    link never replaces a file, so two first processes agree on one secret)."""
    if not path.exists():
        aside = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(os.urandom(32))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # another process won the race: its secret is the node's
        finally:
            aside.unlink()
    secret = path.read_bytes()
    if len(secret) != 32:
        raise ValueError(f"node secret '{path}' is damaged (not 32 bytes)")
    return secret
