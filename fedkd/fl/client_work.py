"""What one client does in a round, free of any transport.

FedDF: start from the pushed student, train on the private shard, predict the public set.
FedMD: keep one's own model (any architecture), first *digest* the pushed teacher's soft
targets on the public set, then *revisit* the private shard, then predict the public set.
The prediction becomes a teacher contribution (``fedkd.distill.teacher``) that is summed
securely with the other clients'.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from fedkd.distill import (
    client_contribution,
    distill,
    evaluate,
    predict_logits,
    train_supervised,
)
from fedkd.fl.config import FedConfig
from fedkd.fl.data import FederatedData
from fedkd.models import FeatureModel, build_model


@dataclass(frozen=True)
class LocalResult:
    """A client's round: its contribution vector and what it reports about itself."""

    vector: np.ndarray  # (P*C + C,) float64: concat(w ⊙ f(logits), w), scaled into [-clip, clip]
    num_examples: int
    train_loss: float
    client_accuracy: float  # the local model on the test set (NaN when not evaluated)
    clipped_fraction: float  # share of public-set logits cut at ±secagg-clip·T
    seconds: float


def contribution_scale(data: FederatedData) -> float:
    """Common factor applied to every client's vector so weights stay within [0, 1].

    A client's per-class weight is at most its sample count, which is at most the pool size;
    dividing by the (public) pool size bounds it by 1 and leaves every weighted mean unchanged.
    """
    return 1.0 / float(len(data.split.private))


def new_client_model(config: FedConfig, data: FederatedData, partition_id: int) -> FeatureModel:
    """A freshly initialised local model of the architecture this partition runs."""
    torch.manual_seed(config.seed * 100_003 + partition_id)
    return build_model(
        config.model_for_partition(partition_id),
        input_shape=data.split.input_shape,
        num_classes=data.split.num_classes,
    )


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
        FedMD: the previous round's ensemble teacher on the public set ``(P, C)``, digested
        before local training. ``None`` in the first round or in FedDF.
    contribute
        Compute the teacher contribution (false for FedAvg/local rounds).
    """
    start = time.perf_counter()
    local = config.local
    seed = config.seed * 1_000_003 + server_round * 1_009 + partition_id
    public_x = data.split.public.x
    if teacher_logits is not None and local.digest_epochs > 0:
        if teacher_logits.shape != (len(public_x), data.split.num_classes):
            raise ValueError(
                f"teacher logits have shape {teacher_logits.shape}, expected "
                f"{(len(public_x), data.split.num_classes)} (public set x classes)"
            )
        distill(
            model,
            public_x,
            teacher_logits=teacher_logits,
            temperature=config.distill.temperature,
            epochs=local.digest_epochs,
            batch_size=config.distill.batch_size,
            lr=local.lr,
            device="cpu",
            seed=seed,
        )
    train = data.client_train(partition_id)
    report = train_supervised(
        model,
        train,
        epochs=local.epochs + (local.warmup_epochs if first_round else 0),
        batch_size=local.batch_size,
        lr=local.lr,
        device="cpu",
        seed=seed,
        optimizer=local.optimizer,
    )
    accuracy = float("nan")
    if local.eval_clients:
        accuracy = evaluate(model, data.split.test, device="cpu").accuracy
    vector, clipped = np.zeros(0), 0.0
    if contribute:
        vector, clipped = teacher_contribution(config, data, partition_id, model)
    return LocalResult(
        vector=vector,
        num_examples=len(train),
        train_loss=report.losses[-1] if report.losses else float("nan"),
        client_accuracy=accuracy,
        clipped_fraction=clipped,
        seconds=time.perf_counter() - start,
    )


def teacher_contribution(
    config: FedConfig, data: FederatedData, partition_id: int, model: FeatureModel
) -> tuple[np.ndarray, float]:
    """A client's contribution vector to the teacher sum, and the share of logits clipped.

    Logits are clipped at ``±secagg-clip · T`` (the quantiser's range after the client's
    temperature), then turned into the rule's weighted terms and scaled into [0, 1] weights.
    """
    logits = predict_logits(model, data.split.public.x, device="cpu").astype(np.float64)
    bound = config.secagg.clip * config.teacher.temperature
    clipped = float(np.mean(np.abs(logits) > bound))
    contribution = client_contribution(
        np.clip(logits, -bound, bound),  # (public, classes)
        config=config.teacher,
        label_counts=data.label_counts(partition_id),
        num_samples=len(data.parts[partition_id]),
    )
    return contribution.to_vector() * contribution_scale(data), clipped
