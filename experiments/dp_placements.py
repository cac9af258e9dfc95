"""Distributed vs central DP at the same (epsilon, delta), paired on the same clients' vectors.

    python -m experiments.dp_placements --quick          # digits, 4 clients, 3 draws
    M="dataset=idx data-root=../shared/data/mnist split-private=6000 split-public=200 \
       split-test=2000 class-weighting=false entropy-weighting=false dp-stats-weight=0.01"
    python -m experiments.dp_placements --clients 20 --eps 16 32 64 128 --draws 20 --set $M
    python -m experiments.dp_placements --table-only     # the table of every JSON in --out

End-to-end runs cannot answer "does distributed DP under secure aggregation match central DP":
the student's accuracy moves by more from one seed to the next (the partition, the clients'
training, the noise feeding back through the loop) than any difference between placements,
so a 1-point comparison would need tens of seeds per cell. The two placements differ in one
place only, the release, so this compares them there, paired: 20 clients train once (round
1 of a FedDF run, the library's own :func:`~fedkd.fl.client_work.local_round`, vectors
clipped as the run clips them), then for each draw

* ``central``: the clipped vectors go through secure aggregation (the real protocol,
  :func:`fedkd.secagg.driver.simulate`, no noise) and the server adds Gaussian noise
  (:func:`fedkd.fl.privacy.server_release`);
* ``distributed`` (``dp-shares=sampled``): the same vectors go through the protocol with
  each client's Skellam share added to its quantised levels before masking;

and each released sum becomes a teacher and a student distilled from the round's fresh
student (:func:`fedkd.fl.server_work.distill_round`). Both calibrate to the same target with
the run's accountant over ``--rounds`` rounds (so one release spends part of the target, the
same part for both). Printed and written to ``--out``: teacher and student accuracy per
placement (mean ± std over draws), the paired difference with its 95% confidence interval,
and the epsilon each release recorded.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedkd.cli.run_config import parse_assignments

PLACEMENTS = ("central", "distributed")
QUICK = {"dataset": "digits", "warmup-epochs": 2, "distill-epochs": 2, "num-rounds": 3}


@dataclass(frozen=True)
class Draw:
    """One release of one placement."""

    placement: str
    teacher_accuracy: float
    student_accuracy: float
    epsilon: float


def run_config(args: argparse.Namespace, placement: str, eps: float) -> dict[str, Any]:
    """The flat run config a placement is calibrated and released with."""
    config: dict[str, Any] = {
        "num-rounds": args.rounds,
        "seed": args.seed,
        "alpha": 0.5,
        "model": args.model,
        "secagg-bits": 20,
        "dp": placement,
        "dp-epsilon": eps,
        "dp-clip": args.clip,
        "dp-shares": "sampled",  # a full round carries exactly the central noise variance
        "eval-clients": False,
    }
    config.update(QUICK if args.quick else {})
    config.update(parse_assignments(args.set))
    return config


@dataclass(frozen=True)
class Clients:
    """Round 1 of a FedDF run: every client's clipped vector, the data, the fresh student."""

    vectors: list[np.ndarray]
    data: Any  # fedkd.fl.data.FederatedData
    student: Any  # the round's student, before distillation
    seconds: float


def client_vectors(config: Any, num_clients: int) -> Clients:
    """Train every client once (the clip is the same at every epsilon, so this is shared)."""
    from fedkd.fl.client_work import local_round
    from fedkd.fl.data import federated_data
    from fedkd.fl.privacy import client_release
    from fedkd.fl.server_work import new_student

    start = time.perf_counter()
    data = federated_data(config, num_clients)
    student = new_student(config, data.split)
    vectors = []
    for pid in range(num_clients):
        model = copy.deepcopy(student)  # FedDF: every client starts from the pushed student
        result = local_round(config, data, pid, model, server_round=1, first_round=True)
        vectors.append(client_release(config, result.vector, num_clients))  # the dp-clip
    return Clients(vectors, data, student, time.perf_counter() - start)


def plain_sum(config: Any, vectors: list[np.ndarray]) -> Any:
    """The noiseless secure sum of ``vectors`` (a driver ``Simulation``): central DP's input
    at every draw, and the round parameters distributed DP's shares are sized from."""
    from fedkd.fl.contribution import value_bound
    from fedkd.secagg.driver import simulate

    return simulate(vectors, clip=value_bound(config), bits=config.secagg.bits)


def release(config: Any, plain: Any, vectors: list[np.ndarray], data: Any, student: Any) -> Draw:
    """One release of ``vectors`` under ``config``'s placement, its teacher and student:
    ``plain`` (:func:`plain_sum`) plus the server's noise, or a new secure sum of the vectors
    with each client's noise share."""
    from fedkd.fl.contribution import split_sum
    from fedkd.fl.history import RoundRecord
    from fedkd.fl.privacy import round_share_variance, server_release
    from fedkd.fl.server_work import distill_round, teacher_from_aggregate
    from fedkd.secagg.driver import simulate

    n = len(vectors)
    variance = round_share_variance(config, plain.config, n)  # 0 unless distributed
    sim = plain
    if variance:
        sim = simulate(
            vectors, clip=plain.config.clip, bits=plain.config.bits, noise_variance=variance
        )
    result = sim.outcome.result
    if result is None:
        raise RuntimeError(f"secure aggregation failed: {sim.outcome.reason}")
    record = RoundRecord(round=1, method="fedkd", sampled=n, survivors=len(result.survivors))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # epsilon > 10 is the point of the large-epsilon cells
        total = server_release(config, result.total, record, [], num_clients=n, secagg=sim.config)
    summed, _ = split_sum(total, record.survivors)
    teacher = teacher_from_aggregate(summed, config, data.split)
    outcome = distill_round(copy.deepcopy(student), teacher, config, data.split, server_round=1)
    return Draw(
        config.dp.placement,
        outcome.teacher_accuracy,
        outcome.student_accuracy,
        record.dp_epsilon,
    )


