"""What one client does in a round, free of any transport.

FedDF: start from the pushed student, train on the private shard, predict the public set.
FedMD: keep one's own model (any architecture), first *digest* the pushed teacher's soft
targets on the public set, then *revisit* the private shard, then predict the public set.
The prediction becomes a teacher contribution (``fedkd.distill.teacher``) that is summed
securely with the other clients'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedkd.data import ArrayDataset
from fedkd.distill import (
    distill,
    evaluate,
    train_supervised,
)
from fedkd.distill.recipe import TrainReport
from fedkd.distill.train import train_with_soft_targets
from fedkd.fl.config import FedConfig
from fedkd.fl.contribution import stats_block, teacher_contribution
from fedkd.fl.data import FederatedData
from fedkd.fl.feddf import client_weights_block
from fedkd.fl.privacy import private_local_training
from fedkd.models import FeatureModel, build_model

if TYPE_CHECKING:
    from fedkd.dp.dpsgd import DPSGDReport  # Opacus: imported where DP-SGD runs


@dataclass(frozen=True)
class LocalResult:
    """A client's round: its contribution vector and what it reports about itself."""

    # (P*C + C + STATS,) float64: concat(w ⊙ f(logits), w, stats_block(...)); summed securely
    vector: np.ndarray
    num_examples: int  # the shard size (1 under DP-SGD: the shard size is not private output)
    train_loss: float  # NaN under DP-SGD (a loss on private batches is not private output)
    client_accuracy: float  # the local model on the test set (NaN when not evaluated)
    clipped_fraction: float  # share of public-set logits cut at ±secagg-clip·T
    # DP-SGD (client-dp-sgd): the client's Opacus accountant history after this round (kept by
    # the node across rounds, never sent) and the epsilon of all its steps so far
    dpsgd_history: list[tuple[float, float, int]] = field(default_factory=list)
    dpsgd_epsilon: float = math.nan


def new_client_model(config: FedConfig, data: FederatedData, partition_id: int) -> FeatureModel:
    """A freshly initialised local model of the architecture this partition runs."""
    torch.manual_seed(config.seed * 100_003 + partition_id)
    return build_model(
        config.model_for_partition(partition_id),
        input_shape=data.split.input_shape,
        num_classes=data.split.num_classes,
    )


def client_device(config: FedConfig) -> str:
    """Where this client trains: ``client-device``, with ``auto`` meaning CUDA when this
    process sees a GPU (an engine gives one to its workers through their GPU share). DP-SGD
    (Opacus) trains on the CPU."""
    wanted = config.local.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() and not config.dp.client_dp_sgd else "cpu"
    return wanted


def local_round(
    config: FedConfig,
    data: FederatedData,
    partition_id: int,
    model: FeatureModel,
    *,
    server_round: int,
    teacher_logits: np.ndarray | None = None,
    contribute: bool = True,
    first_round: bool = False,
    dpsgd_history: Sequence[tuple[float, float, int]] = (),
    dpsgd_seed: int | None = None,
    proximal_mu: float = 0.0,
    send_weights: bool = False,
) -> LocalResult:
    """Run one client's round on ``model`` (updated in place).

    Parameters
    ----------
    config, data
        The run config and the federation's data.
    partition_id
        Which private shard this client holds.
    model
        FedDF: the pushed student; FedMD and ``local``: the client's own persistent model.
    server_round
        Seeds this round's shuffling.
    teacher_logits
        The previous round's ensemble teacher on the public set ``(P, C)`` (``None`` in the
        first round): digested for ``digest-epochs`` first, then rehearsed beside the private
        labels during local training (``local-kd-weight``).
    contribute
        Compute the teacher contribution (false for FedAvg/FedProx/local rounds).
    dpsgd_history, dpsgd_seed
        DP-SGD: the node's accountant entries so far, and the seed of this training's noise
        and sampling (the node's own; ``None``: OS entropy).
    proximal_mu
        FedProx: the proximal weight mu of ``mu / 2 * ||w - w_pushed||^2`` (0: none).
    send_weights
        FedDF as published: the contribution carries the change local training made to
        the pushed weights too (:mod:`fedkd.fl.feddf`), weighted by the shard size.

    Notes
    -----
    The contribution vector is the client's raw one: the node clips and noises what it
    releases (:func:`fedkd.fl.release.prepare_release`). No timing leaves the client: under
    DP-SGD the time taken tracks the shard size.
    """
    device = client_device(config)
    pushed = {k: v.detach().clone() for k, v in model.state_dict().items()} if send_weights else {}
    seed = config.seed * 1_000_003 + server_round * 1_009 + partition_id
    if teacher_logits is not None:
        _digest_teacher(config, data, model, teacher_logits, device=device, seed=seed)
    train = data.client_train(partition_id)
    report, dpsgd = _train_local(
        config,
        data,
        model,
        train,
        teacher_logits,
        first_round=first_round,
        dpsgd_history=dpsgd_history,
        dpsgd_seed=dpsgd_seed,
        proximal_mu=proximal_mu,
        device=device,
        seed=seed,
    )
    return _local_result(
        config,
        data,
        partition_id,
        model,
        report,
        dpsgd,
        pushed=pushed,
        num_examples=len(train),
        contribute=contribute,
        send_weights=send_weights,
        device=device,
    )


