"""Study 1, ``secagg-isolation``: every way a server can try to isolate one client's input.

Threat model: a malicious server that deviates from the protocol in any way it likes,
against honest clients; success means it computes the exact sum of fewer than ``t`` clients
(one input, at best). The attacks are those of :mod:`fedkd.attacks.secagg` (issue 9), as
wrappers around the honest round's transport, plus the two below; each is run against
fedkd with identities and a roster (the malicious-server mode) and fedkd without one (the
curious-server mode), and the leakage assessment (:func:`fedkd.attacks.secagg.leakage.assess`)
says which sums the attacker can compute. The third system, Flower 1.42's own SecAgg+, is
attacked in ``experiments/attacks/flower_isolation.py`` (``fedkd`` never imports ``flwr``).

* ``overlapping lists``: every client is told the target survived *and* dropped;
* ``inconsistent configs``: the target is given a config with threshold 1 (the others the
  honest one);
* ``too few survivors``: everyone is told only ``t - 1`` clients survived.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import fedkd.attacks.secagg as attacks
import fedkd.secagg.protocol as protocol
from fedkd.attacks.common import StudyOptions, StudyResult, markdown_table
from fedkd.attacks.secagg.base import Attack, with_payload
from fedkd.secagg.quantize import Quantizer
from fedkd.secagg.wire import AdvertiseRequest
from fedkd.transport import Envelope, Transport

CLIP, BITS = 64.0, 32  # the driver's defaults (fedkd.secagg.driver.simulate)


class InconsistentConfig(Attack):
    """The target is shown another aggregation config (threshold 1) than everyone else."""

    def __init__(self, inner: Transport, target: int) -> None:
        super().__init__(inner)
        self.target = target

    def rewrite(self, node: int, message: Envelope) -> Envelope:
        if message.kind != protocol.ADVERTISE or node != self.target:
            return message
        config = AdvertiseRequest.from_bytes(protocol.payload_of(message)).config
        lowered = dataclasses.replace(config, threshold=1)
        return with_payload(message, AdvertiseRequest(lowered).to_bytes())


@dataclass(frozen=True)
class Case:
    """One attack as run: its wrapper factory and the round's shape."""

    name: str
    make: Callable[[Transport], Attack]
    n: int
    threshold: int
    neighbours: int | None = None
    target: tuple[int, ...] = (0,)  # the group the attacker wants alone


def cases() -> list[Case]:
    """The attacks of the study, each at a shape where it can succeed without defences."""
    n, t = 10, 6
    everyone = set(range(n))
    plan = attacks.split_view_plan(n, t, (0, 1, 2, 3))
    assert plan is not None
    few = set(range(t - 1))
    return [
        Case("honest round (reference)", Attack, n, t, target=tuple(range(n))),
        Case(
            "overlapping survivor/dropped lists",
            lambda i: attacks.ArbitraryServer(
                i, {v: everyone for v in everyone}, {v: {0} for v in everyone}
            ),
            n,
            t,
        ),
        Case("split views", lambda i: attacks.SplitViews(i, plan), n, t, target=(0, 1, 2, 3)),
        Case("SecAgg+ neighbourhood lie", lambda i: attacks.NeighbourhoodLie(i, 0), 12, 3, 4),
        Case("key substitution", lambda i: attacks.KeySubstitution(i, 0), n, t),
        Case("replay under a fresh round id", lambda i: attacks.ReplayUnderFreshRound(i, 0), n, t),
        Case("inconsistent per-client configs", lambda i: InconsistentConfig(i, 0), n, t),
        Case(
            "too few survivors",
            lambda i: attacks.ArbitraryServer(
                i, {v: few for v in everyone}, {v: everyone - few for v in everyone}
            ),
            n,
            t,
        ),
    ]


def inputs(n: int, length: int, seed: int) -> list[np.ndarray]:
    """Logit-like client vectors (the protocol does not care what they mean)."""
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=4.0, size=length) for _ in range(n)]


