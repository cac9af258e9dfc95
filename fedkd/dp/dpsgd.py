"""Record-level DP for a client's local training: DP-SGD through Opacus.

:func:`dp_train` trains a model on one client's private shard with per-example gradient
clipping and Gaussian noise (Opacus' ``PrivacyEngine``, Poisson-sampled batches), and continues
the client's own RDP accountant across rounds: the accountant's history (noise multiplier,
sample rate, steps) is returned, and passed back in the next round, so the epsilon reported is
that of every step the client has taken in the run: from dp-accounting's PLD accountant, the
one client-level DP uses (and the noise multiplier is calibrated with,
:func:`fedkd.fl.privacy.dpsgd_noise`), with Opacus' RDP figure beside it as a cross-check.

The noise and the Poisson sampling draw from generators seeded by the operating system or by the
node's own secret, never by the run seed (the server knows that); this is not Opacus'
``secure_mode`` (a CSPRNG), which would need ``torchcsprng``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import secrets
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import dp_accounting
import numpy as np
import torch
import torch.nn.functional as F
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from opacus.data_loader import DPDataLoader
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedkd.distill.recipe import TrainReport
from fedkd.dp.accounting import epsilon_of, run_event

History = list[tuple[float, float, int]]  # Opacus accountant history: (z, sample rate, steps)


@dataclass
class DPSGDReport(TrainReport):
    """One DP-SGD training run of a client (a :class:`TrainReport` with its privacy)."""

    epsilon: float = float("nan")  # of all the client's steps so far, at ``delta`` (PLD)
    epsilon_rdp: float = float("nan")  # the same from Opacus' RDP accountant (cross-check)
    noise_multiplier: float = 0.0
    sample_rate: float = 0.0
    steps: int = 0  # this run's
    history: History = field(default_factory=list)  # the accountant's, to pass back next round


def _batches(num_samples: int, batch_size: int) -> int:
    """Length of the batch loader ``DPDataLoader`` samples from: ``ceil(n / batch)``."""
    if num_samples < 1:
        raise ValueError(f"DP-SGD needs at least one training sample, got {num_samples}")
    if batch_size < 1:
        raise ValueError(f"DP-SGD needs a batch size of at least 1, got {batch_size}")
    return math.ceil(num_samples / batch_size)


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Steps of one epoch as Opacus' ``DPDataLoader`` runs them: ``int(1 / sample_rate)``.

    The float round trip is one short of ``ceil(n / batch)`` for some lengths (105 -> 104),
    so the plan does the same as the loader.
    """
    return int(1.0 / sample_rate(num_samples, batch_size))


def sample_rate(num_samples: int, batch_size: int) -> float:
    """Poisson sampling rate of a record: ``1 / ceil(n / batch)``, as ``DPDataLoader`` samples.

    It is not ``batch_size / num_samples``: a shard that is not a multiple of the batch gets
    one more step per epoch at a slightly lower rate, and a noise multiplier calibrated for
    the other pair can overspend the target (4.67 for 4 at 50 records, batch 32, 3 epochs).
    """
    return 1.0 / _batches(num_samples, batch_size)


def merged_history(history: Sequence[tuple[float, float, int]]) -> History:
    """The history with runs of equal (noise, rate) entries merged into one: the same steps,
    so the same privacy, but one self-composed event per run instead of one per round (a
    client's epsilon after round 10 then costs what it cost after round 1)."""
    merged: History = []
    for z, q, steps in history:
        if merged and merged[-1][:2] == (float(z), float(q)):
            merged[-1] = (float(z), float(q), merged[-1][2] + int(steps))
        else:
            merged.append((float(z), float(q), int(steps)))
    return merged


def epsilon_of_history(
    history: Sequence[tuple[float, float, int]], delta: float, *, accountant: str = "pld"
) -> float:
    """Epsilon at ``delta`` of an accountant history of (noise multiplier, sample rate, steps)
    entries: dp-accounting's ``pld`` (the figure reported and calibrated to) or ``rdp`` (the
    cross-check; Opacus' own RDP accountant, which the training engine keeps). 0 when empty."""
    if not history:
        return 0.0
    entries = merged_history(history)
    if accountant == "rdp":
        opacus_rdp = RDPAccountant()
        opacus_rdp.history = entries
        return float(opacus_rdp.get_epsilon(delta))
    event = dp_accounting.ComposedDpEvent([run_event(z, q, s) for z, q, s in entries])
    return epsilon_of(event, delta, accountant=accountant)


def check_model(model: nn.Module) -> None:
    """Raise ``ValueError`` when Opacus cannot compute per-example gradients of ``model``."""
    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        raise ValueError(
            "DP-SGD cannot train this model: " + "; ".join(str(p) for p in problems[:3])
        )


def _without_inplace_activations(model: nn.Module) -> None:
    """Opacus' backward hooks forbid in-place ops on a hooked layer's output (``ReLU(inplace)``
    after a conv): switch them to out-of-place, which changes no weights."""
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False  # type: ignore[assignment]


