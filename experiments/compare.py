"""FedKD vs FedMD vs FedDF vs FedAvg vs FedProx vs local-only vs centralized, over seeds and
label skews; every run a real ``flwr run`` (or, ``--engine inprocess``, the same library rounds
in this process).

    python -m experiments.compare                          # digits, 10 clients, alpha 0.5
    python -m experiments.compare --clients 20 --rounds 20 --seeds 0 1 2 \
        --alphas 0.1 0.5 1.0 --set dataset=fashion-mnist data-root=../shared/data/fashion-mnist \
        split-private=50000 split-public=10000 split-test=1.0
    python -m experiments.compare --table runs/compare-.../results.json   # the table again

Methods (the table's names): ``fedkd`` (the default loop), ``fedmd`` (``method=fedkd
mode=fedmd``), ``feddf`` (FedDF as published: weights and logits, both summed securely),
``fedavg``, ``fedprox``, ``local``, ``central``. Every method gets the same run config (data,
seed, partition, student model, rounds, local training); only the method changes, and ``seed``
and ``alpha`` over the grid. ``central`` pools all private data, so it does not depend on alpha:
it runs once per seed and appears in every alpha's block. Every run's config is checked before
the first one starts (exit 2 on a bad one).

Each run keeps its own folder under ``--out`` (``<method>-a<alpha>-s<seed>``, ``central-s<seed>``)
with its ``history.json``; the tables and plots are rebuilt from those folders after every run.
Running the command again with the same ``--out`` skips the runs already complete (a
``summary.json`` and the same config), so a crash or Ctrl-C loses nothing already computed; an
incomplete folder is kept aside as ``<name>.partial-<n>`` and the run starts again.

Writes ``results.json`` (every run's figures and the rows of the table), ``comparison.md``
(generated from it: mean ± std over seeds per method and alpha: student final and best, the
clients' mean and minimum final, MB sent up per client per round, seconds per round),
``comparison.png`` (accuracy vs round, a band over seeds, one column per alpha; a second row for
the clients, with their min-max spread when the histories hold it) and ``comparison_bytes.png``
(accuracy vs cumulative bytes sent). Exit code 0 when every run completed, 1 when one failed
(its cause printed on one line and kept in ``results.json``), 2 on a bad configuration,
130 / 143 when interrupted (the finished runs are kept; no new one starts).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedkd.cli.launch import LaunchResult, flwr_run, report
from fedkd.cli.run_config import (
    absolute_paths,
    check_run_config,
    parse_assignments,
)

METHODS = ("fedkd", "fedmd", "feddf", "fedavg", "fedprox", "local", "central")
# A table name that is not a run-config method: the settings that make it.
VARIANTS: dict[str, dict[str, object]] = {"fedmd": {"method": "fedkd", "mode": "fedmd"}}
ALPHA_FREE = ("central",)  # methods that never partition the data
# Keys only one method reads: the other methods' runs leave them at the default, so that a
# finished FedAvg run stays valid when only FedProx's mu changes.
METHOD_KEYS = {"proximal-mu": ("fedprox",)}
History = list[dict[str, Any]]


def default_out() -> Path:
    """A new results folder per comparison: ``runs/compare-<YYYYmmdd-HHMMSS>`` in the current
    folder (as ``fedkd run``'s)."""
    return Path("runs").resolve() / time.strftime("compare-%Y%m%d-%H%M%S")


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: a method at a seed (and an alpha, unless it needs none)."""

    method: str
    seed: int
    alpha: float | None  # None for ALPHA_FREE methods

    @property
    def name(self) -> str:
        """The run's folder name under ``--out`` (also its ``run-name``)."""
        if self.alpha is None:
            return f"{self.method}-s{self.seed}"
        return f"{self.method}-a{self.alpha:g}-s{self.seed}"


def grid(methods: Sequence[str], seeds: Sequence[int], alphas: Sequence[float]) -> list[RunSpec]:
    """Every run of the comparison, alpha by alpha (an alpha-free method once per seed)."""
    specs: list[RunSpec] = []
    for alpha in alphas:
        for seed in seeds:
            for method in methods:
                spec = RunSpec(method, seed, None if method in ALPHA_FREE else alpha)
                if spec not in specs:
                    specs.append(spec)
    return specs


# --------------------------------------------------------------------------- one run's figures


def _values(history: History, key: str) -> list[float]:
    """The numeric values of ``key`` over the rounds (skipped rounds have none)."""
    found = (row.get(key) for row in history)
    return [float(v) for v in found if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _final(history: History, key: str) -> float:
    values = _values(history, key)
    return values[-1] if values else math.nan


def _best(history: History, key: str) -> float:
    values = _values(history, key)
    return max(values) if values else math.nan


def _upload_per_client(history: History) -> float:
    """MB one sampled client sent up per round, over the rounds that sampled clients."""
    per_round = [
        float(row["bytes_up"]) / float(row["sampled"])
        for row in history
        if isinstance(row.get("sampled"), int) and row["sampled"] > 0
        and isinstance(row.get("bytes_up"), (int, float))
    ]  # fmt: skip
    return statistics.fmean(per_round) / 1e6 if per_round else math.nan


def run_figures(history: History) -> dict[str, float]:
    """The table's figures for one run: student final and best, the clients' mean and minimum
    final, MB up per round (all clients, and per sampled client) and seconds per round (NaN
    where the method has no such model)."""
    rounds = max(len(history), 1)
    return {
        "student_final": _final(history, "student_accuracy"),
        "student_best": _best(history, "student_accuracy"),
        "clients_final": _final(history, "client_accuracy_mean"),
        "clients_min_final": _final(history, "client_accuracy_min"),
        "mb_up": sum(_values(history, "bytes_up")) / rounds / 1e6,
        "mb_up_client": _upload_per_client(history),
        "seconds": sum(_values(history, "seconds")) / rounds,
        "rounds": float(len(history)),
    }


FIGURES = (
    "student_final",
    "student_best",
    "clients_final",
    "clients_min_final",
    "mb_up",
    "mb_up_client",
    "seconds",
)


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (n - 1; 0 for one value) and count of the finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, 0
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return statistics.fmean(finite), std, len(finite)


def spread(values: Sequence[float]) -> dict[str, float]:
    """``{"mean", "std"}`` of :func:`mean_std`, the form the studies' ``results.json`` keep."""
    mean, std, _ = mean_std(values)
    return {"mean": mean, "std": std}


def aggregate(runs: Sequence[Mapping[str, Any]], alphas: Sequence[float]) -> list[dict[str, Any]]:
    """One row per (alpha, method) with mean, std and count over seeds of every figure.

    ``runs`` are completed runs: ``method``, ``alpha`` (``None`` for alpha-free methods, which
    then appear under every alpha), ``seed`` and ``figures`` (from :func:`run_figures`).
    """
    methods = list(dict.fromkeys(str(r["method"]) for r in runs))
    rows: list[dict[str, Any]] = []
    for alpha in alphas:
        for method in methods:
            chosen = [
                r
                for r in runs
                if r["method"] == method and (r["alpha"] is None or r["alpha"] == alpha)
            ]
            if not chosen:
                continue
            row: dict[str, Any] = {
                "alpha": alpha,
                "method": method,
                "seeds": sorted(int(r["seed"]) for r in chosen),
            }
            for name in FIGURES:
                mean, std, count = mean_std([float(r["figures"][name]) for r in chosen])
                row[name] = {"mean": mean, "std": std, "n": count}
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- table


_ABSENT = {"mean": math.nan, "std": math.nan, "n": 0}  # a figure older results lack


def _cell(stat: Mapping[str, float], scale: float, digits: int) -> str:
    """``mean ± std`` (``-`` when the method has no such figure; no ± for a single seed)."""
    if not stat["n"]:
        return "-"
    mean = f"{stat['mean'] * scale:.{digits}f}"
    return mean if stat["n"] == 1 else f"{mean} ± {stat['std'] * scale:.{digits}f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """The comparison as Markdown, one block per alpha; accuracies in percent."""
    lines = [f"### {title}", ""]
    lines.append(
        "Mean ± sample std over seeds. Accuracies on the test set in %; `student` is the "
        "global model (FedKD's student, FedAvg's/FedProx's aggregate, the centralized "
        "model), `clients` the clients' own models (mean over clients)."
    )
    for alpha in dict.fromkeys(float(r["alpha"]) for r in rows):
        lines += [
            "",
            f"**Dirichlet α = {alpha:g}**",
            "",
            "| method | student (final) | student (best) | clients (final) | clients' min "
            "(final) | MB up / client / round | s / round | seeds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in (r for r in rows if float(r["alpha"]) == alpha):
            cells = [
                _cell(row["student_final"], 100, 1),
                _cell(row["student_best"], 100, 1),
                _cell(row["clients_final"], 100, 1),
                _cell(row.get("clients_min_final", _ABSENT), 100, 1),
                _cell(row.get("mb_up_client", _ABSENT), 1, 3),
                _cell(row["seconds"], 1, 1),
            ]
            seeds = " ".join(map(str, row["seeds"]))
            lines.append(f"| {row['method']} | {' | '.join(cells)} | {seeds} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots


def _series(history: History, key: str) -> dict[int, float]:
    return {
        int(r["round"]): float(r[key])
        for r in history
        if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))
    }


def _bands(
    histories: Sequence[History], key: str
) -> tuple[list[int], list[float], list[float], list[float]]:
    """Rounds, mean, min and max over runs of ``key`` (rounds every run has)."""
    series = [_series(h, key) for h in histories]
    series = [s for s in series if s]
    if not series:
        return [], [], [], []
    rounds = sorted(set.intersection(*(set(s) for s in series)))
    values = [[s[r] for s in series] for r in rounds]
    return (
        rounds,
        [statistics.fmean(v) for v in values],
        [min(v) for v in values],
        [max(v) for v in values],
    )


def _cumulative_mb(history: History) -> dict[int, float]:
    total, out = 0.0, {}
    for row in history:
        total += sum(_values([row], "bytes_up") + _values([row], "bytes_down"))
        out[int(row["round"])] = total / 1e6
    return out


def plot(
    runs: Sequence[Mapping[str, Any]], alphas: Sequence[float], out: Path, title: str
) -> list[Path]:
    """``comparison.png`` (accuracy vs round per alpha) and ``comparison_bytes.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, NullFormatter

    methods = list(dict.fromkeys(str(r["method"]) for r in runs))
    colours = {m: f"C{i}" for i, m in enumerate(METHODS)}

    def histories(method: str, alpha: float) -> list[History]:
        return [
            r["history"]
            for r in runs
            if r["method"] == method and (r["alpha"] is None or r["alpha"] == alpha)
        ]

    columns = len(alphas)
    fig, axes = plt.subplots(2, columns, figsize=(4.6 * columns, 7), squeeze=False, sharey="row")
    plotted: list[float] = []  # every student value drawn, for the top row's range
    for col, alpha in enumerate(alphas):
        top, bottom = axes[0][col], axes[1][col]
        for method in methods:
            found = histories(method, alpha)
            colour = colours.get(method)
            rounds, mean, low, high = _bands(found, "student_accuracy")
            if rounds:
                top.plot(rounds, mean, color=colour, marker="o", markersize=2, label=method)
                top.fill_between(rounds, low, high, color=colour, alpha=0.2, lw=0)
                plotted += [v for v in low if math.isfinite(v)]
            rounds, mean, low, high = _bands(found, "client_accuracy_mean")
            if rounds:
                bottom.plot(rounds, mean, color=colour, marker="o", markersize=2, label=method)
                bottom.fill_between(rounds, low, high, color=colour, alpha=0.2, lw=0)
            # The clients' own spread (min..max over clients), averaged over seeds, when the
            # histories record it.
            spread_low = _bands(found, "client_accuracy_min")
            spread_high = _bands(found, "client_accuracy_max")
            if spread_low[0] and spread_high[0] == spread_low[0]:
                bottom.plot(spread_low[0], spread_low[1], color=colour, ls=":", lw=1)
                bottom.plot(spread_high[0], spread_high[1], color=colour, ls=":", lw=1)
        if not bottom.lines:  # e.g. eval-clients=false: say so rather than leave a blank
            bottom.text(0.5, 0.5, "no client accuracies recorded", ha="center",
                        transform=bottom.transAxes, color="grey")  # fmt: skip
        top.set_title(f"α = {alpha:g}: global model (student)", fontsize=9)
        bottom.set_title(f"α = {alpha:g}: clients (mean; dotted: min / max)", fontsize=9)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.set_xlabel("round")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        top.set_ylabel("test accuracy (band: min-max over seeds)")
        bottom.set_ylabel("test accuracy")
    # The students of a working federation lie within a few points of each other: on a 0-1
    # axis their curves read as one flat line, so the top row starts 5 points under the lowest.
    axes[0][0].set_ylim(max(0.0, math.floor(20 * min(plotted, default=0.0)) / 20 - 0.05), 1.0)
    axes[1][0].set_ylim(0, 1)
    axes[0][0].legend(fontsize=8)
    if axes[1][0].get_legend_handles_labels()[0]:
        axes[1][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    written = [out / "comparison.png"]
    fig.savefig(written[0], dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, columns, figsize=(4.6 * columns, 3.8), squeeze=False)
    for col, alpha in enumerate(alphas):
        ax = axes[0][col]
        for method in methods:
            for index, history in enumerate(histories(method, alpha)):
                key = "client_accuracy_mean" if method == "local" else "student_accuracy"
                accuracy, sent = _series(history, key), _cumulative_mb(history)
                points = [(sent[r], accuracy[r]) for r in sorted(accuracy) if sent.get(r, 0) > 0]
                if points:
                    xs, ys = zip(*points, strict=True)
                    label = method if index == 0 else None
                    ax.plot(xs, ys, color=colours.get(method), alpha=0.8, lw=1, label=label)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a log axis
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3, which="both")
        ax.set_xlabel("cumulative MB sent (up + down, all clients)")
        ax.set_ylabel("test accuracy (local: clients' mean)")
        ax.set_title(f"α = {alpha:g} (one line per seed)", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    written.append(out / "comparison_bytes.png")
    fig.savefig(written[1], dpi=120)
    plt.close(fig)
    return written


# --------------------------------------------------------------------------- runs on disk


WHERE = ("out-dir", "run-name")  # where a run was written, not what it ran: a folder may move


def _same(saved: Any, wanted: Any) -> bool:
    if isinstance(saved, (int, float)) and isinstance(wanted, (int, float)):
        return float(saved) == float(wanted)
    return saved == wanted


def completed(folder: Path, config: Mapping[str, Any]) -> bool:
    """Whether ``folder`` holds this run, finished: ``summary.json`` and the same settings.

    "The same settings" are the ones compare passes (``--set``, ``--rounds``, method, seed,
    alpha), not the app's defaults: after changing a default in ``pyproject.toml``, use a new
    ``--out`` (or pass the key with ``--set``) so that old runs are not reused.

    Raises
    ------
    ValueError
        When the folder holds a finished run of another config (another ``--rounds`` or
        ``--set`` into the same ``--out``): mixing them would make the table lie.
    """
    if not (folder / "summary.json").is_file() or not (folder / "config.json").is_file():
        return False
    saved = json.loads((folder / "config.json").read_text())
    differ = sorted(k for k, v in config.items() if k not in WHERE and not _same(saved.get(k), v))
    if differ:
        raise ValueError(
            f"'{folder}' holds a finished run with other settings ("
            + ", ".join(f"'{k}': {saved.get(k)!r} there, {config[k]!r} now" for k in differ)
            + "); use another --out"
        )
    return True


def set_aside(folder: Path) -> Path | None:
    """Move an incomplete run folder out of the way (kept, never deleted)."""
    if not folder.exists():
        return None
    index = 1
    while (target := folder.with_name(f"{folder.name}.partial-{index}")).exists():
        index += 1
    shutil.move(str(folder), str(target))
    return target


def load_run(spec: RunSpec, folder: Path) -> dict[str, Any]:
    """A completed run as the table and plots read it."""
    history: History = json.loads((folder / "history.json").read_text())
    return {
        "method": spec.method,
        "alpha": spec.alpha,
        "seed": spec.seed,
        "results": str(folder),
        "figures": run_figures(history),
        "history": history,
    }


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``experiments.compare``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--alphas",
        "--alpha",
        dest="alphas",
        nargs="+",
        type=float,
        default=[0.5],
        help="Dirichlet concentrations, one block of the table each (default 0.5)",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0], help="seeds (default 0); mean ± std over them"
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="run-config settings shared by every run",
    )
    parser.add_argument(
        "--federation",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra federation config, e.g. client-resources-num-cpus=1 (the default)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: runs/compare-<time>); an existing one is resumed",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    parser.add_argument("--quiet", action="store_true", help="do not echo the Flower logs")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="flower",
        help="flower: each run a real `flwr run` (default); inprocess: the same library rounds "
        "and clients in this process, one after another (fedkd.fl.experiment.simulate)",
    )
    parser.add_argument(
        "--table",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="print the table of a finished comparison's results.json and exit",
    )
    args = parser.parse_args(argv)
    args.alphas = list(dict.fromkeys(args.alphas))
    args.seeds = list(dict.fromkeys(args.seeds))
    args.methods = list(dict.fromkeys(args.methods))
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def run_configs(
    args: argparse.Namespace, out: Path
) -> tuple[dict[str, object], dict[RunSpec, dict[str, object]]]:
    """The shared run config and each run's full run config, all checked first.

    Raises
    ------
    ValueError
        One line naming the run and the bad key.
    """
    if args.clients < 1 or args.rounds < 1:
        raise ValueError("--clients and --rounds must be >= 1")
    shared = absolute_paths({"num-rounds": args.rounds, **parse_assignments(args.set)})
    for key in ("seed", "alpha", "method", "run-name", "out-dir", "resume"):
        if key in shared:
            raise ValueError(f"--set: '{key}' is set by compare itself (--seeds, --alphas, ...)")
    shared["out-dir"] = str(out)
    configs: dict[RunSpec, dict[str, object]] = {}
    for spec in grid(args.methods, args.seeds, args.alphas):
        config = {**shared, "method": spec.method, "seed": spec.seed, "run-name": spec.name}
        config.update(VARIANTS.get(spec.method, {}))
        for key, readers in METHOD_KEYS.items():
            if spec.method not in readers:
                config.pop(key, None)
        if spec.alpha is not None:
            config["alpha"] = spec.alpha
        if spec.method == "local":  # its only models are the clients'
            config["eval-clients"] = True
        try:
            check_run_config(config, args.clients)
        except ValueError as error:
            raise ValueError(f"{spec.method}: {error} (run {spec.name})") from None
        configs[spec] = config
    return shared, configs


