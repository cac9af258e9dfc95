"""FedDF as published (Lin et al., NeurIPS 2020): weights averaged, then distilled, both summed
securely.

Each round the clients train the pushed global model on their shards and send two things: their
weights, for the server to average (FedAvg), and their logits on the public set, for the server
to build the ensemble teacher. The server then distills the averaged model on the public set
against that teacher. Here both sums are one secure sum: a client's contribution vector is the
FedKD one with a weights block inserted before its statistics::

    w ⊙ f(logits)  (P*C)  |  w  (C)  |  s · clip(Δ / R)  (D)  |  s  (1)  |  stats

where ``Δ = θ - θ_global`` is the change the client's local training made to the ``D`` float
weights it was sent, ``R`` the clip range of a change (``secagg-weights-clip``) and
``s = n_k / N · b`` its shard size ``n_k`` over the pool's ``N``, times the quantiser's range
``b`` (every entry stays within ``±b``, so the fixed-point bits buy precision). The server reads
``θ_avg = θ_global + R · Σ s_k clip(Δ_k / R) / Σ s_k``: FedAvg's shard-size-weighted mean of
the clients' weights, and never one client's. Summing changes rather than weights (as
Bonawitz et al.'s secure FedAvg does) spends the fixed-point range on what varies: a round of
Adam at lr 1e-3 moves a weight by at most about lr times its steps, well inside ``R = 1``.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from fedkd.data import DataSplit
from fedkd.distill import evaluate
from fedkd.fl.config import FedConfig
from fedkd.fl.contribution import max_count, value_bound, vector_length
from fedkd.fl.data import FederatedData

log = logging.getLogger("fedkd.server")

Weights = dict[str, np.ndarray]


def float_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of a state dict's float tensors: the weights FedDF averages (integer buffers,
    such as BatchNorm's batch counter, are not summed and keep the global model's values)."""
    return [name for name, tensor in state.items() if tensor.is_floating_point()]


def weights_length(model: torch.nn.Module) -> int:
    """``D``: the number of float entries of ``model``'s state dict."""
    state = model.state_dict()
    return sum(state[name].numel() for name in float_tensors(state))


def contribution_length(config: FedConfig, split: DataSplit, model: torch.nn.Module) -> int:
    """The length of a round's contribution vector: FedKD's, plus ``D + 1`` for ``feddf``."""
    extra = weights_length(model) + 1 if config.method == "feddf" else 0
    return vector_length(split) + extra


def flat_weights(state: dict[str, torch.Tensor]) -> np.ndarray:
    """A state dict's float entries as one float64 vector ``(D,)``, in state-dict order."""
    names = float_tensors(state)
    if not names:
        return np.zeros(0)
    return np.concatenate([state[n].detach().cpu().numpy().ravel() for n in names]).astype(
        np.float64
    )


def weights_block(
    model: torch.nn.Module,
    pushed: dict[str, torch.Tensor],
    share: float,
    *,
    clip: float,
    bound: float,
) -> tuple[np.ndarray, float]:
    """A client's weights block ``[s · clip(Δ / clip), s]`` with ``s = share · bound`` and
    ``Δ`` its change to the pushed weights, and the fraction of changes the clip cut.

    Parameters
    ----------
    model
        The client's trained model (the student's architecture).
    pushed
        The state dict it was sent (before local training).
    share
        Its weight in the average, in ``[0, 1]``: shard size over the pool's size.
    clip
        ``R``: changes are clipped to ``[-R, R]`` before they are scaled.
    bound
        The quantiser's range: every entry lies in ``[-bound, bound]``.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must lie in [0, 1], got {share}")
    change = flat_weights(model.state_dict()) - flat_weights(pushed)  # (D,)
    clipped = float(np.mean(np.abs(change) > clip)) if change.size else 0.0
    scale = share * bound
    return np.concatenate([scale * np.clip(change / clip, -1.0, 1.0), [scale]]), clipped


def client_weights_block(
    config: FedConfig,
    data: FederatedData,
    model: torch.nn.Module,
    pushed: dict[str, torch.Tensor],
    num_examples: int,
) -> np.ndarray:
    """A client's weights block for the run: its shard's share of the pool (the bound
    :func:`~fedkd.fl.contribution.max_count` that scales the teacher weights too) and the
    run's clip range and quantiser range."""
    block, clipped = weights_block(
        model,
        pushed,
        num_examples / max_count(config, data),
        clip=config.secagg.weights_clip,
        bound=value_bound(config),
    )
    if clipped > 0.01:  # the node's own log: the server cannot see one client's changes
        logging.getLogger("fedkd.client").warning(
            "%.1f%% of this round's weight changes exceeded secagg-weights-clip = %g and "
            "were clipped; raise it",
            100 * clipped,
            config.secagg.weights_clip,
        )
    return block


def average_from_block(block: np.ndarray, model: torch.nn.Module, *, clip: float) -> Weights | None:
    """The clients' averaged weights from a summed weights block and the global ``model`` they
    started from (``None`` when the block's weight sum is not positive), as a state dict;
    tensors that are not floats keep ``model``'s values.

    Raises
    ------
    ValueError
        When ``block`` is not ``D + 1`` long for ``model``.
    """
    state = model.state_dict()
    names = float_tensors(state)
    length = sum(state[n].numel() for n in names)
    if block.shape != (length + 1,):
        raise ValueError(f"weights block has shape {block.shape}, expected ({length + 1},)")
    total = float(block[-1])
    if not total > 0:
        return None
    flat = flat_weights(state) + clip * block[:-1] / total  # (D,)
    average: Weights = {}
    offset = 0
    for name, tensor in state.items():
        value = tensor.detach().cpu().numpy()
        if name in names:
            value = flat[offset : offset + value.size].reshape(value.shape).astype(value.dtype)
            offset += value.size
        average[name] = value
    return average


def start_from_average(
    student: torch.nn.Module,
    summed: np.ndarray,
    config: FedConfig,
    split: DataSplit,
    server_round: int,
) -> np.ndarray:
    """Load the clients' averaged weights into ``student`` (the global weights they were sent:
    the distillation then starts from the average) and return the teacher part of the summed
    vector (``P*C + C``)."""
    teacher_length = len(split.public) * split.num_classes + split.num_classes  # (P*C + C)
    average = average_from_block(summed[teacher_length:], student, clip=config.secagg.weights_clip)
    if average is None:
        log.warning(
            "round %d: the weights' sum is empty; distilling the last student", server_round
        )
    else:
        student.load_state_dict({k: torch.from_numpy(v) for k, v in average.items()})
        accuracy = evaluate(student, split.test).accuracy
        log.info("round %d: averaged weights %.4f before distillation", server_round, accuracy)
    return summed[:teacher_length]
