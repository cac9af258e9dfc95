"""A server that may deliver any message any client ever produced (issue 25, item 7).

:class:`Adversary` wraps the honest round's in-process transport. It records every request the
honest server code sent and every reply every client produced, across stages, rounds and runs
(one adversary lives through several simulated rounds), and at each exchange lets a
Hypothesis ``draw`` decide, per client, what that client actually receives: the honest
request, another client's request (any stage, round or run), a request rebuilt from recorded
material -- key lists with entries of other rounds, of the client itself relabelled as a peer
(reflected), or with the attacker's own keys; ciphertexts of any sender and round; any
survivor list; certificates assembled from any signature and tag ever produced, relabelled,
reflected to their author -- delivered once or twice, in any order.

:func:`broken` then decides, from what the server collected in one round and the clients'
ground truth, whether it can compute the sum of fewer than ``t`` inputs (one input alone
included): a masked input is released when the server can rebuild its self-mask seed from
revealed (or decrypted) shares and, for every pairwise mask in it, knows the seed (revealed,
or derivable from a private key it rebuilt or owns) or the mask cancels against a member of
the same group (the two used the same seed).

Self-contained on purpose (wire messages handled as field dictionaries, no fedkd attack
code): the same file runs against b3fdd78, where it finds the reflected-certificate leak.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import fedkd.secagg.crypto as crypto
import fedkd.secagg.protocol as protocol
import fedkd.secagg.shamir as shamir
from fedkd.secagg.codec import decode_fields, encode_fields
from fedkd.transport import Envelope, ExchangeResult, Transport
from tests.relay import Relay

Draw = Callable[[Any], Any]
LIST_KINDS = (protocol.CONSISTENCY, protocol.UNMASK)


def _fields(message: Envelope) -> dict[str, Any] | None:
    payload = message.fields.get(protocol.PAYLOAD)
    if not isinstance(payload, bytes):
        return None
    try:
        return dict(decode_fields(payload))
    except Exception:  # a malformed recorded message is simply not reused
        return None


def _with(message: Envelope, fields: Mapping[str, Any]) -> Envelope:
    return Envelope(
        message.kind,
        {**message.fields, protocol.PAYLOAD: encode_fields(dict(fields))},
        dict(message.arrays),
    )


@dataclass
class Pool:
    """Everything clients produced and the server sent, across rounds and runs."""

    requests: list[tuple[str, int, Envelope]] = field(default_factory=list)  # kind, to, msg
    replies: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)  # kind, from
    attacker: dict[bytes, bytes] = field(default_factory=dict)  # its own keys, public -> private

    def signatures(self) -> list[tuple[int, bytes]]:
        return [
            (node, f["signature"])
            for kind, node, f in self.replies
            if kind == protocol.CONSISTENCY and isinstance(f.get("signature"), bytes)
        ]

    def signatures_of(self, node: int) -> list[bytes]:
        return [s for a, s in self.signatures() if a == node]

    def tags(self) -> list[tuple[int, int, bytes]]:
        """(author, addressee, tag) of every consistency tag ever sent."""
        out = []
        for kind, node, f in self.replies:
            if kind == protocol.CONSISTENCY:
                out += [
                    (node, r, t)
                    for r, t in zip(f.get("recipients", []), f.get("tags", []), strict=False)
                ]
        return out

    def advertised(self) -> list[dict[str, Any]]:
        return [f for kind, _, f in self.replies if kind == protocol.ADVERTISE] + [
            f for kind, _, f in self.replies if kind == "train"
        ]

    def ciphertexts(self) -> list[bytes]:
        return [
            c
            for kind, _, f in self.replies
            if kind == protocol.SHARE_KEYS
            for c in f["ciphertexts"]
        ]


class Adversary(Relay):
    """The transport of a server that delivers what ``draw`` picks (see the module docstring).

    Besides the per-message choices (``budget`` of them), a *strategy* drawn once shapes the
    round: ``plan`` shows the clients survivor lists that would release a group below ``t``
    (split views, full SecAgg), or also chooses whose shares reach one target so that its input
    alone would be released (SecAgg+); ``certify`` says how each client's certificate is
    assembled: ``reflect`` (its own signature and tags relabelled as the members'), ``genuine``
    (what the members signed and tagged), ``any`` (whatever was ever produced).
    """

    def __init__(self, inner: Transport, draw: Draw | None, pool: Pool, budget: int = 12) -> None:
        """``draw=None``: an honest server that only records (a round to replay from later)."""
        self.inner, self.pool = inner, pool
        self.draw: Draw = draw or (lambda strategy: None)
        # known-dangerous regions weigh more: a plan of lists, reflected certificates, no noise
        self.budget = self.draw(_sample([0, 0, 0, budget // 3, budget])) if draw else 0
        self.collected: list[tuple[str, int, dict[str, Any], Envelope]] = []
        self.strategy = self.draw(_sample(["plan", "plan", "noise"])) if draw else "noise"
        self.certify = (
            self.draw(_sample(["reflect", "reflect", "genuine", "any"])) if draw else "genuine"
        )
        self.config: Any = None
        self.views: dict[int, list[int]] = {}  # what each client is told survived
        self.routes: dict[int, set[int]] = {}  # whose ciphertexts reach each client

    def exchange(
        self, requests: Mapping[int, Envelope], *, timeout: float, group: str = ""
    ) -> ExchangeResult:
        self._learn_config(requests)
        sent = {node: self._choose(node, message) for node, message in requests.items()}
        for node, message in sent.items():
            self.pool.requests.append((message.kind, node, message))
        result = self.inner.exchange(sent, timeout=timeout, group=group)
        self._record(sent, result)
        if self.budget > 0 and self.draw(_booleans(0.3)):  # deliver something a second time
            self.budget -= 1
            node = self.draw(_sample(sorted(sent)))
            again = self.inner.exchange({node: sent[node]}, timeout=timeout, group=group)
            self._record({node: sent[node]}, again)
        return result

    def _learn_config(self, requests: Mapping[int, Envelope]) -> None:
        if self.config is not None:
            return
        from fedkd.secagg.config import SecAggConfig

        for message in requests.values():
            raw = message.fields.get(protocol.RIDING, message.fields.get(protocol.PAYLOAD))
            if message.kind in (protocol.ADVERTISE, "train") and isinstance(raw, bytes):
                self.config = SecAggConfig.from_fields(decode_fields(raw))
                self._plan()
                return

    def _plan(self) -> None:
        config, everyone = self.config, list(self.config.participants)
        n, t, k = len(everyone), self.config.threshold, self.config.neighbours
        if self.strategy == "plan" and k == n - 1 and t > 1:  # split views
            size = self.draw(_sample([t - 1, t - 1, *range(1, t)]))
            views = split_view_plan(everyone, t, everyone[:size])
            self.views = {v: sorted(s) for v, s in (views or {}).items()}
        elif self.strategy == "plan" and t > 1:  # isolate one client on the sparse graph
            target = self.draw(_sample(everyone))
            views, self.routes = isolation_plan(config, target)
            self.views = {v: sorted(s) for v, s in views.items()}

    def _record(self, sent: Mapping[int, Envelope], result: ExchangeResult) -> None:
        for node, reply in result.replies.items():
            kind = sent[node].kind
            fields = _fields(reply) or {}
            self.pool.replies.append((kind, node, fields))
            self.collected.append((kind, node, fields, reply))

    # -- what a client receives ------------------------------------------------------------
    def _choose(self, node: int, message: Envelope) -> Envelope:
        fields = _fields(message)
        if fields is not None and message.kind in LIST_KINDS and node in self.views:
            return self._forge_view(node, message, fields)
        if fields is not None and message.kind == protocol.MASKED_INPUT and node in self.routes:
            message = _with(message, _routed(fields, self.routes[node]))
        if self.budget <= 0:
            return message
        action = self.draw(_sample(["honest", "honest", "honest", "replay", "forge"]))
        if action == "honest":
            return message
        self.budget -= 1
        if action == "replay":
            same = [m for k, _, m in self.pool.requests if k == message.kind]
            return self.draw(_sample(same)) if same else message
        fields = _fields(message)
        if fields is None:
            return message
        forge = {
            protocol.SHARE_KEYS: self._forge_keys,
            protocol.MASKED_INPUT: self._forge_ciphertexts,
            protocol.CONSISTENCY: self._forge_view,
            protocol.UNMASK: self._forge_view,
        }.get(message.kind)
        return message if forge is None else forge(node, message, fields)

    def _forge_keys(self, node: int, message: Envelope, f: dict[str, Any]) -> Envelope:
        ids = list(f["node_ids"])
        if not ids:
            return message
        i = self.draw(_sample(range(len(ids))))
        how = self.draw(_sample(["other round", "reflect", "attacker", "shuffle"]))
        recorded = [k for k in self.pool.advertised() if k.get("node_id") == ids[i]]
        own = [k for k in self.pool.advertised() if k.get("node_id") == node]
        if how == "other round" and recorded:
            source = self.draw(_sample(recorded))
        elif how == "reflect" and own:
            source = {**own[-1], "identity": f["identities"][i]}
        elif how == "attacker":
            cipher, mask = crypto.generate_keypair(), crypto.generate_keypair()
            self.pool.attacker.update({cipher.public: cipher.private, mask.public: mask.private})
            source = {"cipher_public": cipher.public, "mask_public": mask.public}
        else:
            order = list(range(len(ids)))
            random.Random(self.draw(_sample(range(1000)))).shuffle(order)
            return _with(message, {k: _permute(v, order, len(ids)) for k, v in f.items()})
        column = {
            "cipher_publics": "cipher_public",
            "mask_publics": "mask_public",
            "signatures": "signature",
            "receive_roots": "receive_root",
        }
        for plural, single in column.items():
            if plural in f and single in source:
                f[plural] = [*f[plural][:i], source[single], *f[plural][i + 1 :]]
        forged = _with(message, f)
        tags = message.fields.get(protocol.TAGS)
        if isinstance(tags, bytes) and len(tags) >= 32 * (i + 1) and self.draw(_booleans(0.5)):
            mine = [t for a, _, t in self.pool.tags() if a == node] or [b"\0" * 32]
            reflected = tags[: 32 * i] + self.draw(_sample(mine))[:32].ljust(32, b"\0")
            forged.fields[protocol.TAGS] = reflected + tags[32 * (i + 1) :]
        return forged

    def _forge_ciphertexts(self, node: int, message: Envelope, f: dict[str, Any]) -> Envelope:
        sealed = list(f["ciphertexts"])
        recorded = self.pool.ciphertexts()
        if not sealed or not recorded:
            return message
        i = self.draw(_sample(range(len(sealed))))
        sealed[i] = self.draw(_sample(recorded))
        return _with(message, {**f, "ciphertexts": sealed})

    def _forge_view(self, node: int, message: Envelope, f: dict[str, Any]) -> Envelope:
        named = set(f["survivors"]) | set(f.get("dropped", [])) | {node}
        everyone = sorted(named | set(self.views.get(node, ())))
        view = self.views.get(node)
        if view is None:
            view = self.views[node] = sorted(self.draw(_subsets(everyone)))
        out = {**f, "survivors": view}
        if "dropped" in f:
            config = self.config
            hidden = set()
            if config is not None and node in self.routes:  # neighbours whose shares it never got
                hidden = set(config.neighbours_of(node)) - self.routes[node]
            out["dropped"] = sorted(v for v in everyone if v not in view and v not in hidden)
        if message.kind == protocol.UNMASK:
            out.update(self._certificate(node, view))
        return _with(message, out)

    def _certificate(self, node: int, view: list[int]) -> dict[str, Any]:
        """Signatures and tags for ``view``, assembled as ``self.certify`` says."""
        signed: dict[int, bytes] = {}
        tagged: dict[int, bytes] = {}
        same = {a for a, v in self.views.items() if v == view}  # who was shown this list
        for author, signature in self.pool.signatures():
            if author in same or self.certify == "any":
                signed[author] = signature  # the latest one of each author
        for author, addressee, tag in self.pool.tags():
            if addressee == node and (author in same or self.certify == "any"):
                tagged[author] = tag
        own = self.pool.signatures_of(node)
        for member in view:
            if member == node or self.certify != "reflect":
                continue
            if member not in signed and own:
                signed[member] = own[-1]  # its own signature, relabelled
            reflected = [t for a, r, t in self.pool.tags() if a == node and r == member]
            if member not in tagged and reflected:
                tagged[member] = reflected[-1]  # its own tag for the member, as the member's
        if self.certify == "any":
            members = sorted(set(signed) | set(tagged))
            signed = {m: s for m, s in signed.items() if self.draw(_booleans(0.7))}
            tagged = {m: t for m, t in tagged.items() if m in members and self.draw(_booleans(0.7))}
        return {
            "signers": sorted(signed),
            "signatures": [signed[m] for m in sorted(signed)],
            "taggers": sorted(tagged),
            "tags": [tagged[m] for m in sorted(tagged)],
        }


def _routed(f: dict[str, Any], allowed: set[int]) -> dict[str, Any]:
    """A masked-input request keeping only the senders in ``allowed`` (all columns)."""
    keep = [i for i, v in enumerate(f["senders"]) if v in allowed]
    length = len(f["senders"])
    return {
        k: [v[i] for i in keep] if isinstance(v, list) and len(v) == length else v
        for k, v in f.items()
    }


def split_view_plan(everyone: list[int], t: int, group: list[int]) -> dict[int, set[int]] | None:
    """Full SecAgg: views of ``t`` survivors each that would release ``group`` (below ``t``)."""
    outside = [v for v in everyone if v not in group]
    pad = t - len(group)
    if not group or pad <= 0 or pad > len(outside):
        return None
    blocks = [outside[i : i + pad] for i in range(0, len(outside), pad)]
    if len(blocks[-1]) < pad:
        blocks[-1] = outside[-pad:]
    views = [set(group) | set(block) for block in blocks]
    assignment = {v: i for i, block in enumerate(blocks) for v in block}
    load = [sum(1 for v in assignment.values() if v == i) for i in range(len(blocks))]
    for member in group:
        i = min(range(len(blocks)), key=lambda j: load[j])
        assignment[member], load[i] = i, load[i] + 1
    return {v: views[i] for v, i in assignment.items()}


def isolation_plan(config: Any, target: int) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """SecAgg+: ``target`` gets the shares of ``t - 1`` far neighbours only and is shown them
    alive; every holder of theirs is shown them dropped (see fedkd's sparse_isolation_plan)."""
    from fedkd.secagg import graph

    ring_key = getattr(graph, "ring_key", None) or graph._ring_key
    ring = sorted(config.participants, key=lambda v: ring_key(config.graph_seed, v))
    where, n = {v: i for i, v in enumerate(ring)}, len(ring)

    def distance(v: int) -> int:
        gap = abs(where[v] - where[target])
        return min(gap, n - gap)

    neighbours = list(config.neighbours_of(target))
    far = set(sorted(neighbours, key=distance, reverse=True)[: config.threshold - 1])
    near = set(neighbours) - far
    everyone = set(config.participants)
    core = ({w for y in far for w in config.neighbours_of(y)} | near) - {target} - far
    others = sorted(everyone - core - far - {target}, key=distance)
    needed = max(config.threshold, n // 2 + 1)
    with_target = set(others[: max(needed - 1 - len(far), 0)]) | {target}
    views = {v: everyone - near if v in with_target else everyone - far for v in everyone}
    routes = {target: far} | {y: everyone - {target} for y in far}
    return views, routes


def _permute(value: Any, order: list[int], length: int) -> Any:
    if isinstance(value, list) and len(value) == length:
        return [value[j] for j in order]
    return value


def _sample(options: Any) -> Any:
    from hypothesis import strategies as st

    return st.sampled_from(list(options))


def _booleans(p: float) -> Any:
    from hypothesis import strategies as st

    return st.integers(0, 99).map(lambda x: x < 100 * p)


def _subsets(everyone: list[int]) -> Any:
    from hypothesis import strategies as st

    return st.sets(st.sampled_from(everyone), min_size=1)


# -- what the server learned ------------------------------------------------------------------
def _reconstructs(config: Any, shares: dict[int, int], secret: bytes) -> bool:
    if len(shares) < config.threshold:
        return False
    holders = sorted(shares)[: config.threshold]
    try:
        value = shamir.combine_shares(
            [config.share_x(h) for h in holders], [shares[h] for h in holders]
        )
    except Exception:
        return False
    return bool(value == secret)


def _revealed(collected: list[tuple[str, int, dict[str, Any], Envelope]], which: str) -> dict:
    owners_key, shares_key = (
        ("self_mask_owners", "self_mask_shares") if which == "b" else ("key_owners", "key_shares")
    )
    found: dict[int, dict[int, int]] = {}
    for kind, holder, f, _ in collected:
        if kind != protocol.UNMASK:
            continue
        for owner, raw in zip(f.get(owners_key, []), f.get(shares_key, []), strict=False):
            try:
                found.setdefault(owner, {})[holder] = shamir.share_from_bytes(raw)
            except ValueError:
                continue
    return found


def _seeds_revealed(collected: list[tuple[str, int, dict[str, Any], Envelope]]) -> set[bytes]:
    return {
        s for kind, _, f, _ in collected if kind == protocol.UNMASK for s in f.get("pair_seeds", [])
    }


def releasable(states: Mapping[int, Any], adversary: Adversary) -> list[tuple[int, ...]]:
    """The groups of clients whose exact sum the server can compute (smallest first)."""
    masked = {n for kind, n, _, _ in adversary.collected if kind == protocol.MASKED_INPUT}
    seed_shares, key_shares = (
        _revealed(adversary.collected, "b"),
        _revealed(adversary.collected, "s"),
    )
    revealed_seeds = _seeds_revealed(adversary.collected)
    known_private = dict(adversary.pool.attacker)
    for v, state in states.items():
        if state.config is not None and _reconstructs(
            state.config, key_shares.get(v, {}), state.mask_private
        ):
            known_private[crypto.public_from_private(state.mask_private)] = state.mask_private
    seeds_known = {
        v
        for v in masked
        if states[v].config is not None
        and _reconstructs(states[v].config, seed_shares.get(v, {}), states[v].self_seed)
    }
    terms: dict[int, dict[int, bytes]] = {}
    known: dict[int, set[int]] = {}
    for v in masked:
        state = states[v]
        own_public = crypto.public_from_private(state.mask_private)
        terms[v], known[v] = {}, set()
        for peer in state.share_senders:
            if peer == v:
                continue
            shown = state.peer_keys[peer].mask_public
            seed = crypto.derive_key(
                crypto.agree(state.mask_private, shown),
                label=crypto.MASK_SEED_LABEL,
                context=state.config.key_context(),
                first=v,
                second=peer,
            )
            terms[v][peer] = seed
            if seed in revealed_seeds or own_public in known_private or shown in known_private:
                known[v].add(peer)
    parent = {v: v for v in seeds_known}

    def find(v: int) -> int:
        while parent[v] != v:
            v = parent[v]
        return v

    tainted = set()
    for v in seeds_known:
        for peer, seed in terms[v].items():
            if peer in known[v]:
                continue
            if peer in parent and terms.get(peer, {}).get(v) == seed:
                parent[find(v)] = find(peer)
            else:
                tainted.add(v)
    groups: dict[int, list[int]] = {}
    for v in seeds_known:
        groups.setdefault(find(v), []).append(v)
    clean = [tuple(sorted(g)) for g in groups.values() if not tainted.intersection(g)]
    return sorted(clean, key=lambda g: (len(g), g))


def broken(
    states: Mapping[int, Any], adversary: Adversary, threshold: int
) -> tuple[int, ...] | None:
    """The smallest group below ``threshold`` (or a single input) the server can sum, if any."""
    for group in releasable(states, adversary):
        if len(group) < max(threshold, 2):
            return group
    return None


def scripted(*picks: Any) -> Draw:
    """A ``draw`` that answers every choice with the first of ``picks`` it offers (else its
    first option, or ``False``): a fixed adversary, for tests that need one exact attack."""

    def draw(strategy: Any) -> Any:
        options = list(getattr(strategy, "elements", ()))
        for pick in picks:
            if pick in options:
                return pick
        return options[0] if options else False

    return draw