def print_table(path: Path) -> int:
    """The Markdown table of a comparison's ``results.json`` (generated, never typed)."""
    try:
        payload = json.loads(path.read_text())
        print(markdown_table(payload["rows"], str(payload["title"])))
    except (OSError, ValueError, KeyError) as error:
        print(f"compare: cannot read the table of {path}: {error}", file=sys.stderr)
        return 2
    return 0


def inprocess_run(
    config: dict[str, object], *, num_supernodes: int, echo: bool = True, **_: object
) -> LaunchResult:
    """One run through :func:`fedkd.fl.experiment.simulate`: the library's rounds and clients
    in this process (no Flower, no Ray), written where ``flwr run`` would write it."""
    import logging

    from fedkd.fl.experiment import simulate

    if echo and not logging.getLogger("fedkd").handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        recorder = simulate(config, num_supernodes)
    except KeyboardInterrupt:
        return LaunchResult(130, None, status="finished:stopped", cause="interrupted")
    except Exception as error:  # a failed run is reported, and the next one starts
        return LaunchResult(
            1, None, status="finished:failed", cause=f"{type(error).__name__}: {error}"
        )
    return LaunchResult(0, recorder.path, status="finished:completed")


ENGINES = ("flower", "inprocess")


def main(argv: list[str] | None = None) -> int:
    """Run every cell of the grid not already on disk, write the tables and plots."""
    args = parse_args(argv)
    if args.table is not None:
        return print_table(args.table)
    out = (args.out or default_out()).resolve()
    try:
        shared, configs = run_configs(args, out)
        done = {spec for spec, config in configs.items() if completed(out / spec.name, config)}
    except ValueError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = take_lock(out)
    except ValueError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2
    try:
        return _run_all(out, shared, configs, done, args)
    finally:
        lock.unlink(missing_ok=True)


