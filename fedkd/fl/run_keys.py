"""Every run-config key, declared once: where it lands, who reads it, what it accepts, what it does.

:data:`SETTINGS` is the one table. :mod:`fedkd.fl.config` derives from it the key -> field
map (:data:`~fedkd.fl.config.RUN_CONFIG_KEYS`), the parser's types (from the field's default)
and every single-key check (a range or a registry of names); cross-key checks stay in code.
:mod:`fedkd.fl.config_doc` renders it for ``fedkd run --help`` and ``docs/configuration.md``;
``pyproject.toml``'s ``[tool.flwr.app.config]`` is held equal to it by a test.

Keys are grouped by the part of the run they configure (the ``path``'s section): ``data``,
``local`` (client training), ``teacher``, ``distill`` (server), ``secagg``, ``faults``, ``dp``,
and the run itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fedkd.data.partition import PARTITION_METHODS
from fedkd.dp.settings import LAYERS, PLACEMENTS, SHARES
from fedkd.secagg.message import Stage

Reader = Literal["server", "client", "both"]

METHODS = ("fedkd", "feddf", "fedavg", "fedprox", "local", "central")
MODES = ("feddf", "fedmd")
PARTITIONERS = (*PARTITION_METHODS, "population")
OPTIMIZERS = ("adam", "sgd")
DEVICES = ("auto", "cpu", "cuda")
CLIENT_DEVICES = ("cpu", "auto", "cuda")  # auto: CUDA when the client's process was given a GPU
FAULT_KINDS = ("crash", "timeout")
# Where a fault may be injected: the train message or a secure-aggregation stage after it,
# by the stage's one name (Stage; fedkd.fl.config accepts the older names with a warning).
FAULT_STAGES = ("none", "train", *(s.value for s in Stage if s is not Stage.ADVERTISE))


def _datasets() -> Sequence[str]:
    from fedkd.data import available_datasets

    return available_datasets()


def _models() -> Sequence[str]:
    from fedkd.models import available_models

    return available_models()


def _teacher_rules() -> Sequence[str]:
    from fedkd.distill.teacher import available_teacher_rules

    return available_teacher_rules()


@dataclass(frozen=True)
class Setting:
    """One run-config key.

    ``path`` is the field of :class:`~fedkd.fl.config.FedConfig` it sets (its default and type
    come from there); ``reads`` whether the server, the clients or both act on it; ``accepted``
    the values it takes, checked by ``valid`` (a number's range) or against ``choices`` (names,
    or a function returning the registry's names).
    """

    path: tuple[str, ...]
    reads: Reader
    help: str
    accepted: str = ""
    valid: Callable[[Any], bool] | None = None
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None

    @property
    def section(self) -> str:
        """The part of the run the key configures (``run`` for the top-level fields)."""
        return self.path[0] if len(self.path) > 1 else "run"

    def names(self) -> Sequence[str]:
        """The accepted names (``choices`` resolved); empty when the key is not a name."""
        if self.choices is None:
            return ()
        return self.choices() if callable(self.choices) else self.choices

    def accepts(self) -> str:
        """What the key accepts, in words (for errors, ``--help`` and the docs)."""
        if self.choices is not None:
            return ", ".join(self.names())
        return self.accepted


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda value: math.isfinite(value) and value >= low


def _above(low: float) -> Callable[[Any], bool]:
    return lambda value: math.isfinite(value) and value > low


def _within(
    low: float, high: float, *, open_low: bool = False, open_high: bool = False
) -> Callable[[Any], bool]:
    def valid(value: Any) -> bool:
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        return bool(math.isfinite(value) and above and below)

    return valid


_SPLIT = "a fraction in (0, 1] or a count > 1"

SETTINGS: dict[str, Setting] = {
    # ---------------------------------------------------------------- the run
    "method": Setting(
        ("method",),
        "both",
        "fedkd: logits through secure aggregation, a distilled student; feddf: FedDF as "
        "published (weights and logits); fedavg, fedprox; local: each client alone; central: "
        "the pooled private data",
        choices=METHODS,
    ),
    "mode": Setting(
        ("mode",),
        "both",
        "FedKD's loop: feddf (clients start from the pushed student) or fedmd (clients keep "
        "their own models, any architecture: client-models)",
        choices=MODES,
    ),
    "num-rounds": Setting(("num_rounds",), "both", "rounds", ">= 1", _at_least(1)),
    "fraction": Setting(
        ("fraction",),
        "server",
        "share of the clients sampled per round",
        "in (0, 1]",
        _within(0, 1, open_low=True),
    ),
    "min-clients": Setting(
        ("min_clients",),
        "server",
        "clients a round needs (and the server waits for)",
        ">= 1",
        _at_least(1),
    ),
    "seed": Setting(
        ("seed",),
        "both",
        "seeds the split, partition, sampling, initialisation",
        ">= 0",
        _at_least(0),
    ),
    "stage-timeout": Setting(
        ("stage_timeout",),
        "server",
        "seconds per message exchange (0: from the measured work: 30 min for the first train, "
        "then 3x the last, at least 60 s); a train request past its deadline is dropped",
        ">= 0 seconds (0: automatic)",
        _at_least(0),
    ),
    "secagg-timeout": Setting(
        ("secagg_timeout",),
        "server",
        "seconds per secure-aggregation exchange",
        ">= 0 seconds (0: as stage-timeout)",
        _at_least(0),
    ),
    "node-wait": Setting(
        ("node_wait",),
        "server",
        "seconds to wait for min-clients at the start",
        ">= 0 seconds",
        _at_least(0),
    ),
    "out-dir": Setting(("out_dir",), "server", "results root"),
    "run-name": Setting(("run_name",), "server", 'results folder name ("": method and time)'),
    "resume": Setting(
        ("resume",), "server", "a run folder to continue from its last completed round"
    ),
    "log": Setting(
        ("log",),
        "server",
        "where each round's numbers go besides history.json: "
        "tensorboard, mlflow, wandb (comma-separated), or none",
    ),
    # ---------------------------------------------------------------- data
    "dataset": Setting(("data", "dataset"), "both", "the dataset", choices=_datasets),
    "data-root": Setting(
        ("data", "data_root"),
        "both",
        "its folder (idx: the IDX files; fashion-mnist: "
        "default Debian's /usr/share/datasets/fashion-mnist)",
    ),
    "split-private": Setting(
        ("data", "split_private"), "both", "the clients' pool", _SPLIT, _above(0)
    ),
    "split-public": Setting(
        ("data", "split_public"),
        "both",
        "the public set (logits travel on it)",
        _SPLIT,
        _above(0),
    ),
    "split-test": Setting(("data", "split_test"), "both", "the test set", _SPLIT, _above(0)),
    "partitioner": Setting(
        ("data", "partitioner"),
        "both",
        "how the pool is split over clients (dirichlet: the "
        "literature's per-class split; population: shards drawn on demand, any number)",
        choices=PARTITIONERS,
    ),
    "alpha": Setting(
        ("data", "alpha"),
        "both",
        "Dirichlet concentration (smaller: more skewed)",
        "> 0",
        _above(0),
    ),
    "synthetic-samples": Setting(
        ("data", "synthetic_samples"),
        "both",
        "size of the generated synthetic set",
        ">= 10",
        _at_least(10),
    ),
    "shard-size": Setting(
        ("data", "shard_size"),
        "both",
        "population: a client's mean shard size",
        ">= 1 samples",
        _at_least(1),
    ),
    "shard-size-sigma": Setting(
        ("data", "shard_size_sigma"),
        "both",
        "population: 0 Poisson sizes, > 0 log-normal with this sigma",
        ">= 0",
        _at_least(0),
    ),
    # ---------------------------------------------------------------- clients' training
    "model": Setting(
        ("local", "model"),
        "both",
        "the student's architecture (and FedDF clients')",
        choices=_models,
    ),
    "client-models": Setting(
        ("local", "client_models"),
        "client",
        'FedMD: comma-separated client architectures cycled over partition ids ("": model)',
    ),
    "local-epochs": Setting(("local", "epochs"), "client", "local epochs", ">= 1", _at_least(1)),
    "warmup-epochs": Setting(
        ("local", "warmup_epochs"),
        "client",
        "extra epochs when a client model is fresh",
        ">= 0",
        _at_least(0),
    ),
    "batch-size": Setting(("local", "batch_size"), "client", "batch size", ">= 1", _at_least(1)),
    "lr": Setting(("local", "lr"), "client", "learning rate", "> 0", _above(0)),
    "optimizer": Setting(
        ("local", "optimizer"), "client", "adam, or sgd with momentum 0.9", choices=OPTIMIZERS
    ),
    "digest-epochs": Setting(
        ("local", "digest_epochs"),
        "client",
        "FedMD: epochs on the pushed teacher alone first",
        ">= 0",
        _at_least(0),
    ),
    "local-kd-weight": Setting(
        ("local", "kd_weight"),
        "client",
        "weight of the pushed teacher's public targets in local training",
        ">= 0 (0: local training ignores the teacher)",
        _at_least(0),
    ),
    "local-public-samples": Setting(
        ("local", "public_samples"),
        "client",
        "public rows rehearsed per local round",
        ">= 0 (0: the whole public set)",
        _at_least(0),
    ),
    "proximal-mu": Setting(
        ("local", "proximal_mu"),
        "client",
        "FedProx: weight of mu/2 ||w - w_global||^2",
        ">= 0 and finite",
        _at_least(0),
    ),
    "torch-threads": Setting(
        ("local", "torch_threads"), "both", "torch threads per process", ">= 1", _at_least(1)
    ),
    "client-device": Setting(
        ("local", "device"),
        "client",
        "where clients train (auto: CUDA when given a GPU)",
        choices=CLIENT_DEVICES,
    ),
    "eval-clients": Setting(
        ("local", "eval_clients"), "client", "clients report their model's test accuracy"
    ),
    # ---------------------------------------------------------------- teacher
    "teacher-rule": Setting(
        ("teacher", "rule"),
        "both",
        "how the summed contributions make the teacher",
        choices=_teacher_rules,
    ),
    "temperature": Setting(
        ("teacher", "temperature"),
        "both",
        "the clients' softmax temperature",
        "> 0",
        _above(0),
    ),
    "sharpen-temperature": Setting(
        ("teacher", "sharpen_temperature"),
        "both",
        "DS-FL sharpening of the teacher",
        "> 0",
        _above(0),
    ),
    "class-weighting": Setting(
        ("teacher", "class_weighting"),
        "both",
        "weight a client's vote on a class by its count of that class (a secure sum too)",
    ),
    "entropy-weighting": Setting(
        ("teacher", "entropy_weighting"),
        "both",
        "also scale a client's votes by the entropy of its label mix",
    ),
    # ---------------------------------------------------------------- server's distillation
    "distill-epochs": Setting(
        ("distill", "epochs"), "server", "distillation epochs", ">= 0", _at_least(0)
    ),
    "distill-temperature": Setting(
        ("distill", "temperature"),
        "both",
        "distillation temperature (and the clients' rehearsal of the pushed teacher)",
        "> 0",
        _above(0),
    ),
    "distill-lr": Setting(("distill", "lr"), "server", "learning rate", "> 0", _above(0)),
    "distill-batch-size": Setting(
        ("distill", "batch_size"),
        "both",
        "batch size (and FedMD's digest)",
        ">= 1",
        _at_least(1),
    ),
    "device": Setting(
        ("distill", "device"),
        "server",
        "where the server distills (auto: CUDA with AMP)",
        choices=DEVICES,
    ),
    "distill-patience": Setting(
        ("distill", "patience"),
        "server",
        "early stopping on agreement with the teacher",
        ">= 0 epochs (0: no early stopping)",
        _at_least(0),
    ),
    "distill-holdout": Setting(
        ("distill", "holdout"),
        "server",
        "share of the public set held out to score it",
        "in [0, 1)",
        _within(0, 1, open_high=True),
    ),
    "student-ema": Setting(
        ("distill", "ema"),
        "server",
        "average the new student with the last round's",
        "in [0, 1) (0: no averaging)",
        _within(0, 1, open_high=True),
    ),
    # ---------------------------------------------------------------- secure aggregation
    "secagg": Setting(
        ("secagg", "enabled"), "both", "secure aggregation (false: plaintext, with a warning)"
    ),
    "secagg-threshold": Setting(
        ("secagg", "threshold"),
        "both",
        "share of each client's share holders that must survive (always a strict majority)",
        "a fraction in (0, 1]",
        _within(0, 1, open_low=True),
    ),
    "secagg-neighbours": Setting(
        ("secagg", "neighbours"),
        "both",
        "SecAgg+ neighbours k",
        ">= 0 (0: auto, SecAgg+ from 100 clients)",
        _at_least(0),
    ),
    "secagg-clip": Setting(
        ("secagg", "clip"),
        "both",
        "|logit / T| clipped here before fixed-point encoding",
        "> 0",
        _above(0),
    ),
    "secagg-bits": Setting(
        ("secagg", "bits"),
        "both",
        "fixed-point bits per value",
        "in [1, 48]",
        _within(1, 48),
    ),
    "secagg-roster": Setting(
        ("secagg", "roster"),
        "both",
        'trust: simulated (identities per run), "" (curious '
        "server, no identities) or a roster.json from fedkd keys",
    ),
    "secagg-weights-clip": Setting(
        ("secagg", "weights_clip"),
        "both",
        "feddf: |change of a weight in a round| clipped here",
        "> 0",
        _above(0),
    ),
    # ---------------------------------------------------------------- injected faults
    "fault-stage": Setting(
        ("faults", "stage"),
        "client",
        "where a client fault is injected",
        choices=FAULT_STAGES,
    ),
    "fault-prob": Setting(
        ("faults", "prob"), "client", "its probability", "in [0, 1]", _within(0, 1)
    ),
    "fault-kind": Setting(
        ("faults", "kind"), "client", "crash, or timeout (no reply)", choices=FAULT_KINDS
    ),
    # ---------------------------------------------------------------- differential privacy
    "dp": Setting(
        ("dp", "placement"),
        "both",
        "client-level DP of the teacher release",
        choices=PLACEMENTS,
    ),
    "dp-epsilon": Setting(
        ("dp", "epsilon"),
        "both",
        "the run's client-level target (noise calibrated to it)",
        ">= 0 (0: not set)",
        _at_least(0),
    ),
    "dp-delta": Setting(
        ("dp", "delta"),
        "both",
        "its delta",
        "in (0, 1)",
        _within(0, 1, open_low=True, open_high=True),
    ),
    "dp-noise-multiplier": Setting(
        ("dp", "noise_multiplier"),
        "both",
        "noise std / dp-clip given directly",
        ">= 0 (0: calibrate from dp-epsilon)",
        _at_least(0),
    ),
    "dp-clip": Setting(
        ("dp", "clip"), "both", "L2 bound of a client's contribution vector", "> 0", _above(0)
    ),
    "dp-stats-weight": Setting(
        ("dp", "stats_weight"),
        "both",
        "factor on the statistics block inside it",
        "> 0",
        _above(0),
    ),
    "dp-shares": Setting(
        ("dp", "shares"),
        "both",
        "distributed DP: noise shares calibrated for the unmask "
        "threshold or for the sampled clients",
        choices=SHARES,
    ),
    "client-dp-sgd": Setting(
        ("dp", "client_dp_sgd"), "client", "record-level DP-SGD (Opacus) of local training"
    ),
    "client-dp-noise": Setting(
        ("dp", "client_noise_multiplier"),
        "client",
        "DP-SGD noise multiplier",
        ">= 0 (0: calibrate from client-dp-epsilon)",
        _at_least(0),
    ),
    "client-dp-epsilon": Setting(
        ("dp", "client_epsilon"),
        "client",
        "DP-SGD: a client's target over the run",
        ">= 0 (0: not set)",
        _at_least(0),
    ),
    "client-dp-delta": Setting(
        ("dp", "client_delta"),
        "client",
        "its delta",
        "in (0, 1)",
        _within(0, 1, open_low=True, open_high=True),
    ),
    "client-dp-max-grad-norm": Setting(
        ("dp", "client_max_grad_norm"), "client", "per-example gradient clip", "> 0", _above(0)
    ),
    "client-dp-layers": Setting(
        ("dp", "client_layers"),
        "client",
        "what DP-SGD trains: all, or head (FedDF: the pushed student's output layer)",
        choices=LAYERS,
    ),
}
