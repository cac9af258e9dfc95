"""Isolation attacks against Flower 1.42's own SecAgg+ (SecAggPlusWorkflow, secaggplus_mod).

The clients run Flower's real ``secaggplus_mod``; the server runs Flower's real workflow stage
methods (the harness of :mod:`experiments.flower_secaggplus`). The attacker is a ``Grid``
that rewrites what goes out and reads what comes back -- Flower's own code runs unchanged:

* ``overlapping lists``: in the unmask stage the target is listed as *active and dead* at
  once. Flower's client never checks the lists are disjoint, so each of the target's
  neighbours returns both the share of its self-mask seed and the share of its secret key.
  The attacker rebuilds both with Flower's ``combine_shares``, strips its own extra shares
  from the replies (the workflow then finishes as if nothing happened) and unmasks the
  target's masked vector alone.
* ``key substitution``: Flower's public keys are not authenticated. In the share-keys stage
  the target is shown a fresh attacker key pair in place of each neighbour's, and each
  neighbour an attacker pair in place of the target's; the attacker re-encrypts the shares
  between them (a man in the middle), so the round goes on, decrypts every share of the
  target's self-mask seed, and knows each pairwise key of the target.
* ``replay and differencing``: the same clients, with the same inputs, are asked again in a
  fresh round without the target; Flower's clients answer any new setup, so the difference
  of the two sums is the target's input.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import cast

import numpy as np
from flwr.app import Message
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    decrypt,
    encrypt,
    generate_shared_key,
)
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_extract,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.common.secure_aggregation.secaggplus_utils import (
    pseudo_rand_gen,
    share_keys_plaintext_separate,
)
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    public_key_to_bytes,
)

from experiments.flower_secaggplus import (
    MODULUS_RANGE,
    NODE_ID_BASE,
    QUANTIZATION_RANGE,
    STAGES,
    InProcessGrid,
    _as_server_app,
    _legacy_context,
    _mod_handler,
    _run_stages,
    _stage_of,
    _workflow,
    flower_shares,
    run_flower_exact,
)


class _AttackGrid(InProcessGrid):
    """A grid whose server rewrites each message it sends and reads each reply it gets."""

    def _deliver(self, messages: Iterable[Message]) -> list[Message]:
        sent = list(messages)
        for message in sent:
            self._rewrite(message)
        replies = super()._deliver(sent)
        for reply in replies:
            self._read(reply, _stage_of_reply(sent, reply))
        return replies

    def _rewrite(self, message: Message) -> None:
        """Change ``message`` in place before it is delivered (default: nothing)."""

    def _read(self, reply: Message, stage: str) -> None:
        """Note (or change) ``reply`` of ``stage`` (default: nothing)."""


class OverlappingListsGrid(_AttackGrid):
    """A grid whose server lists ``target`` as active and dead in every unmask request."""

    def __init__(self, handlers: dict, target: int) -> None:  # type: ignore[type-arg]
        super().__init__(handlers)
        self.target = target
        self.public_keys: dict[int, bytes] = {}
        self.sources: list[int] = []
        self.masked: list[np.ndarray] | None = None
        self.seed_shares: list[bytes] = []
        self.key_shares: list[bytes] = []

    def _rewrite(self, message: Message) -> None:
        cfg = message.content.config_records[RECORD_KEY_CONFIGS]
        stage, dst = _stage_of(message), message.metadata.dst_node_id
        if stage == Stage.SHARE_KEYS and dst == self.target:
            for key, value in cfg.items():
                if key.isdigit():
                    self.public_keys[int(key)] = cast(list[bytes], value)[0]
        if stage == Stage.COLLECT_MASKED_VECTORS and dst == self.target:
            self.sources = list(cast(list[int], cfg[Key.SOURCE_LIST]))
        if stage == Stage.UNMASK and self.target in cast(list[int], cfg[Key.ACTIVE_NODE_ID_LIST]):
            cfg[Key.DEAD_NODE_ID_LIST] = [*cast(list[int], cfg[Key.DEAD_NODE_ID_LIST]), self.target]

    def _read(self, reply: Message, stage: str) -> None:
        if reply.has_error():
            return
        cfg = reply.content.config_records[RECORD_KEY_CONFIGS]
        if stage == Stage.COLLECT_MASKED_VECTORS and reply.metadata.src_node_id == self.target:
            self.masked = [
                bytes_to_ndarray(b) for b in cast(list[bytes], cfg[Key.MASKED_PARAMETERS])
            ]
        if stage != Stage.UNMASK:
            return
        nids, shares = (
            list(cast(list[int], cfg[Key.NODE_ID_LIST])),
            list(cast(list[bytes], cfg[Key.SHARE_LIST])),
        )
        hits = [i for i, nid in enumerate(nids) if nid == self.target]
        if len(hits) == 2:  # first: self-mask seed share (active), second: key share (dead)
            self.seed_shares.append(shares[hits[0]])
            self.key_shares.append(shares[hits[1]])
            del nids[hits[1]], shares[hits[1]]  # hide the deviation from Flower's own server
            cfg[Key.NODE_ID_LIST], cfg[Key.SHARE_LIST] = nids, shares

    def recover(self, clip: float) -> np.ndarray:
        """The target's input, unmasked alone from its masked vector and the stolen secrets."""
        if self.masked is None or not self.seed_shares:
            raise RuntimeError("the attack saw no masked vector or no shares of the target")
        seed, secret = combine_shares(self.seed_shares), combine_shares(self.key_shares)
        shapes = [a.shape for a in self.masked]
        vector = parameters_subtraction(self.masked, pseudo_rand_gen(seed, MODULUS_RANGE, shapes))
        for peer in self.sources:
            shared = generate_shared_key(
                bytes_to_private_key(secret), bytes_to_public_key(self.public_keys[peer])
            )
            mask = pseudo_rand_gen(shared, MODULUS_RANGE, shapes)
            added = self.target > peer  # the client added the mask when its id was larger
            vector = (parameters_subtraction if added else parameters_addition)(vector, mask)
        vector = parameters_mod(vector, MODULUS_RANGE)
        _, values = factor_extract(vector)
        return dequantize(values, clip, QUANTIZATION_RANGE)[0]


