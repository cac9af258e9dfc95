"""Per-client protocol state, kept between the stages of a round and across rounds.

The state holds the client's private keys and shares, so it stays on the client. It survives a
process restart through :func:`encode_client_state` / :func:`decode_client_state` (a Flower
ClientApp keeps the bytes in ``context.state``). ``spent_rounds`` outlives the round: the
(run_id, round) pairs for which the client sent a masked input or refused a request; a client
never answers a spent round again, so a restarted round cannot collect a second masked input.

Trust model: ``ClientState(node_id)`` is the curious-server mode (no identities). Pass an
``identity`` and the ``roster`` (read from files that reached the node out of band, see
:mod:`fedkd.secagg.identity`) for the malicious-server mode. ``expected_run`` and
``expected_round`` are what the caller knows the current run and round to be (the federated
client sets them from the train message); a configuration naming another run or round is
refused, so a server cannot re-run a round under a fresh round id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedkd.secagg.codec import (
    Fields,
    decode_fields,
    encode_fields,
    get_bytes,
    get_bytes_list,
    get_float,
    get_int,
    get_ints,
    get_str,
)
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import ConfigError, WireFormatError
from fedkd.secagg.identity import Identity, Roster
from fedkd.secagg.wire import AdvertisedKeys, ShareKeysRequest, Stage


@dataclass
class HeldShares:
    """The shares one client holds of one peer's two secrets (field elements)."""

    self_mask: int  # share of the peer's self-mask seed b
    mask_key: int  # share of the peer's mask private key s_sk


@dataclass
class ClientState:
    """Everything a client remembers about its rounds.

    Attributes
    ----------
    node_id : int
        This client's id.
    spent_rounds : set[tuple[int, int]]
        (run_id, round) pairs this client will never answer again.
    config : SecAggConfig | None
        Configuration of the current round.
    stage : Stage | None
        Last stage answered in the current round.
    aborted : bool
        The client refused a request of the current round and answers nothing more in it.
    cipher_private, mask_private, self_seed : bytes
        The round's secrets: share-encryption key, mask-agreement key, self-mask seed.
    peer_keys : dict[int, AdvertisedKeys]
        Advertised keys of this client's neighbours that answered stage 1.
    receive_private : dict[int, bytes]
        Per neighbour, the private half of this client's receive key for it (one direction).
    share_keys : dict[int, bytes]
        Per share holder, the directed AES-GCM key this client encrypted its shares to it with
        (also keys the consistency tags it sends that holder).
    received_keys : dict[int, bytes]
        Per sender whose shares this client opened, the directed key of that direction.
    accused : tuple[int, ...]
        Senders whose shares were bad (this client masked with none of them).
    advertised : tuple[int, ...]
        Every client that answered stage 1 (the server's claim).
    held : dict[int, HeldShares]
        Shares held per owner (this client included once its own secrets are split).
    share_senders : tuple[int, ...]
        This client and the neighbours whose shares it received and authenticated.
    clipped_fraction : float
        Fraction of this client's last input that clipping changed.
    identity : Identity | None
        This client's signing identity (``None``: curious-server mode).
    roster : Roster | None
        The roster peers are authenticated with; required with an identity.
    expected_run, expected_round : int | None
        The run and round the caller is in; ``None`` skips the check.
    identities : dict[int, str]
        Roster names of the clients whose signed keys this client accepted this round.
    signed : tuple[int, ...]
        The survivor set this client signed in the consistency stage of this round.
    pair_keys : dict[str, bytes]
        Static keys shared with other roster members (derived once, kept across rounds).
    loaded : dict[bytes, X25519PrivateKey]
        The round's private keys already loaded (raw bytes -> key object), so a process that
        keeps its state between stages does not pay a scalar multiplication to reload them;
        never persisted (:func:`loaded_key` fills it on demand).
    """

    node_id: int
    spent_rounds: set[tuple[int, int]] = field(default_factory=set)
    config: SecAggConfig | None = None
    stage: Stage | None = None
    aborted: bool = False
    cipher_private: bytes = b""
    mask_private: bytes = b""
    self_seed: bytes = b""
    peer_keys: dict[int, AdvertisedKeys] = field(default_factory=dict)
    receive_private: dict[int, bytes] = field(default_factory=dict)
    share_keys: dict[int, bytes] = field(default_factory=dict)
    received_keys: dict[int, bytes] = field(default_factory=dict)
    accused: tuple[int, ...] = ()
    advertised: tuple[int, ...] = ()
    held: dict[int, HeldShares] = field(default_factory=dict)
    share_senders: tuple[int, ...] = ()
    clipped_fraction: float = 0.0
    identity: Identity | None = None
    roster: Roster | None = None
    expected_run: int | None = None
    expected_round: int | None = None
    identities: dict[int, str] = field(default_factory=dict)
    signed: tuple[int, ...] = ()
    pair_keys: dict[str, bytes] = field(default_factory=dict)
    loaded: dict[bytes, X25519PrivateKey] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.identity is None) != (self.roster is None):
            raise ConfigError(
                f"client {self.node_id}: an identity needs a roster and a roster an identity "
                "(pass both for the malicious-server mode, neither for the curious one)"
            )
        if (
            self.identity is not None
            and self.roster is not None
            and self.roster.keys.get(self.identity.name) != self.identity.public_key
        ):
            raise ConfigError(
                f"client {self.node_id}: the roster does not list identity "
                f"{self.identity.name!r} with this key; every peer would refuse it"
            )

    def round_key(self) -> tuple[int, int] | None:
        """(run_id, round) of the current round, ``None`` before the first request."""
        return None if self.config is None else (self.config.run_id, self.config.round)

    def loaded_key(self, raw: bytes) -> X25519PrivateKey:
        """The loaded private key of ``raw`` (loaded once per process)."""
        key = self.loaded.get(raw)
        if key is None:
            key = self.loaded[raw] = X25519PrivateKey.from_private_bytes(raw)
        return key

    def public_of(self, raw: bytes) -> bytes:
        """The public key of the private key ``raw``."""
        return self.loaded_key(raw).public_key().public_bytes_raw()


