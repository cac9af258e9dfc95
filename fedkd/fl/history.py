"""Results of a federated run, written as the run goes so a crash loses nothing computed.

A run folder holds ``config.json`` (the resolved config), ``history.json`` and ``history.csv``
(one row per round), ``teachers/round-NNN.npy`` (each round's teacher logits),
``student.pt`` (the latest student), ``checkpoints/round-NNN.pt`` (the student of the last
completed round), ``journal.jsonl`` (the server's write-ahead round journal,
:mod:`fedkd.fl.journal`), ``tensorboard/`` (each row as TensorBoard scalars, and MLflow or
W&B as the run config's ``log`` says: :mod:`fedkd.tracking`), ``plots/*.png`` and, once
finished, ``summary.json``.

A round is committed by :meth:`RunRecorder.commit`: its checkpoint first, then its history row
(the commit point), and every file is written atomically (write, then rename). A process that
dies at any instant leaves a folder whose history names only rounds whose student is on disk,
so a resumed run starts from exactly the student the history says.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from fedkd.tracking import Tracker, open_trackers, parse_log, round_scalars


@dataclass
class RoundRecord:
    """One round's numbers. Accuracies are NaN where a method has no such model."""

    round: int
    method: str
    student_accuracy: float = math.nan
    teacher_accuracy: float = math.nan
    client_accuracy_mean: float = math.nan
    client_accuracy_min: float = math.nan  # the spread over the clients (1-point bins)
    client_accuracy_median: float = math.nan
    client_accuracy_max: float = math.nan
    client_train_loss: float = math.nan  # mean over the clients in the sum
    distill_loss: float = math.nan
    bytes_up: int = 0
    bytes_down: int = 0
    seconds: float = 0.0
    seconds_train: float = 0.0
    seconds_secagg: float = 0.0  # the secure-aggregation exchanges after train
    seconds_secagg_server: float = 0.0  # the server's secure-aggregation compute (in seconds)
    seconds_distill: float = 0.0
    sampled: int = 0
    survivors: int = 0
    dropped: list[int] = field(default_factory=list)  # partition ids that fell out this round
    # why each of ``dropped`` fell out ("stage: reason"), in the same order: a node's refusal
    # (its ledger's, e.g. "ledger refuses (budget): ...") is a dropout with its reason
    dropped_reasons: list[str] = field(default_factory=list)
    clipped_fraction: float = 0.0
    # Client-level DP (NaN with dp = off): epsilon spent after this round at dp-delta (PLD,
    # RDP cross-check, and without amplification by sampling), the realised noise multiplier
    # and noise std of the release, the sampling fraction, the share of vectors dp-clip cut.
    dp_epsilon: float = math.nan
    dp_epsilon_rdp: float = math.nan
    dp_epsilon_known_sample: float = math.nan
    dp_noise_multiplier: float = math.nan
    dp_noise_std: float = math.nan
    dp_sampling: float = math.nan
    dp_clipped_fraction: float = math.nan
    status: str = "ok"  # ok | skipped | abandoned (interrupted after a release; never re-asked)
    reason: str = ""


ROUND_FIELDS = tuple(f.name for f in dataclasses.fields(RoundRecord))
CHECKPOINTS = "checkpoints"
_Model = TypeVar("_Model", bound=nn.Module)


