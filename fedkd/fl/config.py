"""Typed configuration of a federated run, parsed once from Flower's flat run config.

Flower hands the app a flat ``dict[str, int | float | str | bool]`` (``[tool.flwr.app.config]``
overridden by ``flwr run . --run-config "k=v"``). :func:`parse_run_config` turns it into a
:class:`FedConfig` made of sub-configs that own their defaults (data, local training, teacher,
distillation, secure aggregation, faults), and rejects unknown keys, bad types, names missing
from their registries and out-of-range values with a one-line message naming the key and
what is accepted. :func:`fedkd.fl.preflight.preflight` adds the checks that need the machine.

Each key is declared once, in :data:`fedkd.fl.run_keys.SETTINGS` (its field, reader, help and
check); :data:`RUN_CONFIG_KEYS` (key -> field) is derived from it. ``pyproject.toml``'s
``[tool.flwr.app.config]`` must list exactly these keys with these defaults (a test checks).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedkd.distill.teacher import TeacherConfig
from fedkd.dp.settings import DPConfig
from fedkd.dp.settings import check as check_dp
from fedkd.fl.run_keys import FAULT_STAGES, SETTINGS  # noqa: F401 -- FAULT_STAGES re-exported
from fedkd.secagg.message import Stage
from fedkd.tracking import parse_log

# The methods whose clients release a contribution to the (secure) sum: logits, and for
# FedDF as published the weight changes beside them. Every check that guards secure
# aggregation (trust, plaintext refusal, the roster) keys on this, never on "fedkd" alone.
SECURE_METHODS = ("fedkd", "feddf")
FAULT_STAGE_ALIASES = {"share": Stage.SHARE_KEYS.value, "mask": Stage.MASKED_INPUT.value}


@dataclass(frozen=True)
class DataConfig:
    """Dataset, its split (fractions in (0, 1] or counts > 1) and the partitioner."""

    dataset: str = "digits"
    data_root: str = ""
    split_private: float = 0.6
    split_public: float = 0.2
    split_test: float = 0.2
    partitioner: str = "dirichlet"
    alpha: float = 0.5
    synthetic_samples: int = 2000  # size of the generated 'synthetic' set
    # partitioner = population: shards drawn on demand (fedkd.data.population), any number
    # of clients; their mean size, and 0 = Poisson sizes, > 0 = log-normal with this sigma
    shard_size: float = 50.0
    shard_size_sigma: float = 0.0

    @property
    def num_samples(self) -> int | None:
        """What ``load_split`` generates: set for ``synthetic`` only."""
        return self.synthetic_samples if self.dataset == "synthetic" else None

    def split_sizes(self) -> dict[str, float | int]:
        """Private/public/test sizes as ``load_split`` takes them (fraction or count)."""
        sizes = (
            ("private", self.split_private),
            ("public", self.split_public),
            ("test", self.split_test),
        )
        return {name: (int(v) if v > 1 else float(v)) for name, v in sizes}


@dataclass(frozen=True)
class LocalConfig:
    """The clients' models and local training."""

    model: str = "cnn"  # the student's architecture (and FedDF clients')
    client_models: str = ""  # comma-separated, cycled over partition ids (FedMD heterogeneity)
    epochs: int = 2
    warmup_epochs: int = 10  # extra epochs when a client's model is freshly initialised
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"  # adam, or sgd (momentum 0.9)
    digest_epochs: int = 0  # FedMD: epochs on the pushed soft targets before revisiting
    kd_weight: float = 1.0  # weight of the pushed teacher's public targets in local training
    public_samples: int = 0  # public rows rehearsed per local round (0: all of them)
    eval_clients: bool = True
    torch_threads: int = 1  # per process: simulated clients run in parallel Ray actors already
    device: str = "cpu"  # where clients train and predict (engines give GPUs to their actors)
    proximal_mu: float = 0.01  # FedProx: weight of mu/2 ||w - w_global||^2 (Flower's FedProx)

    @property
    def client_model_list(self) -> list[str]:
        """Model names cycled over partition ids; the student's model when unset."""
        names = [n.strip() for n in self.client_models.split(",") if n.strip()]
        return names or [self.model]