def encode_client_state(state: ClientState, *, with_roster: bool = True) -> bytes:
    """Serialise a client state (secrets included: keep the bytes on the client).

    Parameters
    ----------
    state : ClientState
        The state to persist.
    with_roster : bool
        Include the roster; ``False`` stores its digest only (the node holds the roster
        anyway, and a large one would dominate every saved state), and
        :func:`decode_client_state` then needs it back.

    Returns
    -------
    bytes
        Canonical encoding, inverted by :func:`decode_client_state`.
    """
    spent = sorted(state.spent_rounds)
    owners = sorted(state.held)
    roster = state.roster if with_roster else None
    fields: Fields = {
        "node_id": state.node_id,
        "spent_runs": [r for r, _ in spent],
        "spent_rounds": [n for _, n in spent],
        "has_config": int(state.config is not None),
        "config": b"" if state.config is None else encode_fields(state.config.to_fields()),
        "stage": "" if state.stage is None else state.stage.value,
        "aborted": int(state.aborted),
        "cipher_private": state.cipher_private,
        "mask_private": state.mask_private,
        "self_seed": state.self_seed,
        "share_key_owners": sorted(state.share_keys),
        "share_keys": [state.share_keys[v] for v in sorted(state.share_keys)],
        "received_key_owners": sorted(state.received_keys),
        "received_keys": [state.received_keys[v] for v in sorted(state.received_keys)],
        "receive_owners": sorted(state.receive_private),
        "receive_private": [state.receive_private[v] for v in sorted(state.receive_private)],
        "accused": list(state.accused),
        "peer_keys": ShareKeysRequest(tuple(state.peer_keys.values())).to_bytes(),
        "advertised": list(state.advertised),
        "held_owners": owners,
        "held_self_mask": [state.held[o].self_mask for o in owners],
        "held_mask_key": [state.held[o].mask_key for o in owners],
        "share_senders": list(state.share_senders),
        "clipped_fraction": float(state.clipped_fraction),
        "identity_name": "" if state.identity is None else state.identity.name,
        "identity_key": b"" if state.identity is None else state.identity.private_key,
        "roster_names": [n.encode() for n in roster.keys] if roster else [],
        "roster_keys": list(roster.keys.values()) if roster else [],
        "roster_digest": b"" if state.roster is None else state.roster.digest(),
        "expected": [_optional(state.expected_run), _optional(state.expected_round)],
        "identity_nodes": sorted(state.identities),
        "identity_names": [state.identities[v].encode() for v in sorted(state.identities)],
        "signed": list(state.signed),
        "pair_names": [n.encode() for n in sorted(state.pair_keys)],
        "pair_keys": [state.pair_keys[n] for n in sorted(state.pair_keys)],
    }
    return encode_fields(fields)