def _trained_parameters(model: nn.Module, only: str | None) -> list[nn.Parameter]:
    """The parameters DP-SGD trains: all, or those of the submodule named ``only``."""
    if only is None:
        return [p for p in model.parameters() if p.requires_grad]
    try:
        part = model.get_submodule(only)
    except AttributeError:
        raise ValueError(
            f"DP-SGD was asked to train only '{only}', which {type(model).__name__} does not have"
        ) from None
    trained = [p for p in part.parameters() if p.requires_grad]
    if not trained:
        raise ValueError(f"DP-SGD was asked to train only '{only}', which has no parameters")
    return trained


@contextlib.contextmanager
def _training_only(model: nn.Module, trained: list[nn.Parameter]) -> Iterator[None]:
    """Freeze every parameter of ``model`` but ``trained`` for the block: Opacus then computes
    no per-example gradients (nor their cost) for them, and the optimiser never sees them."""
    kept = {id(p) for p in trained}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in kept]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


def _generator(seed: int | None, stream: int) -> torch.Generator:
    """OS entropy (``seed`` None), else one of two streams derived from the node's seed."""
    if seed is None:
        return torch.Generator().manual_seed(secrets.randbits(63))
    mixed = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(mixed[:8], "big") >> 1)


def _optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")


def _epoch(module: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader) -> float:
    """One pass over a Poisson-sampled loader; the mean loss over the samples drawn."""
    total, seen = 0.0, 0
    for xb, yb in loader:
        optimizer.zero_grad(set_to_none=True)
        if len(xb) > 0:
            loss = F.cross_entropy(module(xb), yb)
            loss.backward()
            total, seen = total + loss.item() * len(xb), seen + len(xb)
        # An empty Poisson batch still takes a (pure-noise) step: skipping it would make the
        # number of noisy releases depend on the data.
        optimizer.step()
    return total / seen if seen else float("nan")


def _run_epochs(
    module: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, report: DPSGDReport
) -> None:
    """``report.epochs`` DP-SGD passes over the loader, recording each one's loss and steps."""
    with warnings.catch_warnings():
        # The first layer's input needs no gradient, so torch notes that its full
        # backward hook fires on the output only -- which is all Opacus reads.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(report.epochs):
            report.losses.append(_epoch(module, optimizer, loader))
            report.steps += len(loader)


def dp_train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
    delta: float,
    optimizer: str = "adam",
    history: Sequence[tuple[float, float, int]] = (),
    only: str | None = None,
    seed: int | None = None,
) -> DPSGDReport:
    """Train ``model`` in place with DP-SGD on ``(x, y)`` and continue the client's accountant.

    Parameters
    ----------
    model
        Maps ``(B, C, H, W)`` to logits; no BatchNorm (see :func:`check_model`). Left in train
        mode with Opacus' hooks removed, so it is the plain module again afterwards.
    x, y
        The private shard: float32 ``(N, C, H, W)`` and int64 ``(N,)``.
    epochs, batch_size, lr, optimizer
        Expected batch size of the Poisson sampling, and the optimiser (DP-Adam or DP-SGD).
    noise_multiplier, max_grad_norm
        Opacus' noise std over the per-example clip, and the clip.
    delta
        Delta at which the epsilon is reported.
    history
        The accountant history of the client's earlier rounds (empty in its first).
    only
        The name of the one submodule to train (e.g. ``"head"``); every other parameter stays
        as it is. The guarantee is the same: each step still clips every example's gradient
        (of what is trained) to ``max_grad_norm`` and adds the same noise.
    seed
        Seeds the Poisson sampling and the noise; it must be unknown to the server (a node
        derives it from its own secret and the training's inputs, so a repeated training
        repeats its noise). ``None``: OS entropy.

    Returns
    -------
    DPSGDReport
    """
    check_model(model)
    _without_inplace_activations(model)
    trained = _trained_parameters(model, only)
    model.train()
    dataset = TensorDataset(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))
    base = DataLoader(dataset, batch_size=min(batch_size, len(dataset)))
    loader = DPDataLoader.from_data_loader(base, generator=_generator(seed, 0))
    report = DPSGDReport(epochs=epochs, noise_multiplier=noise_multiplier)
    with _training_only(model, trained):
        with warnings.catch_warnings():  # Opacus warns about its non-secure RNG on every call
            warnings.simplefilter("ignore")
            engine = PrivacyEngine(accountant="rdp")
            engine.accountant.history = [(float(z), float(q), int(s)) for z, q, s in history]
            module, dp_optimizer, dp_loader = engine.make_private(
                module=model,
                optimizer=_optimizer(optimizer, trained, lr),
                data_loader=loader,
                noise_multiplier=noise_multiplier,
                max_grad_norm=max_grad_norm,
                poisson_sampling=False,  # the loader above is Poisson-sampled already
                noise_generator=_generator(seed, 1),
            )
        report.sample_rate = 1.0 / len(dp_loader)
        try:
            _run_epochs(module, dp_optimizer, dp_loader, report)
        finally:
            module._close()  # type: ignore[operator]  # hooks and per-sample buffers off the model
    report.history = list(engine.accountant.history)
    report.epsilon = epsilon_of_history(report.history, delta)
    report.epsilon_rdp = float(engine.accountant.get_epsilon(delta))
    return report
