"""Hostile replies at the ServerApp: one node of ten answers each stage as an attacker would.

The real ServerApp and ClientApp run over the in-process Grid; node ``BAD`` has its Flower
replies rewritten (errors, empty or mistyped records, oversized or foreign payloads, garbage or
false reports of bad shares, another node's consistency signature, shares it does not hold,
its own replies replayed across stages and rounds, another node's keys). Each round uses one
hostile kind; every round must finish, and the secure sum must be the exact sum of the
survivors' contributions (read on the client side, where they are made): the hostile node is
dropped, or -- for a reply that does no harm -- counted like the others. The ServerApp never
raises.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, RecordDict

import fedkd.fl.rounds as rounds
import fedkd.secagg.protocol as protocol
from clients import codec
from fedkd.secagg.packing import reduce_words
from fedkd.secagg.wire import Accusations, ConsistencyReply, UnmaskReply
from fedkd.transport import Envelope
from tests.test_fl_app import run_app

pytestmark = pytest.mark.slow

NODES = 10
BAD = 1000 + 17 * 4
OTHER = 1000 + 17 * 5


def _config(reply: Message) -> ConfigRecord:
    if codec.CONFIG not in reply.content:
        reply.content[codec.CONFIG] = ConfigRecord()
    record = reply.content[codec.CONFIG]
    assert isinstance(record, ConfigRecord)
    return record


def _payload(reply: Message) -> bytes:
    value = _config(reply)[protocol.PAYLOAD]
    assert isinstance(value, bytes)
    return value


class Hostile:
    """Remembers the bad node's honest replies, to replay them where they do not belong."""

    def __init__(self) -> None:
        self.seen: dict[str, Envelope] = {}  # stage -> its last honest reply
        self.last: dict[str, Envelope] = {}  # stage -> the one of the round before

    def note(self, stage: str, reply: Message) -> None:
        if stage in self.seen:
            self.last[stage] = self.seen[stage]
        self.seen[stage] = codec.decode(stage, reply.content)

    def replay(self, stage: str, *, earlier: bool = False) -> Callable[[Message], Message]:
        def rewrite(reply: Message) -> Message:
            source = (self.last if earlier else self.seen)[stage]
            reply.content = codec.encode(source)
            return reply

        return rewrite


def _error(reply: Message) -> Message:
    reply.__dict__["_content"] = None
    reply.error = Error(0, "a hostile node")
    return reply


def _set(key: str, value: Any) -> Callable[[Message], Message]:
    def rewrite(reply: Message) -> Message:
        _config(reply)[key] = value
        return reply

    return rewrite


def _empty(reply: Message) -> Message:
    reply.content = RecordDict()
    return reply


def _float_masked(reply: Message) -> Message:
    reply.content[protocol.MASKED] = ArrayRecord([np.zeros(7, np.float64)])
    return reply


def _false_reports(reply: Message) -> Message:
    _config(reply)[protocol.ACCUSED] = Accusations(
        tuple(v for v in range(1000, 1000 + 17 * NODES, 17) if v != BAD),
        tuple(os.urandom(32) for _ in range(NODES - 1)),
    ).to_bytes()
    return reply


def _another_nodes_signature(reply: Message) -> Message:
    signed = ConsistencyReply.from_bytes(_payload(reply))
    _config(reply)[protocol.PAYLOAD] = dataclasses.replace(signed, node_id=OTHER).to_bytes()
    return reply


def _shares_twice(reply: Message) -> Message:
    shares = UnmaskReply.from_bytes(_payload(reply))
    doubled = dataclasses.replace(
        shares,
        self_mask_owners=shares.self_mask_owners * 2,
        self_mask_shares=shares.self_mask_shares * 2,
    )
    _config(reply)[protocol.PAYLOAD] = doubled.to_bytes()
    return reply


def _flipped_shares(reply: Message) -> Message:
    shares = UnmaskReply.from_bytes(_payload(reply))
    flipped = tuple(bytes([s[0], *s[1:-1], s[-1] ^ 1]) for s in shares.self_mask_shares)
    _config(reply)[protocol.PAYLOAD] = dataclasses.replace(
        shares, self_mask_shares=flipped
    ).to_bytes()
    return reply