def _round_checkpoint(server_round: int) -> str:
    return f"{CHECKPOINTS}/round-{server_round:03d}.pt"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunRecorder:
    """Owns a run folder: config, per-round history, checkpoints, plots and summary."""

    def __init__(
        self, out_dir: str | Path, run_name: str, config: dict[str, Any], *, log: str = "none"
    ) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        label = "-".join(str(config[k]) for k in ("method", "mode") if k in config) or "run"
        name = run_name or f"{label}-{stamp}"
        self.config = config
        self.path = Path(out_dir) / name
        suffix = 1
        while self.path.exists():
            suffix += 1
            self.path = Path(out_dir) / f"{name}-{suffix}"
        (self.path / "plots").mkdir(parents=True)
        self.rows: list[RoundRecord] = []
        self.track(log)
        self.write_json("config.json", config)

    def track(self, log: str) -> None:
        """Send the rows added from now on to the trackers ``log`` names (the run config's
        ``log`` key, :func:`fedkd.tracking.parse_log`); they open with the first row."""
        self._log = parse_log(log)
        self._trackers: list[Tracker] | None = None

    @classmethod
    def reopen(cls, path: str | Path, *, log: str = "none") -> RunRecorder:
        """Continue a stopped run in its own folder: its config and completed rounds; new
        rows go to the trackers ``log`` names (TensorBoard appends to the run's events).

        Raises
        ------
        ValueError
            When ``path`` is not a run folder (no ``config.json``).
        """
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise ValueError(f"'{folder}' is not a run folder (no config.json)")
        recorder = cls.__new__(cls)
        recorder.path, recorder.config = folder, json.loads((folder / "config.json").read_text())
        history = folder / "history.json"
        rows = json.loads(history.read_text()) if history.is_file() else []
        nan_fields = {f.name for f in dataclasses.fields(RoundRecord) if f.type == "float"}
        recorder.rows = []
        for row in rows:
            values: dict[str, Any] = {
                k: math.nan if v is None and k in nan_fields else v for k, v in row.items()
            }
            recorder.rows.append(RoundRecord(**values))
        (folder / "plots").mkdir(exist_ok=True)
        recorder.track(log)
        return recorder

    def last_teacher(self) -> np.ndarray | None:
        """The teacher of the last completed round, when one was saved."""
        done = [r.round for r in self.rows if r.status == "ok"]
        target = self.path / "teachers" / f"round-{done[-1]:03d}.npy" if done else None
        return None if target is None or not target.is_file() else np.load(target)

    def add(self, record: RoundRecord) -> None:
        """Append a round and rewrite ``history.json`` / ``history.csv``."""
        self.rows.append(record)
        rows = [_json_safe(asdict(r)) for r in self.rows]
        self.write_json("history.json", rows)
        tmp = self.path / "history.csv.tmp"
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=ROUND_FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({**row, "dropped": " ".join(map(str, row["dropped"]))})
        os.replace(tmp, self.path / "history.csv")
        if self._log:
            if self._trackers is None:
                self._trackers = open_trackers(self._log, self.path, self.config)
            for tracker in self._trackers:
                tracker.log_round(record.round, round_scalars(asdict(record)))

    def close(self) -> None:
        """Flush and close the trackers (a later row opens them again)."""
        for tracker in self._trackers or []:
            tracker.close()
        self._trackers = None

    def checkpoint(self, model: nn.Module, name: str = "student.pt") -> Path:
        """Save a state dict atomically (write then rename)."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, target)
        return target

    def commit(self, record: RoundRecord, model: nn.Module | None = None) -> None:
        """Record a finished round; with ``model``, its checkpoint first.

        The order makes a crash at any point safe: the round's own checkpoint
        (``checkpoints/round-NNN.pt``), then the history row (the commit point), then
        ``student.pt`` and the removal of the older round checkpoints.
        """
        if model is None:
            self.add(record)
            return
        self.checkpoint(model, _round_checkpoint(record.round))
        self.add(record)
        self.checkpoint(model)
        for old in (self.path / CHECKPOINTS).glob("round-*.pt"):
            if old.name != Path(_round_checkpoint(record.round)).name:
                old.unlink(missing_ok=True)

    def load_student(self, model: _Model) -> _Model:
        """Load the student of the last round the history names with a checkpoint.

        That is ``checkpoints/round-NNN.pt`` of the last completed round; a folder written
        before round checkpoints existed falls back to ``student.pt``. Without completed rounds
        the model is returned as it is.
        """
        done = [r.round for r in self.rows if r.status == "ok"]
        if not done:
            return model
        checkpoint = self.path / _round_checkpoint(done[-1])
        if not checkpoint.is_file():
            checkpoint = self.path / "student.pt"
        if checkpoint.is_file():
            model.load_state_dict(torch.load(checkpoint, weights_only=True))
        return model

    def save_teacher(self, server_round: int, logits: np.ndarray) -> Path:
        """Keep each round's ensemble teacher (public set x classes): small, and what the
        server learned from the clients that round -- the input of privacy analyses."""
        folder = self.path / "teachers"
        folder.mkdir(exist_ok=True)
        target = folder / f"round-{server_round:03d}.npy"
        np.save(target, logits.astype(np.float32))
        return target

    def write_json(self, name: str, payload: Any) -> Path:
        """Write ``payload`` as JSON (NaN as null), atomically."""
        target = self.path / name
        _atomic_write(target, json.dumps(_json_safe(payload), indent=2))
        return target

    def finish(self, method: str, *, seconds: float) -> Path:
        """Plots and ``summary.json``: final and best figures over the completed rounds;
        closes the trackers."""
        self.close()
        self.plot()
        done = [r for r in self.rows if r.status == "ok"]
        last = done[-1] if done else None

        def best(name: str) -> float | None:
            values = [getattr(r, name) for r in done if math.isfinite(getattr(r, name))]
            return max(values) if values else None

        return self.write_json(
            "summary.json",
            {
                "method": method,
                "rounds": len(self.rows),
                "rounds_completed": len(done),
                "rounds_skipped": len(self.rows) - len(done),
                "rounds_abandoned": sum(r.status == "abandoned" for r in self.rows),
                "final_student_accuracy": None if last is None else last.student_accuracy,
                "final_teacher_accuracy": None if last is None else last.teacher_accuracy,
                "final_client_accuracy_mean": None if last is None else last.client_accuracy_mean,
                "best_student_accuracy": best("student_accuracy"),
                # client-level DP: the (epsilon, delta) of the whole run (null without DP)
                "dp_epsilon": None if last is None else last.dp_epsilon,
                "dp_epsilon_known_sample": None if last is None else last.dp_epsilon_known_sample,
                "dp_delta": self.config.get("dp-delta")
                if self.config.get("dp", "off") != "off"
                else None,
                "seconds": seconds,
            },
        )

    def title(self) -> str:
        """What a reader of a plot needs: method, mode, data, skew, clients."""
        c = self.config
        parts = [
            str(c.get("method", "")),
            str(c.get("mode", "")) if c.get("method") == "fedkd" else "",
        ]
        parts.append(f"{c.get('dataset', '')} {c.get('partitioner', '')}")
        if str(c.get("partitioner", "")).startswith("dirichlet"):
            parts[-1] += f" α={c.get('alpha')}"
        sampled = max((r.sampled for r in self.rows), default=0)
        if sampled:
            parts.append(f"{sampled} clients/round")
        return ", ".join(p for p in parts if p.strip())

    def plot(self) -> list[Path]:
        """Accuracy and traffic per round, as PNGs under ``plots/``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        rounds = [r.round for r in self.rows]
        written: list[Path] = []
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, label in (
            ("student_accuracy", "student"),
            ("teacher_accuracy", "teacher (public set)"),
            ("client_accuracy_mean", "clients (mean)"),
        ):
            values = [getattr(r, key) for r in self.rows]
            if any(math.isfinite(v) for v in values):
                (line,) = ax.plot(rounds, values, marker="o", label=label)
                if key == "client_accuracy_mean":
                    low = [r.client_accuracy_min for r in self.rows]
                    high = [r.client_accuracy_max for r in self.rows]
                    if any(math.isfinite(v) for v in low):
                        ax.fill_between(
                            rounds,
                            low,
                            high,
                            color=line.get_color(),
                            alpha=0.15,
                            lw=0,
                            label="clients (min to max)",
                        )
        ax.set_xlabel("round")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        for r in self.rows:
            if r.status != "ok":
                ax.axvspan(r.round - 0.4, r.round + 0.4, color="red", alpha=0.15, lw=0)
        if any(r.status != "ok" for r in self.rows):
            ax.plot([], [], color="red", alpha=0.3, lw=6, label="skipped round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        ax.set_title(self.title(), fontsize=9)
        fig.tight_layout()
        written.append(self.path / "plots" / "accuracy.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(rounds, [r.bytes_up / 1e6 for r in self.rows], marker="o", label="up")
        ax.plot(rounds, [r.bytes_down / 1e6 for r in self.rows], marker="o", label="down")
        ax.set_xlabel("round")
        ax.set_ylabel("MB per round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(self.title(), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        written.append(self.path / "plots" / "traffic.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
        return written