class KeySubstitutionGrid(_AttackGrid):
    """A grid whose server stands between the target and each neighbour with its own keys."""

    def __init__(self, handlers: dict, target: int) -> None:  # type: ignore[type-arg]
        super().__init__(handlers)
        self.target = target
        self.real: dict[int, tuple[bytes, bytes]] = {}  # node -> its (pk1, pk2)
        self.to_target: dict[int, tuple] = {}  # peer -> the pairs shown to the target
        self.to_peer: dict[int, tuple] = {}  # peer -> the pair shown to it as the target's
        self.seed_shares: list[bytes] = []
        self.masked: list[np.ndarray] | None = None
        self.sources: list[int] = []

    @staticmethod
    def _pair() -> tuple:
        (sk1, pk1), (sk2, pk2) = generate_key_pairs(), generate_key_pairs()
        return sk1, sk2, public_key_to_bytes(pk1), public_key_to_bytes(pk2)

    def _rewrite(self, message: Message) -> None:
        cfg = message.content.config_records[RECORD_KEY_CONFIGS]
        stage, dst = _stage_of(message), message.metadata.dst_node_id
        if stage == Stage.COLLECT_MASKED_VECTORS and dst == self.target:
            self.sources = list(cast(list[int], cfg[Key.SOURCE_LIST]))
        if stage != Stage.SHARE_KEYS:
            return
        for key in [k for k in cfg if k.isdigit()]:
            nid = int(key)
            self.real[nid] = tuple(cast(list[bytes], cfg[key]))  # type: ignore[assignment]
            if dst == self.target and nid != self.target:
                fake = self.to_target.setdefault(nid, self._pair())
                cfg[key] = [fake[2], fake[3]]
            elif dst != self.target and nid == self.target:
                fake = self.to_peer.setdefault(dst, self._pair())
                cfg[key] = [fake[2], fake[3]]

    def _key(self, fake: tuple, nid: int) -> bytes:
        return generate_shared_key(fake[1], bytes_to_public_key(self.real[nid][1]))

    def _read(self, reply: Message, stage: str) -> None:
        if reply.has_error():
            return
        cfg, src = reply.content.config_records[RECORD_KEY_CONFIGS], reply.metadata.src_node_id
        if stage == Stage.COLLECT_MASKED_VECTORS and src == self.target:
            self.masked = [
                bytes_to_ndarray(b) for b in cast(list[bytes], cfg[Key.MASKED_PARAMETERS])
            ]
        if stage != Stage.SHARE_KEYS:
            return
        dsts, texts = (
            cast(list[int], cfg[Key.DESTINATION_LIST]),
            list(cast(list[bytes], cfg[Key.CIPHERTEXT_LIST])),
        )
        for i, dst in enumerate(dsts):
            if src == self.target:  # the target's shares for dst: read them, pass them on
                plain = decrypt(self._key(self.to_target[dst], src), texts[i])
                self.seed_shares.append(share_keys_plaintext_separate(plain)[2])
                texts[i] = encrypt(self._key(self.to_peer[dst], dst), plain)
            elif dst == self.target:  # a peer's shares for the target: pass them on
                plain = decrypt(self._key(self.to_peer[src], src), texts[i])
                texts[i] = encrypt(self._key(self.to_target[src], dst), plain)
        cfg[Key.CIPHERTEXT_LIST] = texts

    def recover(self, clip: float) -> np.ndarray:
        """The target's input from its masked vector, its seed and the attacker's keys."""
        if self.masked is None or not self.seed_shares:
            raise RuntimeError("the attack saw no masked vector or no shares of the target")
        shapes = [a.shape for a in self.masked]
        seed = combine_shares(self.seed_shares)
        vector = parameters_subtraction(self.masked, pseudo_rand_gen(seed, MODULUS_RANGE, shapes))
        target_pk1 = bytes_to_public_key(self.real[self.target][0])
        for peer in self.sources:
            shared = generate_shared_key(self.to_target[peer][0], target_pk1)
            mask = pseudo_rand_gen(shared, MODULUS_RANGE, shapes)
            added = self.target > peer
            vector = (parameters_subtraction if added else parameters_addition)(vector, mask)
        vector = parameters_mod(vector, MODULUS_RANGE)
        _, values = factor_extract(vector)
        return dequantize(values, clip, QUANTIZATION_RANGE)[0]


