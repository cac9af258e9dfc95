"""Typed configuration of a federated run, parsed once from Flower's flat run config.

Flower hands the app a flat ``dict[str, int | float | str | bool]`` (``[tool.flwr.app.config]``
overridden by ``flwr run . --run-config "k=v"``). :func:`parse_run_config` turns it into a
:class:`FedConfig` and rejects unknown keys, bad types and bad values with a message that names
the key and what is accepted. Keys use dashes (``local-epochs``); fields use underscores.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

METHODS = ("fedkd", "fedavg", "local", "central")
MODES = ("feddf", "fedmd")
PARTITIONERS = ("iid", "dirichlet", "shard", "pathological")
FAULT_STAGES = ("none", "train", "share", "mask", "unmask")
FAULT_KINDS = ("crash", "timeout")


@dataclass(frozen=True)
class FedConfig:
    """Every knob of a federated run (see the README's run-config table).

    Sizes given as a number in (0, 1] are fractions, larger numbers are counts.
    """

    method: str = "fedkd"
    mode: str = "fedmd"
    num_rounds: int = 10
    fraction: float = 1.0
    min_clients: int = 2
    seed: int = 0
    # data
    dataset: str = "digits"
    data_root: str = ""
    split_private: float = 0.6
    split_public: float = 0.2
    split_test: float = 0.2
    partitioner: str = "dirichlet"
    alpha: float = 0.5
    # models and local training
    model: str = "cnn"
    client_models: str = ""  # comma-separated, cycled over partition ids (FedMD heterogeneity)
    local_epochs: int = 2
    warmup_epochs: int = 10  # extra local epochs when a client's model is freshly initialised
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"  # local training: adam, or sgd (momentum 0.9)
    digest_epochs: int = 0  # FedMD: epochs on the pushed soft targets before revisiting
    # teacher and distillation
    teacher_rule: str = "dsfl"
    temperature: float = 1.0
    sharpen_temperature: float = 0.1
    class_weighting: bool = True
    entropy_weighting: bool = True
    distill_epochs: int = 20
    distill_temperature: float = 1.0
    distill_lr: float = 1e-3
    distill_batch_size: int = 64
    device: str = "auto"
    torch_threads: int = 1  # per process: simulated clients run in parallel Ray actors already
    # secure aggregation
    secagg: bool = True
    secagg_threshold: float = 0.66  # fraction of the sampled clients that must survive
    secagg_neighbours: int = 0  # 0 = full SecAgg, k > 0 = SecAgg+ graph with k neighbours
    secagg_clip: float = 32.0  # |logit / T| clipped here before quantisation
    # faults and timing
    fault_stage: str = "none"
    fault_prob: float = 0.0
    fault_kind: str = "crash"
    stage_timeout: float = 120.0
    node_wait: float = 60.0
    # outputs
    out_dir: str = "runs"
    run_name: str = ""
    eval_clients: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def client_model_list(self) -> list[str]:
        """Model names cycled over partition ids; the student's model when unset."""
        names = [n.strip() for n in self.client_models.split(",") if n.strip()]
        return names or [self.model]

    def model_for_partition(self, partition_id: int) -> str:
        """Architecture a client runs: FedDF clients share the student's, FedMD may differ."""
        if self.mode == "feddf":
            return self.model
        names = self.client_model_list
        return names[partition_id % len(names)]

    def split_sizes(self) -> dict[str, float | int]:
        """Private/public/test sizes as ``load_split`` takes them (fraction or count)."""
        return {
            name: (int(v) if v > 1 else float(v))
            for name, v in (
                ("private", self.split_private),
                ("public", self.split_public),
                ("test", self.split_test),
            )
        }

    def to_dict(self) -> dict[str, Any]:
        """Run-config view (dashed keys), for results folders and messages."""
        return {
            f.name.replace("_", "-"): getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "extra"
        }


_FIELDS = {f.name: f for f in dataclasses.fields(FedConfig) if f.name != "extra"}
_CHOICES: dict[str, tuple[str, ...]] = {
    "method": METHODS,
    "mode": MODES,
    "partitioner": PARTITIONERS,
    "fault_stage": FAULT_STAGES,
    "fault_kind": FAULT_KINDS,
    "optimizer": ("adam", "sgd"),
}


def _coerce(name: str, value: Any, default: Any) -> Any:
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ValueError(f"run config '{name}' must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"run config '{name}' must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"run config '{name}' must be a number, got {value!r}")
        return float(value)
    return str(value)


def parse_run_config(raw: Mapping[str, Any], *, strict: bool = True) -> FedConfig:
    """Build a validated :class:`FedConfig` from a flat run-config mapping.

    Parameters
    ----------
    raw
        Flower's ``context.run_config`` (dashed keys) or any mapping of the same shape.
    strict
        Refuse keys that are not knobs of :class:`FedConfig` (typos would otherwise pass
        silently); when false they are kept in ``extra``.

    Raises
    ------
    ValueError
        On an unknown key, a wrong type or a value outside its accepted range.
    """
    defaults = FedConfig()
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            if strict:
                known = ", ".join(sorted(k.replace("_", "-") for k in _FIELDS))
                raise ValueError(f"unknown run config key '{key}'; known keys: {known}")
            extra[key] = value
            continue
        values[name] = _coerce(key, value, getattr(defaults, name))
    config = FedConfig(**values, extra=extra)
    validate(config)
    return config


def validate(config: FedConfig) -> None:
    """Raise ``ValueError`` naming the first bad setting; warn on risky ones."""
    for name, choices in _CHOICES.items():
        if getattr(config, name) not in choices:
            key = name.replace("_", "-")
            raise ValueError(
                f"run config '{key}' = {getattr(config, name)!r}; accepted: {', '.join(choices)}"
            )
    positive = (
        "num_rounds",
        "local_epochs",
        "batch_size",
        "distill_batch_size",
        "min_clients",
        "torch_threads",
    )
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"run config '{name.replace('_', '-')}' must be >= 1")
    if not 0.0 < config.fraction <= 1.0:
        raise ValueError(f"run config 'fraction' must be in (0, 1], got {config.fraction}")
    if not 0.0 <= config.fault_prob <= 1.0:
        raise ValueError(f"run config 'fault-prob' must be in [0, 1], got {config.fault_prob}")
    if not 0.0 < config.secagg_threshold <= 1.0:
        raise ValueError(
            "run config 'secagg-threshold' is a fraction of the sampled clients in (0, 1]"
        )
    for name in ("temperature", "sharpen_temperature", "distill_temperature"):
        if getattr(config, name) <= 0:
            raise ValueError(f"run config '{name.replace('_', '-')}' must be > 0")
    if config.lr <= 0 or config.distill_lr <= 0:
        raise ValueError("learning rates ('lr', 'distill-lr') must be > 0")
    if config.alpha <= 0:
        raise ValueError(
            f"run config 'alpha' (Dirichlet concentration) must be > 0, got {config.alpha}"
        )
    if min(config.distill_epochs, config.digest_epochs, config.warmup_epochs) < 0:
        raise ValueError("'distill-epochs', 'digest-epochs' and 'warmup-epochs' must be >= 0")
    if config.secagg_clip <= 0:
        raise ValueError("run config 'secagg-clip' must be > 0")
    if config.method == "fedkd" and not config.secagg:
        warnings.warn(
            "secure aggregation is OFF (secagg=false): the server sees every client's logits",
            stacklevel=2,
        )
    if config.method == "fedkd" and config.secagg and config.secagg_threshold <= 0.5:
        warnings.warn(
            "secagg-threshold <= 0.5: a malicious server that forges dropouts can then learn "
            "individual inputs (Bonawitz et al. need t > n/2)",
            stacklevel=2,
        )
