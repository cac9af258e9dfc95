"""FedKD vs FedAvg vs local-only vs centralized on one partition, each a real ``flwr run``.

    python -m experiments.compare                          # digits, 10 clients, alpha 0.5
    python -m experiments.compare --clients 20 --rounds 20 --alpha 0.1 \
        --set dataset=idx data-root=../shared/data/mnist split-private=6000 \
              split-public=2000 split-test=2000

Every method gets the same run config (data, seed, partition, student model, rounds, local
epochs); only ``method`` changes. Writes ``comparison.md``, ``comparison.json`` and
``comparison.png`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from experiments.cli import parse_assignments
from experiments.launch import PROJECT_ROOT, flwr_run

METHODS = ("fedkd", "fedavg", "local", "central")


def _final(history: list[dict[str, object]], key: str) -> float:
    values = [row[key] for row in history if isinstance(row.get(key), (int, float))]
    return float(values[-1]) if values else math.nan


def _best(history: list[dict[str, object]], key: str) -> float:
    values = [row[key] for row in history if isinstance(row.get(key), (int, float))]
    return float(max(values)) if values else math.nan


def headline(method: str, history: list[dict[str, object]]) -> tuple[float, float]:
    """(final, best) accuracy of the model a method produces: the student, or the clients'
    mean for local-only training (it has no global model)."""
    key = "client_accuracy_mean" if method == "local" else "student_accuracy"
    return _final(history, key), _best(history, key)


def markdown_table(rows: list[dict[str, object]], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| method | final accuracy | best accuracy | MB up / round | s / round | rounds |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['final']:.4f} | {row['best']:.4f} | "
            f"{row['mb_up']:.2f} | {row['seconds']:.1f} | {row['rounds']} |"
        )
    return "\n".join(lines) + "\n"


def plot(histories: dict[str, list[dict[str, object]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, history in histories.items():
        key = "client_accuracy_mean" if method == "local" else "student_accuracy"
        points = [(r["round"], r[key]) for r in history if isinstance(r.get(key), (int, float))]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=method)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="run-config settings shared by every method",
    )
    parser.add_argument("--out", default=str(PROJECT_ROOT / "runs" / "compare"))
    parser.add_argument("--quiet", action="store_true", help="do not echo the Flower logs")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    shared = {
        "num-rounds": args.rounds,
        "alpha": args.alpha,
        "out-dir": str(out),
        **parse_assignments(args.set),
    }
    histories: dict[str, list[dict[str, object]]] = {}
    rows = []
    for method in args.methods:
        print(f"\n=== {method} ===", flush=True)
        overrides = {"method": method, "run-name": method}
        if method == "local":  # its headline number is the clients' own test accuracy
            overrides["eval-clients"] = True
        result = flwr_run(
            {**shared, **overrides},
            num_supernodes=args.clients,
            echo=not args.quiet,
        )
        if result.returncode != 0 or result.results is None:
            print(f"{method}: flwr run failed (exit {result.returncode})", file=sys.stderr)
            continue
        history = json.loads((result.results / "history.json").read_text())
        histories[method] = history
        final, best = headline(method, history)
        rows.append(
            {
                "method": method,
                "final": final,
                "best": best,
                "mb_up": sum(float(r["bytes_up"]) for r in history) / max(len(history), 1) / 1e6,
                "seconds": sum(float(r["seconds"]) for r in history) / max(len(history), 1),
                "rounds": len(history),
                "results": str(result.results),
            }
        )
    title = (
        f"{shared.get('dataset', 'digits')}, {args.clients} clients, Dirichlet alpha="
        f"{args.alpha}, {args.rounds} rounds"
    )
    table = markdown_table(rows, title)
    (out / "comparison.md").write_text(table)
    (out / "comparison.json").write_text(json.dumps({"config": shared, "rows": rows}, indent=2))
    plot(histories, out / "comparison.png", title)
    print("\n" + table)
    print(f"written to {out}")
    return 0 if len(rows) == len(args.methods) else 1


if __name__ == "__main__":
    raise SystemExit(main())
