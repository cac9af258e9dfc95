"""What a (malicious) server can compute from what it saw: the attacker's side of the ledger.

:class:`Observation` is everything the server sent and received in one round, as recorded by
an attack wrapper (:mod:`fedkd.attacks.secagg`), plus the private keys of the public keys the
attacker substituted and the shares it decrypted itself. :func:`assess` reconstructs every
secret the attacker holds at least ``t`` shares of, works out which masked inputs it can strip
of every mask term, and returns the groups of clients whose exact sum it can compute.

A group ``G`` of clients whose masked inputs arrived is *releasable* when the attacker knows the
self-mask seed of each member and, for each mask term in a member's input, either the seed of
that term or that the term cancels inside ``G`` (the two members used each other's real keys).
The releasable groups are unions of the components this module computes; the smallest one is
the strongest thing the server learned. An honest round releases exactly the survivor set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import fedkd.secagg.crypto as crypto
import fedkd.secagg.shamir as shamir
from fedkd.secagg.client_checks import self_mask_commitment
from fedkd.secagg.config import SecAggConfig
from fedkd.secagg.errors import SecAggError
from fedkd.secagg.masking import MaskExpander, pair_adds
from fedkd.secagg.packing import reduce_words
from fedkd.secagg.wire import AdvertisedKeys, EncryptedShares, UnmaskReply

SEED, KEY = "seed", "key"  # the two secrets of a client: self-mask seed b, mask private key


@dataclass
class Observation:
    """Everything one server saw of one round (filled in by an attack wrapper)."""

    config: SecAggConfig | None = None
    advertised: dict[int, AdvertisedKeys] = field(default_factory=dict)  # what clients sent
    shown: dict[int, dict[int, AdvertisedKeys]] = field(default_factory=dict)  # what each saw
    encrypted: dict[int, EncryptedShares] = field(default_factory=dict)
    routed: dict[int, tuple[int, ...]] = field(default_factory=dict)  # senders sent to each
    accused: dict[int, frozenset[int]] = field(default_factory=dict)  # senders each reported
    masked: dict[int, np.ndarray] = field(default_factory=dict)
    revealed: dict[int, UnmaskReply] = field(default_factory=dict)
    attacker_keys: dict[bytes, bytes] = field(default_factory=dict)  # public -> private
    stolen: dict[tuple[str, int], dict[int, int]] = field(default_factory=dict)

    def steal(self, what: str, owner: int, holder: int, share: int) -> None:
        """Record a share the attacker obtained outside the unmask stage."""
        self.stolen.setdefault((what, owner), {})[holder] = share

    def partners(self, owner: int) -> tuple[int, ...]:
        """The clients whose pairwise mask ``owner`` added: routed senders it did not report."""
        reported = self.accused.get(owner, frozenset())
        return tuple(v for v in self.routed.get(owner, ()) if v not in reported)

    def pair_seed(self, holder: int, other: int) -> bytes | None:
        """The seed of the mask ``holder`` added for ``other``, if ``holder`` revealed it."""
        reply = self.revealed.get(holder)
        if reply is not None and other in reply.pair_partners:
            return reply.pair_seeds[reply.pair_partners.index(other)]
        return None


@dataclass(frozen=True)
class Leak:
    """The groups of clients whose exact sum the server can compute, smallest first."""

    groups: tuple[tuple[int, ...], ...]
    seeds: frozenset[int]  # owners whose self-mask seed the server reconstructed
    keys: frozenset[int]  # owners whose mask private key the server reconstructed

    @property
    def smallest(self) -> tuple[int, ...] | None:
        """The smallest releasable group (``None``: the server can compute no sum at all)."""
        return self.groups[0] if self.groups else None

    def exposes_fewer_than(self, threshold: int) -> bool:
        """Whether some sum over fewer than ``threshold`` clients (or one input) is exposed."""
        return self.smallest is not None and len(self.smallest) < max(threshold, 2)


def _shares(obs: Observation, what: str) -> dict[int, dict[int, int]]:
    found: dict[int, dict[int, int]] = {}
    for holder, reply in obs.revealed.items():
        owners, values = (
            (reply.self_mask_owners, reply.self_mask_shares)
            if what == SEED
            else (reply.key_owners, reply.key_shares)
        )
        for owner, raw in zip(owners, values, strict=True):
            try:
                found.setdefault(owner, {})[holder] = shamir.share_from_bytes(raw)
            except ValueError:
                continue
    for (kind, owner), shares in obs.stolen.items():
        if kind == what:
            found.setdefault(owner, {}).update(shares)
    return found


def _reconstruct(obs: Observation, what: str) -> dict[int, bytes]:
    config = obs.config
    assert config is not None
    secrets: dict[int, bytes] = {}
    context = config.key_context()
    for owner, shares in _shares(obs, what).items():
        if len(shares) < config.threshold or owner not in config.participants:
            continue
        holders = sorted(shares)[: config.threshold]
        try:
            secret = shamir.combine_shares(
                [config.share_x(h) for h in holders], [shares[h] for h in holders]
            )
        except (SecAggError, KeyError):
            continue
        if what == SEED:
            sealed = obs.encrypted.get(owner)
            if (
                sealed
                and self_mask_commitment(context, owner, secret) == sealed.self_mask_commitment
            ):
                secrets[owner] = secret
        elif owner in obs.advertised and (
            crypto.public_from_private(secret) == obs.advertised[owner].mask_public
        ):
            secrets[owner] = secret
    return secrets


def _same(a: AdvertisedKeys | None, b: AdvertisedKeys | None) -> bool:
    """Whether two advertisements carry the same public keys (signatures and tags aside)."""
    return (
        a is not None
        and b is not None
        and (a.node_id, a.cipher_public, a.mask_public)
        == (b.node_id, b.cipher_public, b.mask_public)
    )


def _term_seed(obs: Observation, keys: dict[int, bytes], owner: int, peer: int) -> bytes | None:
    """The seed of the mask term ``owner`` added for ``peer``, if the attacker can compute it."""
    config = obs.config
    assert config is not None
    revealed = obs.pair_seed(owner, peer)
    if revealed is None and _real_both_ways(obs, owner, peer):
        revealed = obs.pair_seed(peer, owner)  # the same seed: both used the real keys
    if revealed is not None:
        return revealed
    used = obs.shown.get(owner, {}).get(peer)
    if used is None or owner not in obs.advertised:
        return None
    own_public = obs.advertised[owner].mask_public
    if owner in keys:
        secret = crypto.agree(keys[owner], used.mask_public)
    elif used.mask_public in obs.attacker_keys:
        secret = crypto.agree(obs.attacker_keys[used.mask_public], own_public)
    elif peer in keys and _same(used, obs.advertised.get(peer)):
        secret = crypto.agree(keys[peer], own_public)
    else:
        return None
    return crypto.derive_key(
        secret,
        label=crypto.MASK_SEED_LABEL,
        context=config.key_context(),
        first=owner,
        second=peer,
    )


def _real_both_ways(obs: Observation, owner: int, peer: int) -> bool:
    real_owner, real_peer = obs.advertised.get(owner), obs.advertised.get(peer)
    return _same(obs.shown.get(owner, {}).get(peer), real_peer) and _same(
        obs.shown.get(peer, {}).get(owner), real_owner
    )


def _cancels(obs: Observation, owner: int, peer: int) -> bool:
    """Whether the two terms of a pair are equal: both used each other's real keys."""
    real_owner, real_peer = obs.advertised.get(owner), obs.advertised.get(peer)
    return (
        real_owner is not None
        and real_peer is not None
        and _same(obs.shown.get(owner, {}).get(peer), real_peer)
        and _same(obs.shown.get(peer, {}).get(owner), real_owner)
        and owner in obs.partners(peer)
        and peer in obs.partners(owner)
    )


