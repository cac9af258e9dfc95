"""Which student architecture handicaps no method: each model under FedAvg and FedKD, over seeds.

    python -m experiments.model_choice --models cnn cnn_plain --methods fedavg fedkd \\
        --seeds 0 1 2 --clients 20 --set dataset=idx data-root=../shared/data/mnist \\
        split-private=6000 split-public=2000 split-test=2000 alpha=0.1 num-rounds=20 \\
        --out runs/model-choice-mnist

Every run is the library's round in this process (``fedkd.fl.experiment.simulate``) with the
same run config but ``model``, ``method`` and ``seed``. Prints, per method and model, the
global model's test accuracy after the last round (mean ± sample std over seeds, and each
seed's), and writes ``results.json``; the runs' folders stay under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from experiments.compare import spread
from fedkd.cli.run_config import absolute_paths, parse_assignments
from fedkd.fl.experiment import simulate


def run_one(shared: dict[str, Any], clients: int, out: Path, **cell: Any) -> dict[str, Any]:
    """One run; its per-round student accuracy and seconds."""
    name = f"{cell['method']}-{cell['model']}-s{cell['seed']}"
    start = time.perf_counter()
    recorder = simulate({**shared, **cell, "out-dir": str(out), "run-name": name}, clients)
    accuracies = [row.student_accuracy for row in recorder.rows]
    return {
        **cell,
        "folder": str(recorder.path),
        "accuracy": accuracies,
        "final": accuracies[-1],
        "seconds": time.perf_counter() - start,
    }


def table(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, model): final accuracy mean and std over seeds."""
    rows = []
    for method in dict.fromkeys(r["method"] for r in runs):
        for model in dict.fromkeys(r["model"] for r in runs):
            finals = [r["final"] for r in runs if (r["method"], r["model"]) == (method, model)]
            if finals:
                rows.append({"method": method, "model": model, **spread(finals), "finals": finals})
    return rows


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| method | model | final accuracy (mean ± std) | per seed |",
        "|---|---|---|---|",
    ]
    for row in rows:
        seeds = ", ".join(f"{100 * v:.1f}" for v in row["finals"])
        lines.append(
            f"| {row['method']} | `{row['model']}` | {100 * row['mean']:.1f} ± "
            f"{100 * row['std']:.1f}% | {seeds} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["cnn", "cnn_plain"])
    parser.add_argument("--methods", nargs="+", default=["fedavg", "fedkd"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and results")
    args = parser.parse_args(argv)
    shared = absolute_paths(parse_assignments(args.set))
    for key in ("model", "method", "seed", "out-dir", "run-name"):
        if key in shared:
            parser.error(f"--set {key}: model_choice sets it itself")
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # round by round
    runs = []
    for seed in args.seeds:
        for model in args.models:
            for method in args.methods:
                run = run_one(shared, args.clients, args.out, method=method, model=model, seed=seed)
                runs.append(run)
                print(f"{method} {model} seed {seed}: {run['final']:.4f} ({run['seconds']:.0f} s)")
    title = f"{shared.get('dataset', 'digits')}, {args.clients} clients, seeds {args.seeds}"
    rows = table(runs)
    print(markdown(rows, title))
    payload = {"title": title, "config": shared, "clients": args.clients, "runs": runs}
    payload["rows"] = rows
    (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written to {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