def _stage_of_reply(sent: Sequence[Message], reply: Message) -> str:
    for message in sent:
        if message.metadata.dst_node_id == reply.metadata.src_node_id:
            return _stage_of(message)
    return ""


def overlapping_lists(
    inputs: Sequence[np.ndarray],
    *,
    target: int,
    neighbours: int | None,
    threshold: int,
    clip: float,
    seed: int = 0,
    grid_class: type = OverlappingListsGrid,
) -> np.ndarray:
    """Run Flower's SecAgg+ round under an attacking grid (overlapping lists by default)."""
    random.seed(seed)
    _as_server_app()
    box: list[InProcessGrid] = []
    handlers = {
        NODE_ID_BASE + i: _mod_handler(
            NODE_ID_BASE + i, np.asarray(v, np.float64), lambda: box[0].ledger, False
        )
        for i, v in enumerate(inputs)
    }
    grid = grid_class(handlers, NODE_ID_BASE + target)
    box.append(grid)
    context = _legacy_context(grid, len(inputs))
    workflow = _workflow(flower_shares(len(inputs), neighbours), threshold, clip)
    _run_stages(workflow, grid, context, WorkflowState(), STAGES)
    return grid.recover(clip)


def replay_difference(
    inputs: Sequence[np.ndarray],
    *,
    target: int,
    neighbours: int | None,
    threshold: int,
    clip: float,
    seed: int = 0,
) -> np.ndarray:
    """Two honest Flower rounds, the second without the target; the difference of the sums."""
    everyone = run_flower_exact(
        inputs, neighbours=neighbours, threshold=threshold, dropped=(), clip=clip, seed=seed
    )
    rest = [v for i, v in enumerate(inputs) if i != target]
    k = None if neighbours is None else min(neighbours, len(rest) - 1)
    if k is not None and (k >= len(rest) - 1 or k % 2):
        k = None
    others = run_flower_exact(
        rest,
        neighbours=k,
        threshold=min(threshold, len(rest)),
        dropped=(),
        clip=clip,
        seed=seed + 1,
    )
    assert everyone.mean is not None and others.mean is not None
    return everyone.mean * len(inputs) - others.mean * len(rest)  # Flower returns the mean


def key_substitution(
    inputs: Sequence[np.ndarray],
    *,
    target: int,
    neighbours: int | None,
    threshold: int,
    clip: float,
    seed: int = 0,
) -> np.ndarray:
    """Run Flower's SecAgg+ round under the key-substituting server; the target's input."""
    return overlapping_lists(
        inputs,
        target=target,
        neighbours=neighbours,
        threshold=threshold,
        clip=clip,
        seed=seed,
        grid_class=KeySubstitutionGrid,
    )
