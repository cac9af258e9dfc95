"""PNG plots of the attack studies (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def line_plot(
    path: Path,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    hlines: Mapping[str, float] | None = None,
) -> Path:
    """One line per series over ``x``, dashed horizontal reference lines; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ys in series.items():
        ax.plot(list(x), list(ys), marker="o", label=name)
    for name, y in (hlines or {}).items():
        ax.axhline(y, linestyle="--", linewidth=1, color="grey")
        ax.text(x[0], y, f" {name}", va="bottom", fontsize=8, color="grey")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def roc_plot(path: Path, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str) -> Path:
    """ROC curves ``name -> (fpr, tpr)`` on log-log axes (Carlini et al.'s view)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr) in curves.items():
        ax.plot(np.clip(fpr, 1e-5, 1), np.clip(tpr, 1e-5, 1), label=name)
    grid = np.logspace(-5, 0, 50)
    ax.plot(grid, grid, linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1), title=title)
    ax.set(xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
