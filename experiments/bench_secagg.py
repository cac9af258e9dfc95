"""Benchmark fedkd's secure aggregation against plaintext, AES-CTR and Flower 1.42's SecAgg+.

For every configuration (n clients, vector length d, dropout fraction) one run measures:

* fedkd (``fedkd.secagg.driver.run_secagg``) with identities and a roster -- signed round
  keys, the consistency stage, per-share commitments: the protocol that holds against a
  malicious server -- mean per-client seconds, server seconds and bytes per client, as
  reported by the driver; and, in the same run, the same protocol without identities (the
  curious-server mode, ``fedkd_noid_*``), so the cost of authentication is measured directly;
* plaintext: numpy sum of the survivors' vectors (``(n_survivors, d)`` float64 array,
  ``sum(axis=0)``);
* keystream: AES-256-CTR (``cryptography``) output of ``neighbours + 1`` masks of ``d``
  uint64 values, the keystream one client's masking needs;
* Flower 1.42's own SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``, see
  :mod:`experiments.flower_secaggplus`): exact when the projected run is short enough,
  otherwise estimated from measured samples (marked "est.").

Dropouts happen after share keys, before masked input: the server must rebuild each
dropped client's key from Shamir shares and regenerate its pairwise masks, the expensive
case for the server. Both systems get the same inputs, neighbour count k (full SecAgg,
k = n - 1, unless ``--neighbours``), threshold (strict majority of the k + 1 share
holders), clipping range and dropped clients.

Usage::

    python -m experiments.bench_secagg                 # full grid -> runs/bench_secagg
    python -m experiments.bench_secagg --quick         # small subset, < 1 minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedkd.secagg.config import majority_threshold
from fedkd.secagg.driver import DriverResult, Stage, run_secagg

DROPOUT_NOTE = (
    "dropouts happen after share keys, before masked input: the server must recover every "
    "dropped client's pairwise masks (the expensive case for the server)"
)
FULL_GRID: dict[str, list[float]] = {
    "n": [10, 50, 100, 200],
    "d": [20_000, 100_000],
    "dropout": [0.0, 0.1],
}
QUICK_GRID: dict[str, list[float]] = {"n": [10, 20], "d": [5_000], "dropout": [0.0, 0.1]}


@dataclass(frozen=True)
class BenchSettings:
    """Knobs shared by every configuration.

    Attributes
    ----------
    neighbours : int | None
        SecAgg+ degree k for both systems; None = full SecAgg (k = n - 1).
    repeat : int
        Maximum runs per measurement; the median is reported.
    repeat_budget_s : float
        Stop repeating a measurement once its runs took this long in total.
    clip : float
        Clipping range of both systems.
    flower : bool
        Measure Flower's SecAgg+ at all.
    flower_cap_s : float
        Run Flower exactly only when the projected run takes at most this long.
    flower_exact_max_n : int
        Run Flower exactly only up to this many clients (estimated above).
    seed : int
        Seeds inputs and dropout choice.
    """

    neighbours: int | None = None
    repeat: int = 3
    repeat_budget_s: float = 30.0
    clip: float = 64.0
    flower: bool = True
    flower_cap_s: float = 120.0
    flower_exact_max_n: int = 100
    seed: int = 0


def _median_runs(fn: Callable[[], float], settings: BenchSettings) -> tuple[float, int]:
    """Median of up to ``repeat`` calls of ``fn`` (each returns seconds), and the run count."""
    times: list[float] = []
    spent = 0.0
    while len(times) < max(settings.repeat, 1) and (not times or spent < settings.repeat_budget_s):
        start = time.perf_counter()
        times.append(fn())
        spent += time.perf_counter() - start
    return statistics.median(times), len(times)


def make_inputs(num: int, dim: int, seed: int) -> list[np.ndarray]:
    """Client vectors: logit-like float64 values, N(0, 4^2), seeded."""
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 4.0, dim) for _ in range(num)]


def dropped_clients(num: int, dropout: float, seed: int) -> list[int]:
    """``round(dropout * n)`` client indexes, chosen with a seeded generator."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout} is invalid; accepted: 0 <= dropout < 1")
    rng = np.random.default_rng(seed + 1)
    count = int(round(dropout * num))
    return sorted(int(i) for i in rng.choice(num, size=count, replace=False))