# kind -> (stage, rewrite, harmless: the node stays a contributor)
KINDS: dict[str, tuple[str, Callable[[Hostile], Callable[[Message], Message]], bool]] = {
    "error reply to share keys": (protocol.SHARE_KEYS, lambda h: _error, False),
    "share keys answered with the train reply": (
        protocol.SHARE_KEYS,
        lambda h: h.replay("train"),
        False,
    ),
    "oversized share-keys payload": (
        protocol.SHARE_KEYS,
        lambda h: _set(protocol.PAYLOAD, b"\0" * (2 << 20)),
        False,
    ),
    "share keys replayed from the last round": (
        protocol.SHARE_KEYS,
        lambda h: h.replay(protocol.SHARE_KEYS, earlier=True),
        False,
    ),
    "float masked input": (protocol.MASKED_INPUT, lambda h: _float_masked, False),
    "garbage reports of bad shares": (
        protocol.MASKED_INPUT,
        lambda h: _set(protocol.ACCUSED, os.urandom(100)),
        False,
    ),
    "every sender reported, made-up keys": (protocol.MASKED_INPUT, lambda h: _false_reports, False),
    "consistency payload as a string": (
        protocol.CONSISTENCY,
        lambda h: _set(protocol.PAYLOAD, "signed"),
        True,
    ),
    "another node's consistency signature": (
        protocol.CONSISTENCY,
        lambda h: _another_nodes_signature,
        True,
    ),
    "empty unmask reply": (protocol.UNMASK, lambda h: _empty, True),
    "shares sent twice": (protocol.UNMASK, lambda h: _shares_twice, True),
    "flipped shares": (protocol.UNMASK, lambda h: _flipped_shares, True),
    "an unknown extra field": (protocol.MASKED_INPUT, lambda h: _set("extra", b"x"), True),
}
ORDER = sorted(KINDS)


def test_one_hostile_node_of_ten_costs_each_round_nothing_but_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hostile = Hostile()
    contributions: dict[tuple[int, int], np.ndarray] = {}
    outcomes: dict[int, protocol.SecureOutcome] = {}
    widths: dict[int, int] = {}
    serve, secure_sum = protocol.serve_stage, rounds.secure_sum

    def serving(state: Any, request: Any, values: Any = None, noise_rng: Any = None) -> Any:
        if values is not None and request.kind == protocol.MASKED_INPUT:
            config = state.config
            contributions[(config.round, state.node_id)] = config.quantizer.encode(values).values
        return serve(state, request, values, noise_rng)

    def summing(*args: Any, **kwargs: Any) -> protocol.SecureOutcome:
        config = args[1].config
        outcome = secure_sum(*args, **kwargs)
        outcomes[config.round], widths[config.round] = outcome, config.modulus_bits
        return outcome

    monkeypatch.setattr(protocol, "serve_stage", serving)
    monkeypatch.setattr(rounds, "secure_sum", summing)

    def tamper(reply: Message) -> Message:
        if reply.metadata.src_node_id != BAD or reply.has_error():
            return reply
        stage = codec.kind_of(reply.metadata.message_type)
        hostile.note(stage, reply)
        kind = ORDER[max(outcomes, default=0) % len(ORDER)]  # this round's hostile kind
        wanted, make, _ = KINDS[kind]
        if stage != wanted or (kind.endswith("last round") and stage not in hostile.last):
            return reply
        return make(hostile)(reply)

    _, history, _ = run_app(
        tmp_path,
        nodes=NODES,
        num_rounds=len(ORDER),
        grid_kwargs={"tamper": tamper},
        eval_clients=False,
        distill_epochs=0,
        model="mlp",
    )
    assert len(history) == len(ORDER)
    for index, kind in enumerate(ORDER):
        round_ = index + 1
        outcome = outcomes[round_]
        assert outcome.result is not None, (kind, outcome.reason)
        survivors = list(outcome.result.survivors)
        _, _, harmless = KINDS[kind]
        assert (BAD in survivors) == harmless, (kind, survivors, outcome.failed)
        assert set(survivors) >= set(range(1000, 1000 + 17 * NODES, 17)) - {BAD}, kind
        if kind != "an unknown extra field":
            assert BAD in outcome.failed, (kind, outcome.failed)
        expected = sum(contributions[(round_, v)] for v in survivors)
        reduce_words(expected, widths[round_])
        np.testing.assert_array_equal(outcome.result.quantized_sum, expected, err_msg=kind)
