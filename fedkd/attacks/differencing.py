"""Differencing across runs: a server repeats a round in a new run without one client.

Threat model: a malicious server (it runs the rounds, picks who takes part, and may start as
many runs as it likes). It runs round ``r`` of a federation, then runs the same round again in
a new run (a second ``flwr run``, or a resume) with the same pushed student and one client
``u`` left out. Clients train deterministically (their seeds come from the run config), so
every other contribution is bit-identical and the difference of the two secure sums is
``u``'s whole vector: its public-set logits, its class weights, its statistics, to within a
quantisation step (So et al., "Securing Secure Aggregation: Mitigating Multi-Round Privacy
Leakage in Federated Learning", AAAI 2023, study the same leak across rounds).

The defence is the node's release ledger (:mod:`fedkd.fl.ledger`): a node masks a given vector
only for the participant set it first masked it for. What remains is the *approximate*
difference: a server that perturbs the pushed student slightly in the second run gets vectors
that differ from the first run's, which the ledger cannot tell from any other new round; the
study measures how close the difference then comes to ``u``'s vector (differential privacy is
the remedy: the noise of two releases does not cancel).

:func:`difference` runs the attack on two federations the caller built (in process or over
Flower's real ClientApp); :func:`run` is the study (``fedkd attack differencing``).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedkd.attacks.common import StudyOptions, StudyResult, markdown_table, run_config
from fedkd.attacks.federation import (
    AttackedFederation,
    RoundView,
    build_federation,
    observe_round,
)


@dataclass(frozen=True)
class Differencing:
    """The two runs' views and what their difference tells the server about the target."""

    first: RoundView
    second: RoundView
    truth: np.ndarray  # the target's own teacher part (P*C + C,)

    @property
    def recovered(self) -> np.ndarray | None:
        """First sum minus second sum (``None`` when either round gave no sum)."""
        if self.first.total is None or self.second.total is None:
            return None
        return self.first.total - self.second.total

    @property
    def relative_error(self) -> float:
        """``||recovered - truth|| / ||truth||`` (infinite when nothing was recovered)."""
        recovered = self.recovered
        if recovered is None:
            return float("inf")
        return float(np.linalg.norm(recovered - self.truth) / np.linalg.norm(self.truth))


def perturbed(student: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    """A copy of ``student`` with each floating tensor moved by ``scale`` times its RMS in
    Gaussian noise: what a server pushes when it wants vectors unlike the first run's."""
    import copy

    generator = torch.Generator().manual_seed(seed)
    moved = copy.deepcopy(student)
    with torch.no_grad():
        for tensor in moved.state_dict().values():
            if tensor.is_floating_point() and tensor.numel():
                rms = tensor.pow(2).mean().sqrt()
                tensor.add_(scale * rms * torch.randn(tensor.shape, generator=generator))
    return moved


def difference(
    first: AttackedFederation,
    second: AttackedFederation,
    target: int,
    truth: np.ndarray,
    *,
    server_round: int = 1,
) -> Differencing:
    """Round ``server_round`` with every client in ``first``, then without ``target`` in
    ``second`` (a new run: its own run id, fresh per-run client state)."""
    everyone = sorted(first.node_of)
    return Differencing(
        observe_round(first, server_round, everyone),
        observe_round(second, server_round, [p for p in everyone if p != target]),
        truth,
    )


def target_vector(config: dict[str, Any], clients: int, target: int) -> np.ndarray:
    """The target's teacher part in round 1, as it would send it in the clear (the study plays
    every party and computes it with its own throw-away node state)."""
    with tempfile.TemporaryDirectory() as fresh, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # secagg=false is the point here: the study's truth
        plain = build_federation({**config, "secagg": False}, clients, state_dir=fresh)
        view = observe_round(plain, 1, [target])
    return view.contributions[target]


SCALES = (0.0, 1e-4, 1e-3, 1e-2)  # student perturbations of the second run (times the RMS)
DP = {"dp": "distributed", "dp-epsilon": 4.0, "num-rounds": 2}  # the budget


def _one(options: StudyOptions, seed: int, scale: float, ledger: bool, dp: bool) -> dict[str, Any]:
    clients, target = (4, 0) if options.quick else (8, 0)
    config = run_config(options, seed, f"differencing-{scale:g}-{ledger}-{dp}", mode="feddf")
    # The red team's target: the default run (16-bit fixed point), small and quick.
    config.update({"secagg-bits": 16, "num-rounds": 1, "warmup-epochs": 1, "local-epochs": 1})
    config["distill-epochs"] = 1
    config.update(DP if dp else {})
    config.update(options.overrides)
    # Under DP the truth is what the target releases before noise: its clipped vector (the
    # central placement sends exactly that to the server).
    truth = target_vector({**config, "dp": "central"} if dp else config, clients, target)
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        # ledger: the nodes keep it across the two runs (the defence); otherwise each run
        # starts from a blank node state, as every client did before the ledger.
        first = build_federation(config, clients, run_id=1, state_dir=one)
        second = build_federation(config, clients, run_id=2, state_dir=one if ledger else two)
        if scale > 0:
            second.student = perturbed(first.student, scale, seed)
        everyone = sorted(first.node_of)
        # Under a budget the second release of round 1 is refused whatever it holds: the
        # server asks for round 2, the one its budget still allows.
        attack = Differencing(
            observe_round(first, 1, everyone),
            observe_round(second, 2 if dp else 1, [p for p in everyone if p != target]),
            truth,
        )
    return {
        "seed": seed,
        "scale": scale,
        "ledger": ledger,
        "dp": dp,
        "second_survivors": attack.second.survivors,
        "relative_error": attack.relative_error,
        "max_abs_error": (
            None if attack.recovered is None else float(np.abs(attack.recovered - truth).max())
        ),
        "second_reason": attack.second.reason,
    }


CASES = [
    *((0.0, ledger, False) for ledger in (False, True)),
    *((scale, True, False) for scale in SCALES[1:]),
    (1e-3, True, True),
]


def run(options: StudyOptions) -> StudyResult:
    """The exact attack without and with the node's ledger, the perturbed one, and DP."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DP's and the plaintext truth's loud settings
        rows = [_one(options, seed, *case) for seed in options.seeds for case in CASES]
    table = markdown_table(
        ["ledger", "dp", "student perturbation", "2nd-run survivors", "relative error (u)"],
        [
            [
                "kept" if r["ledger"] else "none",
                "eps=4 distributed" if r["dp"] else "off",
                f"{r['scale']:g}",
                r["second_survivors"],
                f"{r['relative_error']:.3g}",
            ]
            for r in rows
        ],
    )
    exact = [r for r in rows if not r["ledger"]]
    refused = [r for r in rows if r["ledger"] and r["scale"] == 0]
    answer = (
        f"Without node memory the difference of the two sums is the target's vector to "
        f"{max(r['relative_error'] for r in exact):.1e} relative error; with the ledger the "
        f"repeated round gets {max(r['second_survivors'] for r in refused)} survivors. A "
        "perturbed student escapes the ledger; the error column is what the server then "
        "recovers (DP's noise is the remedy: see the eps=4 row)."
    )
    return StudyResult(
        name="differencing",
        question="Can a server difference a round repeated in a new run without one client?",
        threat_model="malicious server; clients deterministic, keeping only their ledger",
        results={"rows": rows, "scales": list(SCALES), "dp": DP},
        table=table,
        answer=answer,
    )


__all__ = ["Differencing", "difference", "perturbed", "run", "target_vector"]
