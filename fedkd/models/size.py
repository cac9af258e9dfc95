"""Model size: parameter counts and serialized bytes."""

from __future__ import annotations

import io

import torch
from torch import nn


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Count the scalar parameters of a model.

    Parameters
    ----------
    model
        Any module.
    trainable_only
        Count only parameters with ``requires_grad``.

    Returns
    -------
    int
        Number of scalars (shared parameters counted once).
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_size_bytes(model: nn.Module) -> int:
    """Return the size in bytes of ``torch.save(model.state_dict())`` (parameters and buffers).

    Parameters
    ----------
    model
        Any module.

    Returns
    -------
    int
        Bytes of the serialized state dict.
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