@dataclass(frozen=True)
class DistillConfig:
    """The server's distillation of the student on the public set."""

    epochs: int = 20
    temperature: float = 1.0
    lr: float = 1e-3
    batch_size: int = 64
    device: str = "auto"  # auto: CUDA (with AMP) when present
    patience: int = 3  # stop after this many epochs without better teacher agreement (0: off)
    holdout: float = 0.1  # share of the public set held out to score that agreement
    ema: float = 0.5  # average the new student with the last round's (0: off)


@dataclass(frozen=True)
class SecAggSettings:
    """Secure aggregation of the teacher contributions."""

    enabled: bool = True
    threshold: float = 0.66  # share of each client's share holders that must survive
    neighbours: int = 0  # 0: auto (SecAgg+ from 100 clients), k > 0: k neighbours
    clip: float = 32.0  # |logit / T| clipped here before quantisation
    bits: int = 16  # fixed-point bits per value; a masked word is bits + ceil(log2 n) wide
    roster: str = "simulated"  # "" curious server, "simulated", or a roster.json (fedkd keys)
    weights_clip: float = 1.0  # feddf: |change of a weight in a round| clipped here


@dataclass(frozen=True)
class FaultConfig:
    """Injected client faults (tests and robustness studies)."""

    stage: str = "none"
    prob: float = 0.0
    kind: str = "crash"

    def __post_init__(self) -> None:
        if self.stage in FAULT_STAGE_ALIASES:
            new = FAULT_STAGE_ALIASES[self.stage]
            message = f"run config 'fault-stage' = '{self.stage}' is deprecated: use '{new}'"
            warnings.warn(message, FutureWarning, stacklevel=3)
            object.__setattr__(self, "stage", new)


@dataclass(frozen=True)
class FedConfig:
    """Every knob of a federated run (keys, defaults and ranges: docs/configuration.md)."""

    method: str = "fedkd"
    mode: str = "feddf"  # clients start from the pushed student (fedmd: own models, any arch)
    num_rounds: int = 10
    fraction: float = 1.0
    min_clients: int = 2
    seed: int = 0
    stage_timeout: float = 0.0  # seconds per exchange; 0 = from the measured work (auto)
    secagg_timeout: float = 0.0  # seconds per secure-aggregation exchange; 0 = stage_timeout's
    node_wait: float = 60.0
    out_dir: str = "runs"
    run_name: str = ""
    resume: str = ""  # a run folder to continue from its last completed round
    # where each round's numbers go besides history.json (fedkd.tracking): comma-separated
    # tensorboard, mlflow, wandb, or none
    log: str = "tensorboard"
    data: DataConfig = field(default_factory=DataConfig)
    local: LocalConfig = field(default_factory=LocalConfig)
    # The library's TeacherConfig() is the neutral rule (no label counts needed); a federated
    # run defaults to what measured best across label skews (README, "Measured").
    teacher: TeacherConfig = field(
        default_factory=lambda: TeacherConfig(
            rule="dsfl", sharpen_temperature=0.1, class_weighting=True, entropy_weighting=True
        )
    )
    distill: DistillConfig = field(default_factory=DistillConfig)
    secagg: SecAggSettings = field(default_factory=SecAggSettings)
    faults: FaultConfig = field(default_factory=FaultConfig)
    dp: DPConfig = field(default_factory=DPConfig)  # differential privacy (fedkd.dp.settings)

    def model_for_partition(self, partition_id: int) -> str:
        """Architecture a client runs: the student's wherever weights travel (FedKD's FedDF
        mode, FedDF, FedAvg, FedProx); FedMD's and local-only clients may differ."""
        if self.mode == "feddf" or self.method in ("feddf", "fedavg", "fedprox"):
            return self.local.model
        names = self.local.client_model_list
        return names[partition_id % len(names)]

    def to_dict(self) -> dict[str, Any]:
        """Run-config view (dashed keys), for results folders and messages."""
        return {key: _get(self, path) for key, path in RUN_CONFIG_KEYS.items()}


