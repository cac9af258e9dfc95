"""fedkd's FedAvg against an independent plain-PyTorch FedAvg: same split, model and settings.

    python -m experiments.fedavg_reference --data-root ../shared/data/mnist --seeds 0 1 2 \\
        --models cnn cnn_plain --out runs/fedavg-reference

The reference is the loop of ``../shared/reference/fedavg_plain.py`` (about 30 lines of plain
PyTorch, transcribed in :func:`reference_fedavg`): every client takes part in every round,
trains the global weights with a fresh Adam on its shard, and the server averages the weights by
shard size. It runs on exactly the arrays fedkd's run trains on -- the split and the client
partition that ``fedkd.fl.data.federated_data`` builds from the run config -- and starts from
the same initial weights (``torch.manual_seed(seed)`` then the model, as fedkd's student).
Only the training and averaging code differs: fedkd's run is ``fedkd.fl.experiment.simulate``
with ``method = fedavg`` (the library round every engine runs, its client ``handle``).

``--standardize`` feeds the reference standardised images (the pool's mean and std; the
script's MNIST constants 0.1307 / 0.3081) as ``fedavg_plain.py`` does; fedkd trains on pixels in
[0, 1]. Prints, per model, each seed's accuracy after the last round for both and the gap
(fedkd - reference), mean ± std over seeds, and the same for the mean of the last five rounds
(FedAvg under strong label skew swings by several points from round to round); writes
``results.json`` to ``--out``. ``--table results.json`` prints the table of a finished run again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from experiments.compare import spread
from fedkd.fl.config import parse_run_config
from fedkd.fl.data import federated_data
from fedkd.fl.experiment import simulate
from fedkd.models import build_model


def reference_fedavg(
    run_config: dict[str, Any], clients: int, *, standardize: bool = False
) -> list[float]:
    """``fedavg_plain.py``'s loop on the split and partition of ``run_config``; the global
    model's test accuracy after each round."""
    config = parse_run_config(run_config)
    data = federated_data(config, clients)
    split, local = data.split, config.local
    x_pool, y_pool = split.private.x, split.private.y
    x_test, y_test = split.test.x, split.test.y
    if standardize:
        mean, std = float(x_pool.mean()), float(x_pool.std())
        x_pool, x_test = (x_pool - mean) / std, (x_test - mean) / std

    def make() -> torch.nn.Module:
        return build_model(
            local.model, input_shape=split.input_shape, num_classes=split.num_classes
        )

    torch.manual_seed(config.seed)
    glob = make()
    test_x, test_y = torch.from_numpy(x_test), torch.from_numpy(y_test)
    accuracies = []
    for _ in range(config.num_rounds):
        states, sizes = [], []
        for shard in data.parts:
            m = make()
            m.load_state_dict(glob.state_dict())
            opt = torch.optim.Adam(m.parameters(), lr=local.lr)
            xs, ys = torch.from_numpy(x_pool[shard]), torch.from_numpy(y_pool[shard])
            for _ in range(local.epochs):
                order = torch.randperm(len(xs))
                for i in range(0, len(xs), local.batch_size):
                    b = order[i : i + local.batch_size]
                    opt.zero_grad()
                    F.cross_entropy(m(xs[b]), ys[b]).backward()
                    opt.step()
            states.append(m.state_dict())
            sizes.append(len(shard))
        w = torch.tensor(sizes, dtype=torch.float32) / sum(sizes)
        glob.load_state_dict(
            {n: sum(wi * s[n] for wi, s in zip(w, states, strict=True)) for n in states[0]}
        )
        with torch.no_grad():
            accuracies.append((glob(test_x).argmax(1) == test_y).float().mean().item())
    return accuracies


def fedkd_fedavg(run_config: dict[str, Any], clients: int) -> list[float]:
    """fedkd's FedAvg (``simulate``, in process); the global model's accuracy per round."""
    with tempfile.TemporaryDirectory() as out:
        recorder = simulate({**run_config, "method": "fedavg", "out-dir": out}, clients)
        return [row.student_accuracy for row in recorder.rows]