def assess(obs: Observation) -> Leak:
    """The groups whose sum the server can compute from ``obs`` (see the module docstring)."""
    if obs.config is None:
        return Leak((), frozenset(), frozenset())
    seeds, keys = _reconstruct(obs, SEED), _reconstruct(obs, KEY)
    members = sorted(v for v in obs.masked if v in seeds)
    parent = {v: v for v in members}

    def find(v: int) -> int:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v

    tainted: set[int] = set()
    for owner in members:
        for peer in obs.partners(owner):
            if _term_seed(obs, keys, owner, peer) is not None:
                continue
            if peer in parent and _cancels(obs, owner, peer):
                parent[find(owner)] = find(peer)
            else:
                tainted.add(owner)
    components: dict[int, list[int]] = {}
    for v in members:
        components.setdefault(find(v), []).append(v)
    groups = []
    for group in components.values():
        if not tainted.intersection(group):
            groups.append(tuple(sorted(group)))
    groups.sort(key=lambda g: (len(g), g))
    return Leak(tuple(groups), frozenset(seeds), frozenset(keys))


def recover_sum(obs: Observation, group: tuple[int, ...]) -> np.ndarray:
    """Strip every mask from the masked inputs of a releasable ``group``: their exact q-sum.

    Raises
    ------
    ValueError
        When ``group`` is not releasable from ``obs``.
    """
    config = obs.config
    if config is None or not group:
        raise ValueError("nothing observed")
    seeds, keys = _reconstruct(obs, SEED), _reconstruct(obs, KEY)
    inside = set(group)
    expander = MaskExpander(config.vector_length)
    total = np.zeros(config.vector_length, dtype=np.uint64)
    for owner in group:
        if owner not in obs.masked or owner not in seeds:
            raise ValueError(f"client {owner}'s masked input or self-mask seed is unknown")
        np.add(total, obs.masked[owner], out=total)
        expander.add(total, seeds[owner], subtract=True, self_mask=True)
        for peer in obs.partners(owner):
            if peer in inside and _cancels(obs, owner, peer):
                continue
            seed = _term_seed(obs, keys, owner, peer)
            if seed is None:
                raise ValueError(f"the mask client {owner} shares with {peer} is unknown")
            expander.add(total, seed, subtract=pair_adds(owner, peer))
    return reduce_words(total, config.modulus_bits)