def take_lock(out: Path) -> Path:
    """``out/compare.lock`` with this process's id; refused while another live compare holds
    it (it would set aside the folder of the run the other one is writing).

    Raises
    ------
    ValueError
        Naming the process that holds the folder.
    """
    lock = out / "compare.lock"
    try:
        holder = int(lock.read_text().strip())
    except (OSError, ValueError):
        holder = None
    if holder is not None and holder != os.getpid():
        try:
            os.kill(holder, 0)
        except ProcessLookupError:
            pass  # a compare that died without cleaning up
        except PermissionError:
            raise ValueError(f"'{out}' is in use by another compare (process {holder})") from None
        else:
            raise ValueError(f"'{out}' is in use by another compare (process {holder})")
    lock.write_text(f"{os.getpid()}\n")
    return lock


def _run_all(
    out: Path,
    shared: dict[str, object],
    configs: dict[RunSpec, dict[str, object]],
    done: set[RunSpec],
    args: argparse.Namespace,
) -> int:
    """Run the grid's unfinished cells one after another; return the exit code."""
    state = Progress(out, shared, args, {spec: out / spec.name for spec in done})
    todo = [spec for spec in configs if spec not in done]
    print(f"compare: {len(configs)} runs, {len(done)} already complete in {out}", flush=True)
    code = 0
    for index, spec in enumerate(todo, 1):
        moved = set_aside(out / spec.name)
        if moved is not None:
            print(f"compare: incomplete {spec.name} kept as {moved.name}; running it again")
        print(f"\n=== {spec.name} ({index}/{len(todo)}) ===", flush=True)
        launch = flwr_run if args.engine == "flower" else inprocess_run
        result = launch(
            configs[spec],
            num_supernodes=args.clients,
            federation_config=args.federation,
            echo=not args.quiet,
            timeout=args.timeout,
        )
        if result.ok and result.results is not None:
            state.finished[spec] = result.results
        else:
            report(result, label=spec.name)
            state.failed[spec.name] = result.cause or f"exit code {result.returncode}"
            if result.returncode in (130, 143):
                code = result.returncode
                break  # interrupted: keep what is done, start nothing new
            code = 1
        state.write(final=False)
    state.write(final=True)
    return code