def _digest_teacher(
    config: FedConfig,
    data: FederatedData,
    model: FeatureModel,
    teacher_logits: np.ndarray,
    *,
    device: str,
    seed: int,
) -> None:
    """FedMD's digest: ``digest-epochs`` of distillation from the pushed teacher on the public
    set, after checking the teacher is ``(public set, classes)``."""
    public_x = data.split.public.x
    expected = (len(public_x), data.split.num_classes)
    if teacher_logits.shape != expected:
        raise ValueError(
            f"teacher logits have shape {teacher_logits.shape}, expected "
            f"{expected} (public set x classes)"
        )
    if config.local.digest_epochs > 0:
        distill(
            model,
            public_x,
            teacher_logits=teacher_logits,
            temperature=config.distill.temperature,
            epochs=config.local.digest_epochs,
            batch_size=config.distill.batch_size,
            lr=config.local.lr,
            device=device,
            seed=seed,
        )


def _train_local(
    config: FedConfig,
    data: FederatedData,
    model: FeatureModel,
    train: ArrayDataset,
    teacher_logits: np.ndarray | None,
    *,
    first_round: bool,
    dpsgd_history: Sequence[tuple[float, float, int]],
    dpsgd_seed: int | None,
    proximal_mu: float,
    device: str,
    seed: int,
) -> tuple[TrainReport, DPSGDReport | None]:
    """Local training on the private shard: DP-SGD, the private labels beside the pushed
    teacher's targets, or the private labels alone (FedProx: with ``proximal_mu``).

    Returns the training's report, and it again as DP-SGD's report when DP-SGD trained.
    """
    local = config.local
    epochs = local.epochs + (local.warmup_epochs if first_round else 0)
    if config.dp.client_dp_sgd:  # record-level DP: DP-SGD (Opacus) on the private labels only
        dpsgd = private_local_training(
            config,
            model,
            train,
            epochs=epochs,
            history=dpsgd_history,
            fresh=first_round,
            seed=dpsgd_seed,
        )
        return dpsgd, dpsgd
    if teacher_logits is not None and local.kd_weight > 0:
        # The knowledge loop: private labels and the pushed teacher's public targets in the
        # same steps, so local training does not forget what the federation taught.
        report = train_with_soft_targets(
            model,
            train,
            data.split.public.x,
            teacher_logits,
            kd_weight=local.kd_weight,
            temperature=config.distill.temperature,
            public_samples=local.public_samples,
            epochs=epochs,
            batch_size=local.batch_size,
            lr=local.lr,
            optimizer=local.optimizer,
            device=device,
            seed=seed,
        )
        return report, None
    report = train_supervised(
        model,
        train,
        epochs=epochs,
        batch_size=local.batch_size,
        lr=local.lr,
        device=device,
        seed=seed,
        optimizer=local.optimizer,
        proximal_mu=proximal_mu,
    )
    return report, None


def _local_result(
    config: FedConfig,
    data: FederatedData,
    partition_id: int,
    model: FeatureModel,
    report: TrainReport,
    dpsgd: DPSGDReport | None,
    *,
    pushed: dict[str, torch.Tensor],
    num_examples: int,
    contribute: bool,
    send_weights: bool,
    device: str,
) -> LocalResult:
    """What the trained model gives the round: its accuracy, loss and contribution vector."""
    accuracy = float("nan")
    if config.local.eval_clients:
        accuracy = evaluate(model, data.split.test, device=device).accuracy
    vector, clipped = np.zeros(0), 0.0
    train_loss = report.losses[-1] if report.losses else float("nan")
    if dpsgd is not None:
        # Record-level DP covers the DP-SGD model and what is computed from it. The loss on
        # private batches and the shard size are neither: they stay on the node (FedAvg then
        # weighs its clients equally, as DP-FedAvg does).
        train_loss, num_examples = float("nan"), 1
    if contribute:
        vector, clipped = teacher_contribution(config, data, partition_id, model, device=device)
        if send_weights:  # FedDF as published: the weights ride in the same sum
            block = client_weights_block(config, data, model, pushed, num_examples)
            vector = np.concatenate([vector, block])
        vector = np.concatenate([vector, stats_block(accuracy, train_loss, clipped)])
    return LocalResult(
        vector=vector,
        num_examples=num_examples,
        train_loss=train_loss,
        client_accuracy=accuracy,
        clipped_fraction=clipped,
        dpsgd_history=[] if dpsgd is None else dpsgd.history,
        dpsgd_epsilon=math.nan if dpsgd is None else dpsgd.epsilon,
    )