def time_plaintext(inputs: Sequence[np.ndarray], survivors: Sequence[int]) -> float:
    """Seconds to sum the survivors' vectors with numpy (stacking not timed)."""
    stacked = np.stack([inputs[i] for i in survivors])
    start = time.perf_counter()
    total = stacked.sum(axis=0)
    elapsed = time.perf_counter() - start
    del total
    return elapsed


def time_keystream(masks: int, dim: int) -> float:
    """Seconds to generate ``masks`` AES-256-CTR keystreams of ``dim`` uint64 values each."""
    zeros = bytearray(dim * 8)
    out = bytearray(dim * 8 + 15)  # update_into needs block_size - 1 spare bytes
    keys = [(os.urandom(32), os.urandom(16)) for _ in range(masks)]
    start = time.perf_counter()
    for key, nonce in keys:
        encryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
        encryptor.update_into(zeros, out)
        np.frombuffer(out, dtype=np.uint64, count=dim)
    return time.perf_counter() - start


def _fedkd(
    inputs: Sequence[np.ndarray],
    neighbours: int | None,
    threshold: int,
    dropped: Sequence[int],
    settings: BenchSettings,
) -> tuple[list[DriverResult], list[DriverResult], list[DriverResult], list[float]]:
    """Runs with a roster (a client's later round, and its first) and without identities,
    and the keystream baseline right after each, timed in the same repetition.

    Interleaved, so all of them see the same machine load (on a shared machine a baseline
    timed minutes apart from the runs it divides can be off by 2x either way).
    """
    variants = {"roster": (True, True), "first": (True, False), "noid": (False, False)}
    runs: dict[str, list[DriverResult]] = {name: [] for name in variants}
    keystreams: list[float] = []
    k = len(inputs) - 1 if neighbours is None else neighbours
    spent = 0.0
    while len(runs["roster"]) < max(settings.repeat, 1) and (
        not runs["roster"] or spent < settings.repeat_budget_s
    ):
        start = time.perf_counter()
        for name, (roster, warm) in variants.items():
            runs[name].append(
                run_secagg(
                    inputs,
                    threshold=threshold,
                    neighbours=neighbours,
                    clip=settings.clip,
                    dropouts={Stage.MASKED_INPUT: dropped},
                    seed=settings.seed,
                    roster=roster,
                    warm=warm,
                )
            )
        keystreams.append(time_keystream(k + 1, len(inputs[0])))
        spent += time.perf_counter() - start
    return runs["roster"], runs["first"], runs["noid"], keystreams


