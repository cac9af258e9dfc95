"""How each partitioner splits the same private pool: shard sizes, classes per client, label TV.

    python -m experiments.split_stats                          # digits, 20 clients
    python -m experiments.split_stats --set dataset=idx data-root=../shared/data/mnist \\
        split-private=6000 split-public=2000 split-test=2000 --alphas 0.1 0.5 1.0 --seeds 8

For every partitioner (``iid``, ``dirichlet``, ``dirichlet-balanced``, ``shard``,
``pathological``) and every alpha (the Dirichlet ones only), over ``--seeds`` seeds of the run's
own split and partition (``fedkd.fl.data.federated_data``): the shards' sizes (smallest, median,
largest; means over seeds), the classes a client holds at least one sample of (mean, and the
smallest over clients), and the size-weighted total-variation distance of the shards' label
mixes from the pool's (0 for IID shards, 0.9 when each holds one of ten classes), mean ± std over
seeds. Prints a Markdown table; ``--out`` writes ``results.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from experiments.compare import spread
from fedkd.cli.run_config import absolute_paths, parse_assignments
from fedkd.data import partition_stats
from fedkd.data.partition import DIRICHLET_METHODS, PARTITION_METHODS
from fedkd.fl.config import parse_run_config
from fedkd.fl.data import federated_data


def one_split(run_config: dict[str, Any], clients: int) -> dict[str, float]:
    """The statistics of one run config's partition."""
    config = parse_run_config(run_config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a lowered minimum size is shown below
        data = federated_data(config, clients)
    stats = partition_stats(data.split.private.y, list(data.parts), data.split.num_classes)
    return {
        "size_min": float(stats.sizes.min()),
        "size_median": float(np.median(stats.sizes)),
        "size_max": float(stats.sizes.max()),
        "classes_mean": float(stats.classes.mean()),
        "classes_min": float(stats.classes.min()),
        "label_tv": stats.label_tv,
    }


def table_rows(
    shared: dict[str, Any], clients: int, alphas: list[float], seeds: int
) -> list[dict[str, Any]]:
    """One row per partitioner (and alpha, for the Dirichlet ones), means over seeds."""
    rows = []
    for method in PARTITION_METHODS:
        for alpha in alphas if method in DIRICHLET_METHODS else [None]:
            runs = [
                one_split(
                    {**shared, "partitioner": method, "seed": seed,
                     **({} if alpha is None else {"alpha": alpha})},
                    clients,
                )
                for seed in range(seeds)
            ]  # fmt: skip
            row: dict[str, Any] = {"partitioner": method, "alpha": alpha, "seeds": seeds}
            for key in runs[0]:
                row[key] = spread([r[key] for r in runs])
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    """The rows as a Markdown table."""
    lines = [
        f"### {title}",
        "",
        "| partitioner | α | shard size: min / median / max | classes per client: mean (min) "
        "| label TV from the pool |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        alpha = "-" if row["alpha"] is None else f"{row['alpha']:g}"
        sizes = " / ".join(f"{row[k]['mean']:.0f}" for k in ("size_min", "size_median", "size_max"))
        classes = f"{row['classes_mean']['mean']:.1f} ({row['classes_min']['mean']:.1f})"
        tv = f"{row['label_tv']['mean']:.3f} ± {row['label_tv']['std']:.3f}"
        lines.append(f"| `{row['partitioner']}` | {alpha} | {sizes} | {classes} | {tv} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.1, 0.5, 1.0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds 0..N-1 (default 8)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    args = parser.parse_args(argv)
    shared = absolute_paths(parse_assignments(args.set))
    for key in ("partitioner", "alpha", "seed"):
        if key in shared:
            parser.error(f"--set {key}: split_stats sets it itself")
    rows = table_rows(shared, args.clients, args.alphas, args.seeds)
    dataset = shared.get("dataset", "digits")
    title = f"{dataset}, {args.clients} clients, means over {args.seeds} seeds"
    table = markdown(rows, title)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        payload = {"title": title, "config": shared, "clients": args.clients, "rows": rows}
        (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        print(f"written to {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
