"""``python -m experiments.compression``: teacher -> small student through a transfer set.

``python -m experiments.compression table RESULTS.json ...`` prints the Markdown tables of
finished runs (the tables in ``docs/compression.md`` are this output, never typed by hand).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.mode_cli import run_mode_cli
from fedkd.modes.common import format_table
from fedkd.modes.compression import CompressionConfig, CompressionResult, run_compression
from fedkd.modes.stats import cell, interval


def summary_table(result: CompressionResult) -> str:
    """The printed summary: one row per setting and method, then the footprints."""
    rows = [
        [
            m.setting,
            m.method,
            cell(m.accuracy),
            interval(m.accuracy),
            cell(m.gain_over_alone),
            interval(m.gain_over_alone),
            cell(m.gap_closed),
            interval(m.gap_closed),
            cell(m.best_epoch),
        ]
        for m in result.methods
    ]
    headers = [
        "setting",
        "method",
        "acc",
        "acc 95% CI",
        "gain",
        "gain 95% CI",
        "gap closed",
        "gap 95% CI",
        "best epoch",
    ]
    table = format_table(headers, rows)
    prints = format_table(
        ["model", "params", "bytes", "MFLOPs/batch", "cpu_ms/batch (1 thread)"],
        [
            [f.name, f.parameters, f.size_bytes, f.flops / 1e6, f.latency_ms]
            for f in result.footprints
        ],
    )
    labels = ", ".join(
        f"{s}: {result.labelled[s]} labelled / {result.transfer_size[s]} transfer inputs"
        for s in result.labelled
    )
    return (
        f"teacher accuracy {cell(result.teacher_accuracy)} {interval(result.teacher_accuracy)}"
        f"\n{table}\n{labels}; hint {result.hint_features[0]} -> {result.hint_features[1]}\n"
        f"{prints}\nteacher/student: x{result.compression_ratio:.2f} params, "
        f"x{result.flop_ratio:.2f} FLOPs, CPU speed-up x{result.speedup:.2f} (identical-copy check "
        f"{result.latency.control_ratio:.2f})"
    )


def _md_spread(value: Mapping[str, Any] | None, digits: int = 4, ci: bool = False) -> str:
    """``mean ± std`` (and ``[low, high]``) of a ``Spread`` read back from ``results.json``."""
    if value is None:
        return ""
    text = f"{value['mean']:.{digits}f}"
    if value["n"] >= 2:
        text += f" ± {value['std']:.{digits}f}"
        if ci:
            text += f" [{value['ci_low']:.{digits}f}, {value['ci_high']:.{digits}f}]"
    return text


def _finished(payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """``(config, results)`` of a finished run; a run still going has no table yet."""
    config, result = payload["config"], payload["results"]
    if "methods" not in result:
        raise ValueError(f"unfinished run (stage {result.get('stage')!r}): no table to render")
    return config, result


def _validation_rows(payload: Mapping[str, Any]) -> int:
    """Rows early stopping scored (files written before the 10% slice held ``validation_size``)."""
    return int(payload["results"].get("validation_rows", payload["config"]["validation_size"]))


def _setting_label(result: Mapping[str, Any], setting: str) -> str:
    labelled, transfer = result["labelled"][setting], result["transfer_size"][setting]
    return f"{setting} ({labelled:,} labels, {transfer:,} transfer inputs)"


def comparison_table(payloads: Mapping[str, Mapping[str, Any]]) -> str:
    """One Markdown row per named run, setting and KD method: what differs between runs
    (student, validation rows, labels, transfer inputs) beside teacher, alone, KD, gap closed.

    Parameters
    ----------
    payloads : mapping
        Run name -> parsed ``results.json``.
    """
    rows = ["| run | student | validation rows | setting | teacher | alone | method | KD "
            "| gap closed [95% CI] | best epoch alone / KD |",
            "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, payload in payloads.items():
        config, result = _finished(payload)
        student = f"`{config['student_model']}` {json.dumps(config['student_kwargs'])}"
        alone = {m["setting"]: m for m in result["methods"] if m["method"] == "alone"}
        for m in result["methods"]:
            base = alone[m["setting"]]
            if m is base:
                continue
            rows.append(
                f"| {name} | {student} | {_validation_rows(payload):,} "
                f"| {_setting_label(result, m['setting'])} "
                f"| {_md_spread(result['teacher_accuracy'])} | {_md_spread(base['accuracy'])} "
                f"| {m['method']} | {_md_spread(m['accuracy'])} "
                f"| {_md_spread(m['gap_closed'], 2, ci=True)} "
                f"| {base['best_epoch']['mean']:.0f} / {m['best_epoch']['mean']:.0f} |"
            )
    return "\n".join(rows) + "\n"


def markdown_report(payload: Mapping[str, Any]) -> str:
    """The Markdown tables of one ``results.json`` (``{"config": ..., "results": ...}``).

    Parameters
    ----------
    payload : mapping
        The parsed file a finished compression run wrote.

    Returns
    -------
    str
        A line naming the data, models and seeds, the accuracy table (mean ± sample std over
        seeds; gain and gap closed with their 95% t-intervals) and the footprint table.
    """
    config, result = _finished(payload)
    seeds = ", ".join(str(s) for s in config["seeds"])
    head = (
        f"`{config['dataset']}`, teacher `{result['teacher_model']}` "
        f"{json.dumps(config['teacher_kwargs'])}, student `{config['student_model']}` "
        f"{json.dumps(config['student_kwargs'])}, seeds {seeds}, early stopping on "
        f"{_validation_rows(payload):,} held-out labels; teacher accuracy "
        f"{_md_spread(result['teacher_accuracy'])}"
    )
    rows = ["| setting | method | accuracy | gain over alone [95% CI] | gap closed [95% CI] "
            "| best epoch |", "|---|---|---|---|---|---|"]  # fmt: skip
    for m in result["methods"]:
        labels = _setting_label(result, m["setting"])
        alone = m["method"] == "alone"
        rows.append(
            f"| {labels if alone else m['setting']} | {m['method']} | {_md_spread(m['accuracy'])} "
            f"| {'' if alone else _md_spread(m['gain_over_alone'], ci=True)} "
            f"| {_md_spread(m['gap_closed'], 2, ci=True)} | {_md_spread(m['best_epoch'], 1)} |"
        )
    soft = ["| teacher on | T | accuracy | mean top probability | mean entropy (nats) |",
            "|---|---|---|---|---|"]  # fmt: skip
    soft += [
        f"| {q['data']} | {q['temperature']:g} | {_md_spread(q['accuracy'])} "
        f"| {_md_spread(q['top_probability'], 3)} | {_md_spread(q['entropy'], 3)} |"
        for q in result.get("soft_targets", [])
    ]
    latency = result["latency"]
    prints = ["| model | parameters | bytes | MFLOPs per batch | CPU ms per batch (1 thread) |",
              "|---|---|---|---|---|"]  # fmt: skip
    prints += [
        f"| {f['name']} | {f['parameters']:,} | {f['size_bytes']:,} | {f['flops'] / 1e6:.1f} "
        f"| {f['latency_ms']:.2f} |"
        for f in result["footprints"]
    ]
    ratios = (
        f"Batch of {latency['batch_size']}, median of {latency['repeats']} rounds. "
        f"Teacher/student: ×{result['compression_ratio']:.1f} parameters, "
        f"×{result['flop_ratio']:.1f} FLOPs, CPU speed-up ×{result['speedup']:.1f} "
        f"(identical-copy check {latency['control_ratio']:.2f})."
    )
    tables = [head, "\n".join(rows), "\n".join(prints), ratios]
    if len(soft) > 2:
        tables.insert(2, "\n".join(soft))
    return "\n\n".join(tables) + "\n"


def print_tables(args: list[str]) -> int:
    """Print :func:`markdown_report` of each ``results.json`` in ``args``, or with
    ``--compare`` first one :func:`comparison_table` of them (runs named by their folder)."""
    compare = args[:1] == ["--compare"]
    paths = [Path(p) for p in args[compare:]]
    if not paths:
        print("usage: fedkd compression table [--compare] RESULTS.json ...", file=sys.stderr)
        return 2
    payloads = {path.parent.name: json.loads(path.read_text()) for path in paths}
    if compare:
        print(comparison_table(payloads))
    for payload in [] if compare else payloads.values():
        print(markdown_report(payload))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse flags onto :class:`CompressionConfig`, run, print the table; return the exit code.

    ``table [--compare] PATH ...`` instead prints the Markdown tables of finished runs.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["table"]:
        return print_tables(args[1:])
    return run_mode_cli(
        "compression", CompressionConfig, run_compression, summary_table, args, __doc__
    )


if __name__ == "__main__":
    raise SystemExit(main())
