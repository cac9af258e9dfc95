"""A FedProx client's round (Li et al., MLSys 2020): FedAvg's local training plus the
proximal term ``mu / 2 * ||w - w_global||^2``, free of any transport.

The server side is FedAvg's round (``fedkd.fl.fedavg``, ``method = fedprox``), which sends
``mu`` in every train message (``proximal-mu``, as Flower's ``FedProx`` strategy does), and the
client adds the term to its loss.
Everything else is what a FedAvg client does in :func:`fedkd.fl.client_work.local_round`
(same epochs, warm-up, seeds and evaluation), so ``mu = 0`` reproduces a FedAvg client
exactly (a test checks it): the two baselines differ by the term and nothing else.
"""

from __future__ import annotations

from fedkd.fl.client_work import LocalResult, local_round
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
    return local_round(
        config,
        data,
        partition_id,
        model,
        server_round=server_round,
        contribute=False,
        first_round=first_round,
        proximal_mu=mu,
    )