def run_config_of(args: argparse.Namespace, model: str, seed: int) -> dict[str, Any]:
    """The run config both implementations read (the reference: its split, model, settings)."""
    private, public, test = args.split
    config: dict[str, Any] = {
        "dataset": args.dataset,
        "split-private": private,
        "split-public": public,
        "split-test": test,
        "partitioner": args.partitioner,
        "alpha": args.alpha,
        "seed": seed,
        "model": model,
        "num-rounds": args.rounds,
        "local-epochs": args.epochs,
        "batch-size": args.batch,
        "lr": args.lr,
        "optimizer": "adam",
        "eval-clients": False,
    }
    if args.data_root:
        config["data-root"] = str(Path(args.data_root).resolve())
    return config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset", default=None, help="default: idx with --data-root, else digits"
    )
    parser.add_argument("--data-root", default="")
    parser.add_argument(
        "--split", nargs=3, type=float, default=None, metavar=("PRIV", "PUB", "TEST")
    )
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--partitioner", default="dirichlet")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--models", nargs="+", default=["cnn"])
    parser.add_argument("--standardize", action="store_true", help="reference: standardised input")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    parser.add_argument("--table", type=Path, default=None, help="print a results.json's table")
    args = parser.parse_args(argv)
    args.dataset = args.dataset or ("idx" if args.data_root else "digits")
    if args.split is None:  # fedavg_plain.py's cut of MNIST's 10,000 test images
        args.split = [6000, 2000, 2000] if args.dataset == "idx" else [0.6, 0.2, 0.2]
    args.split = [int(v) if v > 1 else v for v in args.split]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        saved = json.loads(args.table.read_text())
        print_summary(summary(saved["runs"]), parse_args(saved["argv"]))
        return 0
    torch.set_num_threads(1)
    results: dict[str, Any] = {"argv": list(argv if argv is not None else sys.argv[1:])}
    results["runs"] = []
    for model in args.models:
        for seed in args.seeds:
            config = run_config_of(args, model, seed)
            start = time.perf_counter()
            reference = reference_fedavg(config, args.clients, standardize=args.standardize)
            middle = time.perf_counter()
            ours = fedkd_fedavg(config, args.clients)
            run = {
                "model": model,
                "seed": seed,
                "reference": reference,
                "fedkd": ours,
                "gap": ours[-1] - reference[-1],
                "seconds": {"reference": middle - start, "fedkd": time.perf_counter() - middle},
            }
            results["runs"].append(run)
            print(
                f"{model} seed {seed}: reference {reference[-1]:.4f} fedkd {ours[-1]:.4f} "
                f"gap {100 * run['gap']:+.1f} points ({run['seconds']['reference']:.0f} s / "
                f"{run['seconds']['fedkd']:.0f} s)",
                flush=True,
            )
    results["summary"] = summary(results["runs"])
    print_summary(results["summary"], args)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"written to {args.out / 'results.json'}")
    return 0


LAST = 5  # rounds averaged for the steadier figure


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per model: reference, fedkd and gap after the last round and over the last five rounds,
    mean and std over seeds."""
    table = {}
    for model in dict.fromkeys(r["model"] for r in runs):
        chosen = [r for r in runs if r["model"] == model]
        tail = {k: [statistics.fmean(r[k][-LAST:]) for r in chosen] for k in ("reference", "fedkd")}
        table[model] = {
            "reference": spread([r["reference"][-1] for r in chosen]),
            "fedkd": spread([r["fedkd"][-1] for r in chosen]),
            "gap": spread([r["fedkd"][-1] - r["reference"][-1] for r in chosen]),
            "reference_last5": spread(tail["reference"]),
            "fedkd_last5": spread(tail["fedkd"]),
            "gap_last5": spread(
                [a - b for a, b in zip(tail["fedkd"], tail["reference"], strict=True)]
            ),
            "seeds": {"mean": float(len(chosen)), "std": 0.0},
        }
    return table


def print_summary(table: dict[str, dict[str, dict[str, float]]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.dataset}, {args.partitioner} alpha={args.alpha:g}, {args.clients} clients, "
        f"{args.rounds} rounds x {args.epochs} epochs, Adam {args.lr:g}, batch {args.batch}"
    )
    print(
        "| model | reference | fedkd | gap (points) | reference, last 5 rounds | fedkd, last 5 "
        "| gap, last 5 | seeds |\n|---|---|---|---|---|---|---|---|"
    )
    keys = ("reference", "fedkd", "gap", "reference_last5", "fedkd_last5", "gap_last5")
    for model, row in table.items():
        cells = [f"{100 * row[k]['mean']:.1f} ± {100 * row[k]['std']:.1f}" for k in keys]
        print(f"| `{model}` | {' | '.join(cells)} | {int(row['seeds']['mean'])} |")


if __name__ == "__main__":
    raise SystemExit(main())
