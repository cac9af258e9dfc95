"""What every attack study shares: options, results folder, tables, metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedkd.fl.config import FedConfig


@dataclass(frozen=True)
class StudyOptions:
    """The knobs every study takes from its command line.

    Attributes
    ----------
    dataset, data_root
        A registered dataset (``digits`` by default; ``idx`` with ``data_root`` for MNIST).
    seeds
        One repetition per seed; tables report the mean (and the spread when > 1 seed).
    out
        The study's results folder (``results.json``, ``table.md``, PNGs).
    quick
        Smallest sizes that still show the effect (tests).
    overrides
        Run-config keys applied to every run of the study, last (``--set key=value``).
    """

    dataset: str = "digits"
    data_root: str = ""
    seeds: tuple[int, ...] = (0,)
    out: Path = Path("runs/attacks")
    quick: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("at least one seed is needed (--seeds 0 1 ...)")
        if self.dataset == "idx" and not self.data_root:
            raise ValueError("--dataset idx needs --data-root (the folder of the IDX files)")
        unknown = sorted(set(self.overrides) - set(FedConfig().to_dict()))
        if unknown:
            raise ValueError(f"unknown run-config key(s) {', '.join(unknown)} in --set")


@dataclass
class StudyResult:
    """A study's answer: a JSON-able record, a markdown table and the plots it wrote."""

    name: str
    question: str
    threat_model: str
    results: dict[str, Any]
    table: str
    answer: str
    plots: list[str] = field(default_factory=list)


def run_config(options: StudyOptions, seed: int, name: str, **overrides: Any) -> dict[str, Any]:
    """A flat run config for one study run: the library defaults, the study's data, quiet."""
    config: dict[str, Any] = {
        **FedConfig().to_dict(),
        "dataset": options.dataset,
        "data-root": options.data_root,
        "seed": seed,
        "out-dir": str(options.out / "runs"),
        "run-name": f"{name}-seed{seed}",
        "eval-clients": False,
        "device": "auto",
        # The studies attack clients that keep their own models and train on their shards
        # alone (FedMD without rehearsal, the defaults when they were measured): the membership
        # study needs a persistent client model, and the figures in the README are for this.
        "mode": "fedmd",
        "local-kd-weight": 0.0,
        "distill-patience": 0,  # the student distilled for all its epochs, as measured
        # Exactness checks (secure sum == plaintext sum to 1e-6) want the fixed-point error out
        # of the way; the default 16 bits err by up to n * 1.5e-5 per value.
        "secagg-bits": 40,
    }
    config.update(overrides)
    config.update(options.overrides)
    return config


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats printed with 3 significant decimals."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else f"{value:.3f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mean_and_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation (0 for one value) of finite values."""
    array = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std())


def tv_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Total-variation distance between histograms along the last axis (normalised first)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / np.clip(p.sum(axis=-1, keepdims=True), 1e-300, None)
    q = q / np.clip(q.sum(axis=-1, keepdims=True), 1e-300, None)
    return 0.5 * np.abs(p - q).sum(axis=-1)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_study(result: StudyResult, out: Path) -> Path:
    """Write ``results.json`` and ``table.md`` of a study into ``out``; returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "study": result.name,
        "question": result.question,
        "threat_model": result.threat_model,
        "answer": result.answer,
        "table": result.table,
        "plots": result.plots,
        "results": result.results,
    }
    (out / "results.json").write_text(json.dumps(_jsonable(record), indent=2) + "\n")
    (out / "table.md").write_text(f"## {result.name}\n\n{result.table}\n{result.answer}\n")
    return out


def read_study(out: Path) -> StudyResult:
    """A study's result back from the ``results.json`` :func:`write_study` wrote in ``out``."""
    record = json.loads((out / "results.json").read_text())
    return StudyResult(
        name=record["study"],
        question=record["question"],
        threat_model=record["threat_model"],
        results=record["results"],
        table=record["table"],
        answer=record["answer"],
        plots=list(record["plots"]),
    )
