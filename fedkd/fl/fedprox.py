"""A FedProx client's round (Li et al., MLSys 2020): FedAvg's local training plus the
proximal term ``mu / 2 * ||w - w_global||^2``, free of any transport.

The server side is Flower's own ``FedProx`` strategy (``server/baselines.py``); it sends
``mu`` in every train message (``proximal-mu``), and the client adds the term to its loss.
Everything else is what a FedAvg client does in :func:`fedkd.fl.client_work.local_round`
(same epochs, warm-up, seeds and evaluation), so ``mu = 0`` reproduces a FedAvg client
exactly (a test checks it): the two baselines differ by the term and nothing else.
"""

from __future__ import annotations

import time

import numpy as np

from fedkd.distill import evaluate, train_supervised
from fedkd.fl.client_work import LocalResult
from fedkd.fl.config import FedConfig
from fedkd.fl.data import FederatedData
from fedkd.models import FeatureModel


def proximal_round(
    config: FedConfig,
    data: FederatedData,
    partition_id: int,
    model: FeatureModel,
    *,
    server_round: int,
    mu: float,
    first_round: bool = False,
) -> LocalResult:
    """Train the pushed global ``model`` (in place) on one client's shard with the proximal term.

    Parameters
    ----------
    config, data
        The run config and the federation's data.
    partition_id
        Which private shard this client holds.
    model
        The global weights just pushed; the proximal anchor is taken from them before the
        first step.
    server_round
        Seeds this round's shuffling (the same seed a FedAvg client uses).
    mu
        The proximal weight, ``>= 0`` (what the server's strategy sent).
    first_round
        Add the warm-up epochs, as a FedAvg client does for a fresh model.

    Returns
    -------
    LocalResult
        With an empty contribution vector (FedProx sends weights, not a contribution).
    """
    start = time.perf_counter()
    local = config.local
    # The seed of fedkd.fl.client_work.local_round: FedAvg and FedProx see the same batches.
    seed = config.seed * 1_000_003 + server_round * 1_009 + partition_id
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
        proximal_mu=mu,
    )
    accuracy = float("nan")
    if local.eval_clients:
        accuracy = evaluate(model, data.split.test, device="cpu").accuracy
    return LocalResult(
        vector=np.zeros(0),
        num_examples=len(train),
        train_loss=report.losses[-1] if report.losses else float("nan"),
        client_accuracy=accuracy,
        clipped_fraction=0.0,
        seconds=time.perf_counter() - start,
    )