@dataclass
class Progress:
    """The comparison so far: the runs finished (on disk) and the ones that failed."""

    out: Path
    shared: dict[str, object]
    args: argparse.Namespace
    finished: dict[RunSpec, Path]
    failed: dict[str, str] = field(default_factory=dict)

    def title(self) -> str:
        """Data, clients, rounds: what every run of the comparison shares."""
        return (
            f"{self.shared.get('dataset', 'digits')}, {self.args.clients} clients, "
            f"{self.args.rounds} rounds, seeds {' '.join(map(str, self.args.seeds))}"
        )

    def write(self, *, final: bool) -> None:
        """``comparison.md`` / ``.json`` / plots from every finished run's folder."""
        methods = list(self.args.methods)
        specs = sorted(self.finished, key=lambda s: (methods.index(s.method), s.seed))
        runs = [load_run(spec, self.finished[spec]) for spec in specs]
        rows = aggregate(runs, self.args.alphas)
        title = self.title()
        table = markdown_table(rows, title) if rows else f"### {title}\n\nno run completed\n"
        for name, cause in self.failed.items():
            table += f"\n- {name}: did not complete ({cause})"
        (self.out / "comparison.md").write_text(table + "\n")
        payload = {
            "title": title,
            "command": "python -m experiments.compare " + " ".join(self.args.argv),
            "config": self.shared,
            "clients": self.args.clients,
            "seeds": self.args.seeds,
            "alphas": self.args.alphas,
            "rows": rows,
            "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
            "failed": self.failed,
        }
        (self.out / "results.json").write_text(json.dumps(_json_safe(payload), indent=2))
        if runs:
            plot(runs, self.args.alphas, self.out, title)
        if final:
            print("\n" + table)
            print(f"written to {self.out}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


if __name__ == "__main__":
    raise SystemExit(main())
