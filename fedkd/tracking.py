"""A run's per-round numbers where researchers look: TensorBoard, MLflow, Weights & Biases.

:class:`~fedkd.fl.history.RunRecorder` hands every history row it commits to the trackers the
run config's ``log`` key names (comma-separated; default ``tensorboard``, ``none`` for none).
Each tracker logs the same scalars, :func:`round_scalars`, at step = round number:

- TensorBoard (a dependency): event files in ``<run folder>/tensorboard/``; a resumed run
  appends a new event file in the same folder, and TensorBoard reads them as one run.
- MLflow (optional, ``pip install mlflow``): one MLflow run per fedkd run, in
  ``$MLFLOW_TRACKING_URI`` or else the SQLite store ``<out-dir>/mlflow.db`` (beside the run
  folders, whatever the process's working directory, which under Flower is not the user's).
- Weights & Biases (optional, ``pip install wandb``): one W&B run per fedkd run, files in the
  run folder, ``mode`` from ``$WANDB_MODE`` (default ``offline``: nothing leaves the machine).

A resumed run continues its MLflow / W&B run: their ids are kept in ``<run>/tracking.json``.
The optional packages are imported only when selected; :func:`check_installed` (called by the
run's preflight) names the missing one before any work starts.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

TRACKERS = ("tensorboard", "mlflow", "wandb")
NONE = "none"
IDS_FILE = "tracking.json"  # the MLflow run id and W&B run id a resumed run continues

# scalar tag -> history field; a NaN field (no such model, DP off) is left out of the round
SCALARS: tuple[tuple[str, str], ...] = (
    ("accuracy/student", "student_accuracy"),
    ("accuracy/teacher", "teacher_accuracy"),
    ("accuracy/clients_mean", "client_accuracy_mean"),
    ("accuracy/clients_min", "client_accuracy_min"),
    ("accuracy/clients_median", "client_accuracy_median"),
    ("accuracy/clients_max", "client_accuracy_max"),
    ("loss/client_train", "client_train_loss"),
    ("loss/distill", "distill_loss"),
    ("bytes/up", "bytes_up"),
    ("bytes/down", "bytes_down"),
    ("seconds/round", "seconds"),
    ("seconds/train", "seconds_train"),
    ("seconds/secagg", "seconds_secagg"),
    ("seconds/secagg_server", "seconds_secagg_server"),
    ("seconds/distill", "seconds_distill"),
    ("clients/sampled", "sampled"),
    ("clients/survivors", "survivors"),
    ("clients/clipped_fraction", "clipped_fraction"),
    ("dp/epsilon", "dp_epsilon"),
    ("dp/epsilon_rdp", "dp_epsilon_rdp"),
    ("dp/epsilon_known_sample", "dp_epsilon_known_sample"),
    ("dp/noise_multiplier", "dp_noise_multiplier"),
    ("dp/noise_std", "dp_noise_std"),
    ("dp/sampling", "dp_sampling"),
    ("dp/clipped_fraction", "dp_clipped_fraction"),
)


class Tracker(Protocol):
    """Receives a run's rounds as they are committed."""

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        """Log one round's scalars at ``step`` (the round number)."""

    def close(self) -> None:
        """Flush and release what the tracker holds; the run is over."""


def parse_log(value: str) -> tuple[str, ...]:
    """The trackers a ``log`` run-config value names (``()`` for ``none``).

    Raises
    ------
    ValueError
        On a name that is not a tracker, or ``none`` beside a tracker.
    """
    names = tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    for name in names:
        if name not in (*TRACKERS, NONE):
            raise ValueError(
                f"run config 'log' = {value!r}; accepted: a comma-separated list of "
                f"{', '.join(TRACKERS)}, or {NONE}"
            )
    if not names or (NONE in names and len(names) > 1):
        raise ValueError(f"run config 'log' = {value!r}; '{NONE}' alone turns logging off")
    return tuple(n for n in names if n != NONE)


def check_installed(names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming ``pip install PKG`` for the first selected tracker missing."""
    for name in names:
        if importlib.util.find_spec(name) is None:
            raise ValueError(
                f"run config 'log' selects {name} but it is not installed: pip install {name}"
            )


def round_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite scalars of one history row (``dataclasses.asdict`` of a RoundRecord)."""
    scalars = {tag: float(row[name]) for tag, name in SCALARS}
    return {tag: value for tag, value in scalars.items() if math.isfinite(value)}


class TensorBoardTracker:
    """Event files in ``<run>/tensorboard/``, flushed every round (a crash loses nothing)."""

    def __init__(self, run_path: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_path / "tensorboard"))

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _ids(run_path: Path) -> dict[str, str]:
    target = run_path / IDS_FILE
    return json.loads(target.read_text()) if target.is_file() else {}


def _keep_id(run_path: Path, key: str, value: str) -> None:
    (run_path / IDS_FILE).write_text(json.dumps({**_ids(run_path), key: value}, indent=2))


class MLflowTracker:
    """One MLflow run per fedkd run (continued on resume), its config as parameters."""

    def __init__(self, run_path: Path, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        # MLflow 3 refuses its old ./mlruns file store unless told; its default is SQLite
        root = run_path.resolve().parent
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        run_id = _ids(run_path).get("mlflow_run_id")
        if run_id is None:
            found = self.client.get_experiment_by_name("fedkd")
            experiment = (
                found.experiment_id
                if found
                else self.client.create_experiment(
                    "fedkd", artifact_location=(root / "mlartifacts").as_uri()
                )
            )
            run_id = self.client.create_run(experiment, run_name=run_path.name).info.run_id
            params = [Param(k, str(v)) for k, v in config.items()]
            for start in range(0, len(params), 100):  # MLflow takes 100 params per batch
                self.client.log_batch(run_id, params=params[start : start + 100])
            _keep_id(run_path, "mlflow_run_id", run_id)
        self.run_id = run_id

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(tag, value, now, step) for tag, value in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbTracker:
    """One W&B run per fedkd run (resumed on resume), offline unless ``$WANDB_MODE`` says."""

    def __init__(self, run_path: Path, config: Mapping[str, Any]) -> None:
        import wandb

        run_id = _ids(run_path).get("wandb_id") or wandb.util.generate_id()
        _keep_id(run_path, "wandb_id", run_id)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "fedkd"),
            name=run_path.name,
            id=run_id,
            resume="allow",
            dir=str(run_path),
            config=dict(config),
            mode=os.environ.get("WANDB_MODE", "offline"),
        )

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


def open_trackers(names: Sequence[str], run_path: Path, config: Mapping[str, Any]) -> list[Tracker]:
    """The trackers ``names`` selects (see :func:`parse_log`) for the run in ``run_path``."""
    trackers: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(run_path))
        elif name == "mlflow":
            trackers.append(MLflowTracker(run_path, config))
        elif name == "wandb":
            trackers.append(WandbTracker(run_path, config))
    return trackers