# run-config key -> path of the field in FedConfig, from the one declaration (run_keys)
RUN_CONFIG_KEYS: dict[str, tuple[str, ...]] = {key: s.path for key, s in SETTINGS.items()}


def _get(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def _coerce(key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ValueError(f"run config '{key}' must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"run config '{key}' must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"run config '{key}' must be a number, got {value!r}")
        return float(value)
    return str(value)


def parse_run_config(raw: Mapping[str, Any]) -> FedConfig:
    """Build a validated :class:`FedConfig` from a flat run-config mapping.

    Parameters
    ----------
    raw
        Flower's ``context.run_config`` (dashed keys) or any mapping of the same shape; keys
        left out keep their defaults.

    Raises
    ------
    ValueError
        On an unknown key, a wrong type, a name missing from its registry or a value outside
        its accepted range; the message names the key and what is accepted.

    Examples
    --------
    >>> parse_run_config({"method": "fedavg", "num-rounds": 3}).num_rounds
    3
    >>> parse_run_config({"fraction": 2})
    Traceback (most recent call last):
    ValueError: run config 'fraction' = 2.0; must be in (0, 1]
    """
    defaults = FedConfig()
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if key not in RUN_CONFIG_KEYS:
            raise ValueError(
                f"unknown run config key '{key}'; known keys: {', '.join(sorted(RUN_CONFIG_KEYS))}"
            )
        path = RUN_CONFIG_KEYS[key]
        coerced = _coerce(key, value, _get(defaults, path))
        if not (key == "fault-stage" and coerced in FAULT_STAGE_ALIASES):  # renamed with a warning
            _check_key(key, coerced)  # before a sub-config's own checks, so the key is named
        if len(path) == 1:
            top[path[0]] = coerced
        else:
            sections.setdefault(path[0], {})[path[1]] = coerced
    try:
        built = {
            name: dataclasses.replace(getattr(defaults, name), **fields)
            for name, fields in sections.items()
        }
    except ValueError as problem:  # TeacherConfig checks its own values
        raise ValueError(f"run config: {problem}") from None
    config = dataclasses.replace(defaults, **top, **built)
    validate(config)
    return config


def _choice(key: str, value: str, accepted: Sequence[str]) -> None:
    if value not in accepted:
        raise ValueError(f"run config '{key}' = {value!r}; accepted: {', '.join(accepted)}")


def _check_key(key: str, value: Any) -> None:
    """The key's own check from its declaration: a name in its registry, a number in range."""
    setting = SETTINGS[key]
    if setting.choices is not None:
        _choice(key, value, setting.names())
    elif setting.valid is not None and not setting.valid(value):
        raise ValueError(f"run config '{key}' = {value!r}; must be {setting.accepted}")


def _each_key(config: FedConfig) -> None:
    """Every key's own check, then what the names and paths need."""
    for key, setting in SETTINGS.items():
        _check_key(key, _get(config, setting.path))
    for name in config.local.client_model_list:
        _choice("client-models", name, SETTINGS["model"].names())
    parse_log(config.log)
    if config.data.dataset == "idx" and not config.data.data_root:
        raise ValueError("run config 'data-root' must name the folder of IDX files (dataset=idx)")


def validate(config: FedConfig) -> None:
    """Raise ``ValueError`` naming the first bad setting; warn on risky ones."""
    _each_key(config)
    check_dp(
        config.dp,
        method=config.method,
        secagg_enabled=config.secagg.enabled,
        client_models=[config.local.model, *config.local.client_model_list],
        mode=config.mode,
    )
    if config.method in ("fedkd", "feddf") and not config.secagg.enabled:
        warnings.warn(
            "secure aggregation is OFF (secagg=false): the server sees every client's logits",
            stacklevel=3,
        )
    if (
        config.method in ("fedkd", "feddf")
        and config.secagg.threshold <= 0.5
        and config.secagg.enabled
    ):
        warnings.warn(
            "secagg-threshold <= 0.5: a malicious server that forges dropouts can then learn "
            "individual inputs (Bonawitz et al. need t > n/2)",
            stacklevel=3,
        )