def _median_run(runs: list[DriverResult]) -> DriverResult:
    ordered = sorted(runs, key=lambda r: r.server_seconds["total"])
    return ordered[(len(ordered) - 1) // 2]


def _flower(
    inputs: Sequence[np.ndarray],
    neighbours: int | None,
    threshold: int,
    dropped: Sequence[int],
    settings: BenchSettings,
) -> dict[str, Any]:
    """Flower's SecAgg+ on the same inputs: an estimate always, an exact run when affordable."""
    from experiments import flower_secaggplus as flower

    num, dim = len(inputs), len(inputs[0])
    if not settings.flower:
        return {"flower_mode": "skipped", "flower_note": "--no-flower"}
    try:
        num_shares = flower.flower_shares(num, neighbours)
    except ValueError as err:
        return {"flower_mode": "skipped", "flower_note": str(err)}
    common = dict(
        neighbours=neighbours,
        threshold=threshold,
        dropped=dropped,
        clip=settings.clip,
        seed=settings.seed,
    )
    estimate = flower.estimate_flower(num, dim, **common)  # type: ignore[arg-type]
    projected = flower.projected_exact_seconds(estimate, num)
    row: dict[str, Any] = {
        "flower_num_shares": num_shares,
        "flower_threshold": threshold,
        "flower_server_est_s": estimate.server_seconds["total"],
        "flower_client_est_s": estimate.client_seconds["total"],
        "flower_projected_exact_s": projected,
    }
    if num <= settings.flower_exact_max_n and projected <= settings.flower_cap_s:
        runs: list[flower.FlowerResult] = []
        spent = 0.0
        limit = settings.repeat if projected * settings.repeat <= settings.repeat_budget_s else 1
        while len(runs) < max(limit, 1):
            start = time.perf_counter()
            runs.append(flower.run_flower_exact(inputs, **common))  # type: ignore[arg-type]
            spent += time.perf_counter() - start
        result = sorted(runs, key=lambda r: r.server_seconds["total"])[(len(runs) - 1) // 2]
        survivors = [i for i in range(num) if i not in set(dropped)]
        assert result.mean is not None
        exact_sum = np.sum(
            [np.clip(inputs[i], -settings.clip, settings.clip) for i in survivors], axis=0
        )
        row.update(
            flower_mode="exact",
            flower_runs=len(runs),
            flower_max_abs_err=float(np.abs(result.mean * len(survivors) - exact_sum).max()),
        )
    else:
        result = estimate
        reason = (
            f"n > {settings.flower_exact_max_n}"
            if num > settings.flower_exact_max_n
            else f"projected exact run {projected:.0f} s > cap {settings.flower_cap_s:.0f} s"
        )
        row.update(flower_mode="est.", flower_runs=0, flower_note=f"estimated: {reason}")
    row.update(
        flower_server_s=result.server_seconds["total"],
        flower_client_s=result.client_seconds["total"],
        flower_server_stages=result.server_seconds,
        flower_client_stages=result.client_seconds,
        flower_bytes_up_per_client=result.bytes_up_per_client,
        flower_bytes_down_per_client=result.bytes_down_per_client,
    )
    return row


def bench_config(num: int, dim: int, dropout: float, settings: BenchSettings) -> dict[str, Any]:
    """Measure one configuration; returns one JSON row."""
    inputs = make_inputs(num, dim, settings.seed)
    dropped = dropped_clients(num, dropout, settings.seed)
    neighbours = (
        None
        if settings.neighbours is None or settings.neighbours >= num - 1
        else settings.neighbours
    )
    k = num - 1 if neighbours is None else neighbours
    threshold = majority_threshold(k)
    survivors = [i for i in range(num) if i not in set(dropped)]

    runs, first_runs, plain_runs, paired = _fedkd(inputs, neighbours, threshold, dropped, settings)
    fed, noid = _median_run(runs), _median_run(plain_runs)
    client_s = statistics.median(r.client_seconds["total"] for r in runs)
    first_client_s = statistics.median(r.client_seconds["total"] for r in first_runs)
    noid_client_s = statistics.median(r.client_seconds["total"] for r in plain_runs)
    # The fastest run of each variant, kept in the JSON next to the medians (on a shared
    # machine one quiet run can make a minimum far from typical; the table uses medians).
    best = {
        name: min(r.client_seconds["total"] for r in group)
        for name, group in (("roster", runs), ("first", first_runs), ("noid", plain_runs))
    }
    exact_sum = np.sum(
        [np.clip(inputs[i], -settings.clip, settings.clip) for i in survivors], axis=0
    )
    plaintext_s, plaintext_runs = _median_runs(lambda: time_plaintext(inputs, survivors), settings)
    keystream_s, _ = _median_runs(lambda: time_keystream(k + 1, dim), settings)
    mask_stage = Stage.MASKED_INPUT.value
    row: dict[str, Any] = {
        "n": num,
        "d": dim,
        "dropout": dropout,
        "dropped": len(dropped),
        "survivors": len(fed.survivors),
        "mode": "full SecAgg" if neighbours is None else f"SecAgg+ k={k}",
        "neighbours": k,
        "threshold": threshold,
        "fedkd_server_s": fed.server_seconds["total"],
        "fedkd_client_s": client_s,
        "fedkd_noid_server_s": noid.server_seconds["total"],
        "fedkd_noid_client_s": noid_client_s,
        "fedkd_first_round_client_s": first_client_s,
        "fedkd_client_min_s": best["roster"],
        "fedkd_first_round_client_min_s": best["first"],
        "fedkd_noid_client_min_s": best["noid"],
        "identity_client_overhead": client_s / noid_client_s - 1.0,
        "identity_first_round_overhead": first_client_s / noid_client_s - 1.0,
        "identity_client_overhead_min": best["roster"] / best["noid"] - 1.0,
        "fedkd_noid_client_stages": noid.client_seconds,
        "fedkd_client_mask_s": fed.client_seconds.get(mask_stage, 0.0),
        "fedkd_server_stages": fed.server_seconds,
        "fedkd_client_stages": fed.client_seconds,
        "fedkd_runs": len(runs),
        "fedkd_bytes_up_per_client": fed.bytes_up_per_client,
        "fedkd_bytes_down_per_client": fed.bytes_down_per_client,
        "fedkd_max_abs_err": float(np.abs(fed.total - exact_sum).max()),
        "fedkd_clipped_fraction": fed.clipped_fraction,
        "plaintext_s": plaintext_s,
        "plaintext_runs": plaintext_runs,
        "keystream_s": keystream_s,
        "keystream_masks": k + 1,
    }
    row.update(_flower(inputs, neighbours, threshold, dropped, settings))
    row["ratio_flower_over_fedkd_server"] = _ratio(
        row.get("flower_server_s"), row["fedkd_server_s"]
    )
    row["ratio_fedkd_client_over_keystream"] = _ratio(row["fedkd_client_s"], keystream_s)
    # the same ratio per repetition, the baseline timed right after the runs it divides
    row["ratio_fedkd_client_over_keystream_paired"] = statistics.median(
        r.client_seconds["total"] / ks for r, ks in zip(runs, paired, strict=True)
    )
    row["ratio_fedkd_server_over_plaintext"] = _ratio(row["fedkd_server_s"], plaintext_s)
    return row


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def machine_info() -> dict[str, Any]:
    """CPU count and library versions of this machine."""
    versions: dict[str, str | None] = {}
    for dist in ("numpy", "cryptography", "flwr", "pycryptodome"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    """Three significant digits, no exponent above 1."""
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.{digits}g}"


def _mb(up: float | None, down: float | None) -> str:
    if up is None or down is None:
        return "-"
    return f"{up / 1e6:.2f} / {down / 1e6:.2f}"


def _table_cells(row: dict[str, Any]) -> list[str]:
    mode = row.get("flower_mode")
    est = " est." if mode == "est." else ""

    def flower(text: str) -> str:
        return "skip" if mode == "skipped" else text + est

    return [
        str(row["n"]),
        f"{row['d']:.0e}".replace("e+0", "e"),
        f"{row['dropout']:.0%}",
        f"{row['neighbours']} / {row['threshold']}",
        _fmt(row["fedkd_server_s"]),
        flower(_fmt(row.get("flower_server_s"))),
        flower(_fmt(row.get("ratio_flower_over_fedkd_server")) + "x"),
        _fmt(row["fedkd_client_s"]),
        _fmt(row["fedkd_noid_client_s"]),
        f"{row['identity_client_overhead']:+.0%} ({row['identity_first_round_overhead']:+.0%})",
        flower(_fmt(row.get("flower_client_s"))),
        _fmt(row["keystream_s"]),
        f"{_fmt(row['ratio_fedkd_client_over_keystream'])}x "
        f"({_fmt(row['ratio_fedkd_client_over_keystream_paired'])}x paired)",
        _fmt(row["plaintext_s"]),
        f"{_fmt(row['ratio_fedkd_server_over_plaintext'])}x",
        _mb(row["fedkd_bytes_up_per_client"], row["fedkd_bytes_down_per_client"]),
        flower(_mb(row.get("flower_bytes_up_per_client"), row.get("flower_bytes_down_per_client"))),
    ]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of the rows (times in seconds, bytes in MB, ratios as x)."""
    head = (
        "| n | d | drop | k / t | fedkd srv s | Flower srv s | Flower/fedkd srv | "
        "fedkd cli s | no-id cli s | identity cost | Flower cli s | keystream s | "
        "fedkd cli/keystream | plaintext s | "
        "fedkd srv/plaintext | fedkd MB up/down | Flower MB up/down |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for row in rows:
        lines.append("| " + " | ".join(_table_cells(row)) + " |")
    return "\n".join(lines)


def _preamble(settings: BenchSettings, machine: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    mode = (
        "full SecAgg (k = n - 1)"
        if settings.neighbours is None
        else f"SecAgg+ with k = {settings.neighbours} neighbours (full SecAgg where n - 1 <= k)"
    )
    return "\n".join(
        [
            "Secure aggregation benchmark: fedkd vs Flower "
            f"{machine['versions'].get('flwr')} SecAgg+",
            f"- machine: {machine['cpu_count']} CPUs ({machine['cpu_affinity']} usable), "
            f"{versions}",
            f"- both systems: {mode}, threshold t = strict majority of the k + 1 share holders, "
            f"clip = {settings.clip}",
            f"- {DROPOUT_NOTE}",
            "- fedkd: with identities and a roster (signed keys, consistency stage, share "
            "commitments); 'no-id' = the same run's protocol without identities "
            "(curious-server mode); 'identity cost' = per-client fedkd / no-id - 1 for a "
            "client's later rounds (in brackets: its first round, which also derives its static "
            "pair keys with every roster member), medians of interleaved repeats",
            "- fedkd: server and mean per-client seconds from fedkd.secagg.driver (all stages); "
            "Flower: its SecAggPlusWorkflow stages + secaggplus_mod per client "
            "(experiments/flower_secaggplus.py); 'est.' = Flower estimated from measured samples",
            f"- keystream = AES-256-CTR for k + 1 masks of d uint64; medians of up to "
            f"{settings.repeat} runs",
        ]
    )


def run_benchmark(
    grid: dict[str, list[Any]],
    settings: BenchSettings,
    out: Path,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every (n, d, dropout) of ``grid``, write ``bench_secagg.json`` / ``.md`` into ``out``."""
    machine = machine_info()
    rows = []
    for num in grid["n"]:
        for dim in grid["d"]:
            for dropout in grid["dropout"]:
                start = time.perf_counter()
                row = bench_config(int(num), int(dim), float(dropout), settings)
                row["wall_s"] = time.perf_counter() - start
                rows.append(row)
                log(
                    f"n={num} d={dim} dropout={dropout}: fedkd srv {row['fedkd_server_s']:.3g} s, "
                    f"Flower srv {_fmt(row.get('flower_server_s'))} s "
                    f"({row.get('flower_mode')}) [{row['wall_s']:.0f} s]"
                )
    table = format_table(rows)
    preamble = _preamble(settings, machine)
    report = {
        "machine": machine,
        "settings": {**settings.__dict__, "grid": grid},
        "note": DROPOUT_NOTE,
        "bytes_note": "fedkd bytes = driver total / n (dropped clients included); Flower bytes "
        "= protobuf bytes of a client completing all four stages (mean over survivors)",
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_secagg.json").write_text(json.dumps(report, indent=2, default=_json_default))
    (out / "bench_secagg.md").write_text(preamble + "\n\n" + table + "\n")
    log("")
    log(preamble)
    log("")
    log(table)
    return report


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench_secagg"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small subset (n 10, 20; d 5000) for CI and a first look",
    )
    parser.add_argument("--n", type=int, nargs="+", help="client counts")
    parser.add_argument("--d", type=float, nargs="+", help="vector lengths (e.g. 2e4 1e5)")
    parser.add_argument("--dropout", type=float, nargs="+", help="dropout fractions")
    parser.add_argument(
        "--neighbours",
        type=int,
        default=None,
        help="SecAgg+ degree k for both systems (even); default: full SecAgg",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument(
        "--repeat-budget-s",
        type=float,
        default=30.0,
        help="stop repeating a measurement after this many seconds",
    )
    parser.add_argument("--clip", type=float, default=64.0)
    parser.add_argument(
        "--flower-cap-s",
        type=float,
        default=120.0,
        help="estimate Flower when its projected exact run exceeds this",
    )
    parser.add_argument(
        "--flower-exact-max-n",
        type=int,
        default=None,
        help="estimate Flower above this many clients (default 100; 10 with "
        "--quick, so the quick run exercises both paths)",
    )
    parser.add_argument("--no-flower", action="store_true", help="skip Flower's SecAgg+")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    grid = {key: list(values) for key, values in (QUICK_GRID if args.quick else FULL_GRID).items()}
    for key in ("n", "d", "dropout"):
        if getattr(args, key) is not None:
            grid[key] = list(getattr(args, key))
    grid["d"] = [int(d) for d in grid["d"]]
    if args.neighbours is not None and args.neighbours < 1:
        raise SystemExit(f"--neighbours={args.neighbours} is invalid; accepted: >= 1")
    settings = BenchSettings(
        neighbours=args.neighbours,
        repeat=args.repeat,
        repeat_budget_s=args.repeat_budget_s,
        clip=args.clip,
        flower=not args.no_flower,
        flower_cap_s=args.flower_cap_s,
        flower_exact_max_n=args.flower_exact_max_n
        if args.flower_exact_max_n is not None
        else (10 if args.quick else 100),
        seed=args.seed,
    )
    run_benchmark(grid, settings, args.out, log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