def paired(differences: list[float]) -> tuple[float, float]:
    """Mean of paired differences and the half-width of its 95% t interval."""
    from scipy import stats

    mean = statistics.mean(differences)
    if len(differences) < 2:
        return mean, math.inf
    half = stats.t.ppf(0.975, len(differences) - 1) * statistics.stdev(differences)
    return mean, half / math.sqrt(len(differences))


def _cell(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def compare(args: argparse.Namespace, eps: float, clients: Clients) -> dict[str, Any]:
    """Every draw of both placements at one target epsilon; the summary row."""
    from fedkd.fl.config import parse_run_config

    configs = {p: parse_run_config(run_config(args, p, eps)) for p in PLACEMENTS}
    start = time.perf_counter()
    vectors, data, student = clients.vectors, clients.data, clients.student
    plain = plain_sum(configs["central"], vectors)
    draws: dict[str, list[Draw]] = {p: [] for p in PLACEMENTS}
    for _ in range(args.draws):  # interleaved, so both see the same machine
        for placement in PLACEMENTS:
            draws[placement].append(release(configs[placement], plain, vectors, data, student))
    students = {p: [d.student_accuracy for d in draws[p]] for p in PLACEMENTS}
    teachers = {p: [d.teacher_accuracy for d in draws[p]] for p in PLACEMENTS}
    row: dict[str, Any] = {"teacher": teachers, "student": students}
    diff, half = paired(_differences(row, "student"))
    tdiff, thalf = paired(_differences(row, "teacher"))
    return {
        "epsilon_target": eps,
        "clients": args.clients,
        "draws": args.draws,
        "seed": args.seed,
        "epsilon_recorded": {p: [d.epsilon for d in draws[p]] for p in PLACEMENTS},
        "teacher": teachers,
        "student": students,
        "student_difference": [diff, half],
        "teacher_difference": [tdiff, thalf],
        "seconds_clients": clients.seconds,
        "seconds": time.perf_counter() - start,
        "config": run_config(args, "distributed", eps),
    }


def _differences(row: dict[str, Any], model: str) -> list[float]:
    """The row's paired draws of ``model`` (teacher or student): distributed - central."""
    pairs = zip(row[model]["distributed"], row[model]["central"], strict=True)
    return [a - b for a, b in pairs]


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: per epsilon, both placements and the paired difference (points, 95% CI);
    with several rows, a last line pooling every paired draw."""
    lines = [
        "| eps (run) | central teacher % | distributed teacher % | central student % "
        "| distributed student % | distributed - central, points (95% CI): teacher "
        "| student | eps of one release, central / distributed | draws |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        diff, half = row["student_difference"]
        tdiff, thalf = row["teacher_difference"]
        recorded = {p: max(v) for p, v in row["epsilon_recorded"].items()}
        lines.append(
            f"| {row['epsilon_target']:g} | {_cell(row['teacher']['central'])} "
            f"| {_cell(row['teacher']['distributed'])} | {_cell(row['student']['central'])} "
            f"| {_cell(row['student']['distributed'])} "
            f"| {100 * tdiff:+.2f} ± {100 * thalf:.2f} | {100 * diff:+.2f} ± {100 * half:.2f} "
            f"| {recorded['central']:.2f} / {recorded['distributed']:.2f} | {row['draws']} |"
        )
    if len(rows) > 1:
        (tdiff, thalf), (diff, half) = (
            paired([d for row in rows for d in _differences(row, model)])
            for model in ("teacher", "student")
        )
        draws = sum(row["draws"] for row in rows)
        lines.append(
            f"| pooled | | | | | {100 * tdiff:+.2f} ± {100 * thalf:.2f} "
            f"| {100 * diff:+.2f} ± {100 * half:.2f} | | {draws} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--eps", type=float, nargs="+", default=[64.0])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument(
        "--rounds", type=int, default=3, help="num-rounds the noise is calibrated for"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip", type=float, default=0.05, help="dp-clip")
    parser.add_argument("--model", default="cnn_small")
    parser.add_argument("--set", nargs="*", default=[], help="extra run-config key=value")
    parser.add_argument("--out", default="runs/dp_placements")
    parser.add_argument("--quick", action="store_true", help="digits, 4 clients, <= 3 draws")
    parser.add_argument("--table-only", action="store_true", help="rebuild the table from --out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.table_only:
        done = [json.loads(f.read_text()) for f in sorted(out.glob("eps*.json"))]
        print(table(sorted(done, key=lambda row: (row["seed"], row["epsilon_target"]))))
        return 0
    if args.quick:
        args.clients, args.draws = 4, min(args.draws, 3)
    if args.clients < 2 or args.draws < 1 or any(not 0 < e < math.inf for e in args.eps):
        parser.error("need --clients >= 2, --draws >= 1 and finite --eps > 0")
    out.mkdir(parents=True, exist_ok=True)
    from fedkd.fl.config import parse_run_config

    # Clients clip the same way at every epsilon: train them once, under the first one's config.
    first = parse_run_config(run_config(args, "central", args.eps[0]))
    clients = client_vectors(first, args.clients)
    rows = []
    for eps in args.eps:
        row = compare(args, eps, clients)
        (out / f"eps{eps:g}-s{args.seed}.json").write_text(json.dumps(row, indent=2))
        rows.append(row)
        print(table(rows), flush=True)
    (out / "table.md").write_text(table(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