def outcome(case: Case, vectors: list[np.ndarray], roster: bool) -> dict[str, object]:
    """Run one case; what the attacker recovered (and how exactly), or why it was refused."""
    run = attacks.run_attack(
        vectors,
        case.make,
        threshold=case.threshold,
        neighbours=case.neighbours,
        roster=roster,
        server_roster=False,
    )
    refusals = [str(r) for r in run.sim.refusals()]
    leaked = run.leak.smallest
    replay = getattr(run.attack, "replayed", None)
    quantizer = Quantizer(CLIP, BITS)
    if leaked is None and replay is not None and replay.result is not None:
        first = run.sim.outcome.result
        assert first is not None
        diff = (first.quantized_sum - replay.result.quantized_sum).astype(np.uint64)
        leaked, exact = (case.target[0],), quantizer.decode_sum(diff, 1)
    elif leaked is not None:
        exact = quantizer.decode_sum(run.recovered(leaked), len(leaked))
    if leaked is not None and len(leaked) < case.threshold:
        truth = np.sum([np.clip(vectors[v], -CLIP, CLIP) for v in leaked], axis=0)
        error = float(np.linalg.norm(exact - truth) / np.linalg.norm(truth))
        return {
            "verdict": "recovered",
            "group": list(leaked),
            "relative_error": error,
            "refusal": refusals[0] if refusals else "",
        }
    reason = run.sim.outcome.reason
    verdict = "refused" if refusals else (f"no leak; {reason[:90]}" if reason else "no leak")
    if case.name.startswith("honest"):
        verdict = "sum of all only" if leaked == tuple(range(case.n)) else "LEAK"
    return {
        "verdict": verdict,
        "group": list(leaked or ()),
        "relative_error": float("nan"),
        "refusal": refusals[0] if refusals else "",
    }


FlowerAttack = Callable[[str, list[np.ndarray], int, float], dict[str, object] | None]
"""``(case name, inputs, threshold, clip) -> outcome`` against Flower (``None``: not run)."""

SYSTEMS = ("fedkd + roster", "fedkd, no roster", "Flower SecAgg+")


def run(options: StudyOptions, flower: FlowerAttack | None = None) -> StudyResult:
    """Every case against every system, each seed; one table of verdicts."""
    per_seed = []
    for seed in options.seeds:
        record: dict[str, dict[str, dict[str, object]]] = {}
        for case in cases():
            vectors = inputs(case.n, 16 if options.quick else 64, seed)
            row = {
                SYSTEMS[0]: outcome(case, vectors, True),
                SYSTEMS[1]: outcome(case, vectors, False),
            }
            theirs = None if flower is None else flower(case.name, vectors, case.threshold, CLIP)
            row[SYSTEMS[2]] = theirs or {
                "verdict": "not run",
                "group": [],
                "relative_error": float("nan"),
                "refusal": "",
            }
            record[case.name] = row
        per_seed.append(record)
    first = per_seed[0]
    rows = [[name, *(_cell(first[name][s]) for s in SYSTEMS)] for name in first]
    return StudyResult(
        name="secagg-isolation",
        question="Can a malicious server isolate one client's input despite secure aggregation?",
        threat_model="malicious server deviating at will (lists, keys, configs, round ids); "
        "honest clients; success = the exact sum of fewer than t clients",
        results={"per_seed": per_seed},
        table=markdown_table(["attack", *SYSTEMS], rows),
        answer=_answer(first),
        plots=[],
    )


def _cell(result: dict[str, object]) -> str:
    verdict = str(result["verdict"])
    if verdict == "recovered":
        return f"recovered {result['group']} (rel. err. {float(result['relative_error']):.1e})"  # type: ignore[arg-type]
    return verdict


def _answer(first: dict[str, dict[str, dict[str, object]]]) -> str:
    def recovered(system: str) -> list[str]:
        return [name for name, row in first.items() if row[system]["verdict"] == "recovered"]

    ours, curious, theirs = (recovered(s) for s in SYSTEMS)
    flower_only = [name for name in theirs if name not in ours]
    ran = [
        n
        for n, row in first.items()
        if row[SYSTEMS[2]]["verdict"] != "not run" and not n.startswith("honest")
    ]
    return (
        f"fedkd with a roster: {len(ours)} of {len(first) - 1} attacks recovered anything "
        f"({', '.join(ours) or 'none'}). Without a roster: {', '.join(curious) or 'none'}. "
        f"Flower's SecAgg+ ({len(ran)} attacks run against its real code): "
        f"{', '.join(theirs) or 'none'} recovered the target's input"
        f"{'; fedkd with a roster refuses ' + ', '.join(flower_only) if flower_only else ''}."
    )
