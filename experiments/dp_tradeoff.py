"""Student (and client) test accuracy against epsilon: client-level DP in its three placements
(central, local, distributed under secure aggregation) and record-level DP-SGD.

    python -m experiments.dp_tradeoff --quick            # digits, 1 seed, 2 rounds: a smoke run
    M="dataset=idx data-root=../shared/data/mnist split-private=6000 split-public=200 \
       split-test=2000 class-weighting=false entropy-weighting=false dp-stats-weight=0.01"
    python -m experiments.dp_tradeoff --clients 20 200 --seeds 0 1 --rounds 3 --clip 0.05 \
        --placements central distributed dpsgd --set $M --large-set warmup-epochs=100
    python -m experiments.dp_tradeoff --clients 20 200 --seeds 0 1 --rounds 3 --clip 0.05 \
        --placements local --eps 8 --set $M --large-set warmup-epochs=100
    python -m experiments.dp_tradeoff --clients 20 --seeds 0 1 --rounds 10 --placements dpsgd \
        --eps 8 inf --set dataset=idx data-root=../shared/data/mnist optimizer=sgd lr=0.05 \
        mode=fedmd local-kd-weight=0 --out runs/dpsgd_fedmd10   # DP-SGD's better recipe
    python -m experiments.dp_tradeoff --table-only       # the table of everything in --out

Every run is an in-process federated run (:func:`fedkd.fl.experiment.simulate`, secure
aggregation on, the library's defaults) at Dirichlet alpha 0.5; ``--clients`` above 20 sample
``--large-fraction`` of them per round and add ``--large-set`` to the run config (200 clients
of a 6,000-image pool hold 30 images each: one batch, so an epoch is one step and the
warm-up needs more epochs). ``eps = inf`` is the non-private run. For each (clients, placement,
epsilon, seed) one JSON lands in ``--out`` as soon as the run ends, and an existing one is not
run again, so a crash loses nothing computed. ``table.md`` and ``tradeoff.png`` are rebuilt
after every run; the table also states, per placement, the smallest epsilon of the grid at
which the student keeps 90% of its non-private accuracy.

Why a small public set and no class weighting: client-level DP adds noise of std ``z * clip``
to every coordinate of the sum, while a client's clipped vector spreads ``clip`` over all of
them, so a coordinate's signal-to-noise ratio is about ``m / (z * sqrt(P))`` for ``m`` agreeing
clients and ``P`` public rows (ten classes each). At 2,000 rows and 20 clients that is below
0.5 even at epsilon 8 (chance accuracy); at 200 rows it is about 1.4 (20 clients, all sampled,
z = 1.04) and 2.7 (200 clients, 10% sampled, z = 0.52). Per-class weights would divide each
class by its own noisy weight; uniform weights share one denominator
(:func:`fedkd.distill.teacher.teacher_from_sum`). ``dp-stats-weight`` 0.01 keeps the
statistics block from taking the norm budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from fedkd.cli.run_config import parse_assignments

PLACEMENTS = ("central", "distributed", "distributed-sampled", "local", "dpsgd")
# distributed-sampled: distributed DP with dp-shares=sampled (each share calibrated for every
# sampled client instead of the unmask threshold, so a full round carries central DP's noise)
KEEP = 0.9  # share of the non-private accuracy the summary line looks for


def run_config(args: argparse.Namespace, clients: int, placement: str, eps: float, seed: int):
    """The flat run config of one grid point."""
    config: dict[str, Any] = {
        "num-rounds": args.rounds,
        "seed": seed,
        "alpha": 0.5,
        "model": args.model,
        "fraction": 1.0 if clients <= 20 else args.large_fraction,
        "eval-clients": True,
        "secagg-bits": 20,  # rounding inflates the distributed sensitivity by < 0.2% here
        "out-dir": str(Path(args.out) / "runs"),
        "run-name": f"{clients}-{placement}-{eps:g}-s{seed}",
        "node-wait": 5.0,
    }
    config.update(parse_assignments(args.set + (args.large_set if clients > 20 else [])))
    if math.isfinite(eps):
        if placement == "dpsgd":
            config.update({"client-dp-sgd": True, "client-dp-epsilon": eps})
        else:
            dp, _, shares = placement.partition("-")
            config.update({"dp": dp, "dp-epsilon": eps, "dp-clip": args.clip})
            if shares:
                config["dp-shares"] = shares
    return config


def one_run(args: argparse.Namespace, clients: int, placement: str, eps: float, seed: int):
    """Run one grid point (or read its finished JSON)."""
    from fedkd.fl.experiment import simulate

    target = Path(args.out) / f"{clients}-{placement}-{eps:g}-s{seed}.json"
    if target.is_file():
        return json.loads(target.read_text())
    config = run_config(args, clients, placement, eps, seed)
    start = time.perf_counter()
    stores: dict = {}  # the clients' own stores: this process plays every client
    # Each grid point's clients are new clients: nodes that kept one ledger would refuse the
    # second epsilon on the same population (their budget is the first run's).
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as nodes:
        warnings.simplefilter("ignore")  # DP's loud settings are expected in this grid
        recorder = simulate(config, clients, stores=stores, state_dir=nodes)
    accounts = dpsgd_accounts(stores, float(config.get("client-dp-delta", 1e-5)))
    rows = json.loads((recorder.path / "history.json").read_text())
    done = [r for r in rows if r["status"] == "ok"]
    last = done[-1] if done else {}
    result = {
        "clients": clients,
        "placement": placement,
        "epsilon_target": None if math.isinf(eps) else eps,
        "seed": seed,
        "rounds": args.rounds,
        "rounds_ok": len(done),
        "student_accuracy": last.get("student_accuracy"),
        "client_accuracy": last.get("client_accuracy_mean"),
        # DP-SGD: the largest epsilon any client spent (each client's is in dpsgd_clients)
        "dp_epsilon": max(a["epsilon"] for a in accounts) if accounts else last.get("dp_epsilon"),
        "dp_epsilon_known_sample": last.get("dp_epsilon_known_sample"),
        "dp_noise_multiplier": [r.get("dp_noise_multiplier") for r in done],
        "dp_sampling": [r.get("dp_sampling") for r in done],
        "dpsgd_clients": accounts,
        "seconds": time.perf_counter() - start,
        "config": config,
        "history": str(recorder.path),
    }
    target.write_text(json.dumps(result, indent=2))
    return result


def dpsgd_accounts(stores: dict, delta: float) -> list[dict[str, Any]]:
    """Each DP-SGD client's accountant: its history of (noise multiplier, sample rate, steps),
    as its node keeps it, and the epsilon at ``delta`` from dp-accounting's PLD accountant (what
    the client calibrated with) and from Opacus' RDP accountant (a cross-check). The sample rate
    gives away the shard size, so this is for the operator of every client, as an experiment
    is; a real client never sends it."""
    from fedkd.dp.dpsgd import epsilon_of_history
    from fedkd.fl.client import dpsgd_history

    accounts = []
    for partition in sorted(stores):
        history = dpsgd_history(stores[partition])
        if history:
            accounts.append(
                {
                    "partition": partition,
                    "history": [list(entry) for entry in history],
                    "delta": delta,
                    "epsilon": epsilon_of_history(history, delta),
                    "epsilon_rdp": epsilon_of_history(history, delta, accountant="rdp"),
                }
            )
    return accounts


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def summarise(results: list[dict[str, Any]], out: Path) -> str:
    """The markdown table (mean ± std over seeds) and the 90%-of-non-private line."""
    lines = [
        "| clients | placement | eps | student acc % | client acc % (released: noised under "
        "client-level DP) | eps spent | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(r["clients"], r["placement"], r["epsilon_target"] or math.inf) for r in results}
    )
    means: dict[tuple[int, str, float], float] = {}
    for clients, placement, eps in keys:
        group = [
            r
            for r in results
            if (r["clients"], r["placement"], r["epsilon_target"] or math.inf)
            == (clients, placement, eps)
        ]
        student = [r["student_accuracy"] for r in group if r["student_accuracy"] is not None]
        client = [r["client_accuracy"] for r in group if r["client_accuracy"] is not None]
        spent = [r["dp_epsilon"] for r in group if r["dp_epsilon"] is not None]
        if student:
            means[(clients, placement, eps)] = statistics.mean(student)
        spent_text = f"{statistics.mean(spent):.2f}" if spent else "-"
        label = "none (non-private)" if math.isinf(eps) else placement
        lines.append(
            f"| {clients} | {label} | {eps:g} | {_mean_std(student)} | {_mean_std(client)} | "
            f"{spent_text} | {len(group)} |"
        )
    lines.append("")
    for clients in sorted({k[0] for k in keys}):
        base = [v for (c, _, e), v in means.items() if c == clients and math.isinf(e)]
        if not base:
            continue
        for placement in PLACEMENTS:
            if not any(c == clients and p == placement for c, p, _ in means):
                continue  # not run at this size
            kept = sorted(
                e
                for (c, p, e), v in means.items()
                if c == clients and p == placement and math.isfinite(e) and v >= KEEP * base[0]
            )
            found = f"eps = {kept[0]:g}" if kept else "none of the grid"
            lines.append(
                f"- {clients} clients, {placement}: 90% of non-private ({100 * base[0]:.1f}%) "
                f"kept at {found}"
            )
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    _plot(results, out)
    return text


def _plot(results: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["clients"] for r in results})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, clients in zip(axes[0], sizes, strict=True):
        base = [
            r["student_accuracy"]
            for r in results
            if r["clients"] == clients and r["epsilon_target"] is None and r["student_accuracy"]
        ]
        if base:
            ax.axhline(statistics.mean(base), color="k", ls="--", label="non-private")
        for placement in PLACEMENTS:
            points: dict[float, list[float]] = {}
            for r in results:
                if (
                    r["clients"] == clients
                    and r["placement"] == placement
                    and r["epsilon_target"] is not None
                    and r["student_accuracy"] is not None
                ):
                    points.setdefault(r["epsilon_target"], []).append(r["student_accuracy"])
            if points:
                xs = sorted(points)
                ax.plot(xs, [statistics.mean(points[x]) for x in xs], marker="o", label=placement)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("epsilon (delta = 1e-5)")
        ax.set_ylabel("student test accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"{clients} clients")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--eps", type=float, nargs="+", default=[1, 2, 4, 8, math.inf])
    parser.add_argument("--placements", nargs="+", default=list(PLACEMENTS), choices=PLACEMENTS)
    parser.add_argument("--large-fraction", type=float, default=0.1)
    parser.add_argument("--clip", type=float, default=0.1, help="dp-clip")
    parser.add_argument("--model", default="cnn_small")
    parser.add_argument("--set", nargs="*", default=[], help="extra run-config key=value")
    parser.add_argument(
        "--large-set", nargs="*", default=[], help="run-config key=value for clients > 20 only"
    )
    parser.add_argument(
        "--table-only", action="store_true", help="rebuild the table from every JSON in --out"
    )
    parser.add_argument("--out", default="runs/dp_tradeoff")
    parser.add_argument("--quick", action="store_true", help="digits, 1 seed, 2 rounds, eps 8/inf")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.seeds, args.rounds, args.eps = [10], [0], 2, [8.0, math.inf]
    out = Path(args.out)
    if args.table_only:
        found = [json.loads(f.read_text()) for f in sorted(out.glob("*-s*.json"))]
        if not found:
            parser.error(f"no finished run in {out}")
        print(summarise(found, out))
        return 0
    try:
        parse_assignments(args.set + args.large_set)  # a bad item stops here, not mid-grid
    except ValueError as error:
        parser.error(str(error))
    import torch

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    # dp-accounting's RDP cross-check logs every order it cannot converge at small sigma
    logging.getLogger("absl").setLevel(logging.ERROR)
    results = []
    for clients in args.clients:
        for seed in args.seeds:
            for eps in args.eps:
                placements = ["central"] if math.isinf(eps) else args.placements
                for placement in placements:
                    result = one_run(args, clients, placement, eps, seed)
                    results.append(result)
                    print(
                        f"{clients} clients {placement} eps={eps:g} seed {seed}: student "
                        f"{result['student_accuracy']} clients {result['client_accuracy']} "
                        f"eps spent {result['dp_epsilon']} ({result['seconds']:.0f} s)",
                        flush=True,
                    )
                    summarise(results, out)
    print(summarise(results, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
