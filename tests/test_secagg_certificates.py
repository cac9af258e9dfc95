"""Consistency certificates against a server that reflects a client's own material (issue 25.1).

The server shows clients different survivor lists (split views) and completes each client's
certificate with what that client sent itself: its signature relabelled as its peers', its
consistency tags returned as theirs. Full SecAgg (a group below t), SecAgg+ (one client's
input, by also choosing whose shares reach the target) and the federated round with the
default run config (``secagg-roster=simulated``). On b3fdd78 (symmetric tags over a message
naming neither side) every one of these released its sum exactly; now every client refuses.
The key tags of stage 1 are pairwise MACs too: reflecting them is refused as well.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import fedkd.attacks.secagg as attacks
import fedkd.secagg.protocol as protocol
from fedkd.attacks.secagg import with_payload
from fedkd.secagg.quantize import Quantizer
from fedkd.secagg.wire import ShareKeysRequest
from fedkd.transport import Envelope

D = 6


def _inputs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=4.0, size=D) for _ in range(n)]


def _refusals(run: attacks.AttackRun) -> str:
    return " | ".join(str(r) for r in run.sim.refusals())


@pytest.mark.parametrize(
    ("n", "t", "group"), [(5, 3, (0, 1)), (10, 6, (0, 1, 2, 3)), (10, 7, (0, 1, 2, 3, 4, 5))]
)
def test_reflected_certificates_full_secagg(n: int, t: int, group: tuple[int, ...]) -> None:
    plan = attacks.split_view_plan(n, t, group)
    assert plan is not None
    inputs = _inputs(n)
    run = attacks.run_attack(
        inputs,
        lambda inner: attacks.ReflectedCertificates(inner, plan),
        threshold=t,
        roster=True,
        server_roster=False,
    )
    assert run.leak.smallest is None and not run.leak.seeds  # nobody unmasked
    assert "endorsed the survivor set" in _refusals(run)


@pytest.mark.parametrize("n", [13, 25])
def test_reflected_certificates_secagg_plus_isolate_one_client(n: int) -> None:
    inputs, target = _inputs(n), 0
    run = attacks.run_attack(
        inputs,
        lambda inner: attacks.ReflectedCertificates(
            inner, plan=lambda config: attacks.sparse_isolation_plan(config, target)
        ),
        neighbours=4,
        threshold=3,
        roster=True,
        server_roster=False,
    )
    assert not run.leak.exposes_fewer_than(3) and target not in run.leak.seeds
    assert "endorsed the survivor set" in _refusals(run)


def test_the_sparse_isolation_is_real_without_a_roster() -> None:
    """Without certificates (the curious-server mode) the same views and routes release the
    target's input exactly: the certificate is what stops the attack above."""
    inputs, target = _inputs(13), 0
    run = attacks.run_attack(
        inputs,
        lambda inner: attacks.ReflectedCertificates(
            inner, plan=lambda config: attacks.sparse_isolation_plan(config, target)
        ),
        neighbours=4,
        threshold=3,
    )
    assert run.leak.smallest == (target,)
    expected = Quantizer(64.0, 32).encode(inputs[target], warn=False).values
    np.testing.assert_array_equal(run.recovered(), expected)


@pytest.mark.slow
def test_reflected_certificates_through_the_federated_round(tmp_path: Path) -> None:
    from fedkd.attacks.secagg.leakage import assess
    from fedkd.fl.config import FedConfig
    from fedkd.fl.experiment import FIRST_NODE_ID, simulate

    n, t = 10, 7  # the default threshold share (0.66) of 10 holders
    group = tuple(FIRST_NODE_ID + v for v in range(6))
    plan = attacks.split_view_plan(n, t, range(6))
    assert plan is not None
    views = {FIRST_NODE_ID + v: {FIRST_NODE_ID + w for w in view} for v, view in plan.items()}
    box: list[attacks.ReflectedCertificates] = []

    def attack(inner: attacks.Transport) -> attacks.Transport:
        box.append(attacks.ReflectedCertificates(inner, views))
        box[0].drive_unmask = True  # the round code of this server checks signatures itself
        return box[0]

    config = {
        **FedConfig().to_dict(),
        "num-rounds": 1,
        "local-epochs": 1,
        "warmup-epochs": 1,
        "distill-epochs": 1,
        "eval-clients": False,
        "out-dir": str(tmp_path),
        "run-name": "reflect",
    }
    assert config["secagg-roster"] == "simulated"
    simulate(config, n, wrap=attack)
    leak = assess(box[0].observed)
    assert leak.smallest is None and not leak.seeds
    assert group[0] in box[0].observed.masked  # the round got as far as the attack needs


class _OnlyOwnMaterial(attacks.ViewAttack):
    """Honest lists; each client's certificate is made of its own signature and tags only."""

    def certify(
        self,
        node: int,
        survivors: tuple[int, ...],
        signatures: dict[int, bytes],
        tags: dict[int, bytes],
    ) -> None:
        _, own_signature, own_tags = self.signed[node]
        signatures.clear()
        tags.clear()
        signatures.update({w: own_signature for w in survivors if w != node})
        tags.update({w: own_tags[w] for w in survivors if w in own_tags})


@pytest.mark.parametrize("neighbours", [None, 4])
def test_a_certificate_of_a_clients_own_material_certifies_nothing(neighbours: int | None) -> None:
    run = attacks.run_attack(
        _inputs(9), _OnlyOwnMaterial, neighbours=neighbours, roster=True, server_roster=False
    )
    assert run.leak.smallest is None and len(run.sim.refusals()) == 9
    assert all("endorsed the survivor set" in str(r) for r in run.sim.refusals())


class _ReflectedKeyTags(attacks.Attack):
    """Shows each client its own advertisement, renamed, as its first peer's, with the key tag
    it addressed to that peer: the tag's own author is the only one that could have made it."""

    def rewrite(self, node: int, message: Envelope) -> Envelope:
        if message.kind != protocol.SHARE_KEYS or node not in self.observed.advertised:
            return message
        request = ShareKeysRequest.from_bytes(protocol.payload_of(message))
        own = self.observed.advertised[node]
        index = next(i for i, k in enumerate(request.keys) if k.node_id != node)
        peer = request.keys[index]
        forged = dataclasses.replace(own, node_id=peer.node_id, identity=peer.identity)
        keys = list(request.keys)
        keys[index] = dataclasses.replace(forged, signature=own.signature)
        tags = bytearray(message.fields[protocol.TAGS])  # type: ignore[arg-type]
        reflected = own.tag_for(peer.identity)
        assert reflected is not None
        tags[32 * index : 32 * index + 32] = reflected
        rewritten = with_payload(message, ShareKeysRequest(tuple(keys)).to_bytes())
        rewritten.fields[protocol.TAGS] = bytes(tags)
        return rewritten


def test_a_reflected_key_tag_does_not_authenticate_keys() -> None:
    run = attacks.run_attack(_inputs(6), _ReflectedKeyTags, roster=True, server_roster=False)
    assert run.sim.outcome.result is None and len(run.sim.refusals()) == 6
    assert all("not signed by the roster key" in str(r) for r in run.sim.refusals())