def _keyed(f: Fields, owners: str, values: str) -> dict[int, bytes]:
    ids, raw = get_ints(f, owners), get_bytes_list(f, values)
    if len(ids) != len(raw):
        raise WireFormatError(f"client state: {owners} and {values} differ in length")
    return dict(zip(ids, raw, strict=True))


def _optional(value: int | None) -> int:
    return -1 if value is None else value


def _trust(f: Fields, roster: Roster | None) -> tuple[Identity | None, Roster | None]:
    name, names = get_str(f, "identity_name"), get_bytes_list(f, "roster_names")
    if not name:
        return None, None
    if names:
        keys = dict(zip((n.decode() for n in names), get_bytes_list(f, "roster_keys"), strict=True))
        roster = Roster(keys)
    if roster is None or roster.digest() != get_bytes(f, "roster_digest"):
        raise WireFormatError(
            "client state was saved without its roster: decode it with the same roster"
        )
    return Identity(name, get_bytes(f, "identity_key")), roster


def decode_client_state(data: bytes, *, roster: Roster | None = None) -> ClientState:
    """Restore a :class:`ClientState` written by :func:`encode_client_state`.

    ``roster`` is needed (and checked against the saved digest) when the state was saved
    ``with_roster=False``.
    """
    f = decode_fields(data)
    config = None
    if get_int(f, "has_config"):
        config = SecAggConfig.from_fields(decode_fields(get_bytes(f, "config")))
    owners = get_ints(f, "held_owners")
    self_masks, mask_keys = get_ints(f, "held_self_mask"), get_ints(f, "held_mask_key")
    key_owners, keys = get_ints(f, "share_key_owners"), get_bytes_list(f, "share_keys")
    if len({len(owners), len(self_masks), len(mask_keys)}) != 1 or len(key_owners) != len(keys):
        raise WireFormatError("client state: owner and share columns differ in length")
    stage = get_str(f, "stage")
    peers = ShareKeysRequest.from_bytes(get_bytes(f, "peer_keys")).keys
    identity, roster = _trust(f, roster)
    run, round_ = (None if v < 0 else v for v in get_ints(f, "expected"))
    names = [n.decode() for n in get_bytes_list(f, "identity_names")]
    return ClientState(
        node_id=get_int(f, "node_id"),
        spent_rounds=set(zip(get_ints(f, "spent_runs"), get_ints(f, "spent_rounds"), strict=True)),
        config=config,
        stage=Stage(stage) if stage else None,
        aborted=bool(get_int(f, "aborted")),
        cipher_private=get_bytes(f, "cipher_private"),
        mask_private=get_bytes(f, "mask_private"),
        self_seed=get_bytes(f, "self_seed"),
        peer_keys={k.node_id: k for k in peers},
        share_keys=dict(zip(key_owners, keys, strict=True)),
        received_keys=_keyed(f, "received_key_owners", "received_keys"),
        receive_private=_keyed(f, "receive_owners", "receive_private"),
        accused=tuple(get_ints(f, "accused")),
        advertised=tuple(get_ints(f, "advertised")),
        held={o: HeldShares(b, s) for o, b, s in zip(owners, self_masks, mask_keys, strict=True)},
        share_senders=tuple(get_ints(f, "share_senders")),
        clipped_fraction=get_float(f, "clipped_fraction"),
        identity=identity,
        roster=roster,
        expected_run=run,
        expected_round=round_,
        identities=dict(zip(get_ints(f, "identity_nodes"), names, strict=True)),
        signed=tuple(get_ints(f, "signed")),
        pair_keys=dict(
            zip(
                (n.decode() for n in get_bytes_list(f, "pair_names")),
                get_bytes_list(f, "pair_keys"),
                strict=True,
            )
        ),
    )
