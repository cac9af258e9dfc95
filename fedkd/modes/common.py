"""Helpers shared by the single-node distillation modes.

Every mode is a config dataclass plus ``run_<mode>(config, out_dir) -> <Mode>Result``; the thin
scripts in ``experiments/`` map command-line flags onto the config. This module holds what they
all need and nothing else:

- :func:`seed_everything` -- seed Python, NumPy and PyTorch.
- :func:`prepare_out_dir` -- create the output folder.
- :func:`write_results` -- write ``results.json`` (config + results) atomically, as the run goes.
- :func:`to_jsonable` -- dataclasses / NumPy / paths -> JSON-ready values (NaN/inf -> ``None``).
- :func:`stratified_subset` -- a seeded, class-balanced subset of an :class:`ArrayDataset`.
- :func:`save_figure` -- save a matplotlib figure as PNG and close it (Agg backend).
- :func:`format_table` -- a plain-text table for the scripts' summaries.
- :func:`add_config_arguments` / :func:`config_from_args` -- argparse flags from a config
  dataclass (one ``--flag-name`` per field; ``metadata={"help": ...}`` on a field is its help;
  tuples take several values, dicts a JSON object, optionals the word ``none``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from fedkd.data import ArrayDataset  # noqa: E402

__all__ = [
    "RESULTS_FILE",
    "add_config_arguments",
    "config_from_args",
    "format_table",
    "prepare_out_dir",
    "save_figure",
    "seed_everything",
    "stratified_subset",
    "to_jsonable",
    "write_results",
]

RESULTS_FILE = "results.json"
ConfigT = TypeVar("ConfigT")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators.

    Parameters
    ----------
    seed : int
        The seed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stratified_subset(data: ArrayDataset, size: int | None, *, seed: int) -> ArrayDataset:
    """A seeded subset of ``size`` examples keeping the class proportions.

    ``None`` or ``size >= len(data)`` returns ``data`` itself; a ``size`` below the number of
    classes is drawn uniformly (it cannot hold every class).

    Parameters
    ----------
    data : ArrayDataset
        The pool.
    size : int or None
        Examples wanted, ``>= 1``.
    seed : int
        Seed of the draw.

    Returns
    -------
    ArrayDataset
        The subset, in the pool's order.
    """
    if size is None or size >= len(data):
        return data
    if size < 1:
        raise ValueError(f"subset size must be >= 1 or None (everything); got {size}")
    stratify = data.y if size >= len(np.unique(data.y)) else None
    indices, _ = train_test_split(
        np.arange(len(data)), train_size=size, stratify=stratify, random_state=seed
    )
    return data.subset(np.sort(indices))


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` (and parents) if missing and return it as a :class:`~pathlib.Path`."""
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def to_jsonable(value: Any) -> Any:
    """Convert dataclasses, NumPy values, tuples and paths into JSON-ready Python values.

    Non-finite floats become ``None`` so that the file is strict JSON.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_results(out_dir: str | Path, config: Any, results: Any) -> Path:
    """Write ``{"config": ..., "results": ...}`` to ``out_dir/results.json`` atomically.

    Call it after every stage of a run so a crash later loses nothing already computed.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created if missing).
    config : dataclass
        The mode's config.
    results : dataclass or dict
        Results so far.

    Returns
    -------
    Path
        The written file.
    """
    path = prepare_out_dir(out_dir) / RESULTS_FILE
    payload = {"config": to_jsonable(config), "results": to_jsonable(results)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` (parents created), close it and return the path."""
    import matplotlib.pyplot as plt

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(target, dpi=120)
    plt.close(fig)
    return target


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Format rows as a left-aligned plain-text table; floats get 4 significant decimals."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parser_for(hint: Any) -> tuple[Any, str | None]:
    """(argparse type, nargs) for a field type hint; ``None`` is accepted as the word 'none'."""
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        inner, nargs = _parser_for(args[0])

        def optional(text: str) -> Any:
            return None if text.lower() == "none" else inner(text)

        return optional, nargs
    if origin is tuple:
        return args[0], "+"
    if hint is dict or origin is dict:
        return _parse_json_object, None
    if hint in (int, float, str):
        return hint, None
    raise TypeError(
        f"config field type {hint!r} has no command-line form; use int, float, str, "
        "bool, an optional of these, tuple[X, ...] or dict (JSON)"
    )


def _parse_json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"hidden\": [32]}}', got {text!r}"
        )
    return value


def add_config_arguments(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """Add one ``--field-name`` option per field of the config dataclass ``config_cls``.

    Defaults are left to the dataclass: an option not given is absent from the namespace.
    Booleans get ``--flag`` / ``--no-flag``; optional fields accept the word ``none``; tuples take
    several values; dicts take a JSON object.
    """
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        if hints[f.name] is bool:  # --flag / --no-flag
            parser.add_argument(
                _flag(f.name),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{f.metadata.get('help', f.name)} (default: {f.default})",
            )
            continue
        kind, nargs = _parser_for(hints[f.name])
        default: Any = f.default
        factory = f.default_factory
        if default is dataclasses.MISSING and callable(factory):
            default = factory()
        help_text = f"{f.metadata.get('help', f.name)} (default: {default})"
        parser.add_argument(
            _flag(f.name),
            dest=f.name,
            type=kind,
            nargs=nargs,
            default=argparse.SUPPRESS,
            help=help_text,
        )


def config_from_args(config_cls: type[ConfigT], args: argparse.Namespace) -> ConfigT:
    """Build ``config_cls`` from parsed options, keeping dataclass defaults for those not given."""
    given = {}
    for f in dataclasses.fields(config_cls):  # type: ignore[arg-type]
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            given[f.name] = tuple(value) if isinstance(value, list) else value
    return config_cls(**given)
