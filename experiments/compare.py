"""FedKD vs FedAvg vs local-only vs centralized on one partition, each a real ``flwr run``.

    python -m experiments.compare                          # digits, 10 clients, alpha 0.5
    python -m experiments.compare --clients 20 --rounds 20 --alpha 0.1 \
        --set dataset=idx data-root=../shared/data/mnist split-private=6000 \
              split-public=2000 split-test=2000

Every method gets the same run config (data, seed, partition, student model, rounds, local
epochs); only ``method`` changes. Each method's config is checked before the first run starts
(exit 2 on a bad one). Writes ``comparison.md``, ``comparison.json`` and ``comparison.png``
into ``--out`` (default: a new ``runs/compare-<date>-<time>`` folder) and prints the table.
Exit code 0 when every method completed, 1 when one failed (its cause printed on one line and
kept in ``comparison.json``), 130 / 143 when interrupted (the finished methods are kept).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from experiments.launch import LaunchResult, flwr_run, report
from experiments.run_config import (
    PROJECT_ROOT,
    absolute_paths,
    check_run_config,
    parse_assignments,
)

METHODS = ("fedkd", "fedavg", "local", "central")


def default_out() -> Path:
    """A new results folder per comparison: ``runs/compare-<YYYYmmdd-HHMMSS>``."""
    return PROJECT_ROOT / "runs" / time.strftime("compare-%Y%m%d-%H%M%S")


def _values(history: list[dict[str, object]], key: str) -> list[float]:
    """The numeric values of ``key`` over the rounds (skipped rounds have none)."""
    found = (row.get(key) for row in history)
    return [float(v) for v in found if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _final(history: list[dict[str, object]], key: str) -> float:
    values = _values(history, key)
    return values[-1] if values else math.nan


def _best(history: list[dict[str, object]], key: str) -> float:
    values = _values(history, key)
    return max(values) if values else math.nan


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``experiments.compare``."""
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
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default: runs/compare-<time>)"
    )
    parser.add_argument("--quiet", action="store_true", help="do not echo the Flower logs")
    return parser.parse_args(argv)


def method_configs(
    args: argparse.Namespace, out: Path
) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    """The shared run config and each method's full run config, all checked first.

    Raises
    ------
    ValueError
        One line naming the method and the bad key.
    """
    shared = absolute_paths(
        {"num-rounds": args.rounds, "alpha": args.alpha, **parse_assignments(args.set)}
    )
    shared["out-dir"] = str(out)
    configs: dict[str, dict[str, object]] = {}
    for method in args.methods:
        config = {**shared, "method": method, "run-name": method}
        if method == "local":  # its headline number is the clients' own test accuracy
            config["eval-clients"] = True
        try:
            check_run_config(config, args.clients)
        except ValueError as error:
            raise ValueError(f"{method}: {error}") from None
        configs[method] = config
    return shared, configs


def summary_row(method: str, result: LaunchResult) -> dict[str, object]:
    """One table row from a completed method's ``history.json``."""
    assert result.results is not None
    history = json.loads((result.results / "history.json").read_text())
    final, best = headline(method, history)
    rounds = max(len(history), 1)
    return {
        "method": method,
        "final": final,
        "best": best,
        "mb_up": sum(float(r.get("bytes_up") or 0) for r in history) / rounds / 1e6,
        "seconds": sum(float(r.get("seconds") or 0) for r in history) / rounds,
        "rounds": len(history),
        "results": str(result.results),
        "history": history,
    }


def main(argv: list[str] | None = None) -> int:
    """Run every method, write the table, plot and JSON; return the exit code."""
    args = parse_args(argv)
    out = (args.out or default_out()).resolve()
    try:
        shared, configs = method_configs(args, out)
    except ValueError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    failed: dict[str, str] = {}
    code = 0
    for method, config in configs.items():
        print(f"\n=== {method} ===", flush=True)
        result = flwr_run(config, num_supernodes=args.clients, echo=not args.quiet)
        if not result.ok:
            report(result, label=method)
            failed[method] = result.cause
            code = result.returncode if result.returncode in (130, 143) else 1
            if code != 1:
                break  # interrupted: keep what is done, start nothing new
            continue
        rows.append(summary_row(method, result))
    write_outputs(out, shared, rows, failed, args)
    return code


def write_outputs(
    out: Path,
    shared: dict[str, object],
    rows: list[dict[str, object]],
    failed: dict[str, str],
    args: argparse.Namespace,
) -> None:
    """``comparison.md`` / ``.json`` / ``.png`` for the methods that completed."""
    title = (
        f"{shared.get('dataset', 'digits')}, {args.clients} clients, Dirichlet alpha="
        f"{args.alpha}, {args.rounds} rounds"
    )
    histories = {str(r["method"]): r.pop("history") for r in rows}
    table = markdown_table(rows, title) if rows else f"### {title}\n\nno method completed\n"
    for method, cause in failed.items():
        table += f"\n- {method}: did not complete ({cause})"
    (out / "comparison.md").write_text(table + "\n")
    payload = {"config": shared, "rows": rows, "failed": failed}
    (out / "comparison.json").write_text(json.dumps(payload, indent=2))
    if histories:
        plot(histories, out / "comparison.png", title)  # type: ignore[arg-type]
    print("\n" + table)
    print(f"written to {out}")


if __name__ == "__main__":
    raise SystemExit(main())
