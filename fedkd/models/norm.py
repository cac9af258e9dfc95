"""Normalisation layers selectable by name, shared by the convolutional models."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

NORM_KINDS = ("group", "batch", "none")
_MAX_GROUPS = 32


def group_count(channels: int) -> int:
    """Largest power of two ``<= 32`` that divides ``channels`` (the GroupNorm group count)."""
    groups = _MAX_GROUPS
    while channels % groups:
        groups //= 2
    return groups


def make_norm(kind: str, channels: int) -> nn.Module:
    """Build a 2-D normalisation layer.

    Parameters
    ----------
    kind
        ``"group"`` (GroupNorm, batch-size independent), ``"batch"`` (BatchNorm2d) or ``"none"``
        (identity).
    channels
        Number of feature maps to normalise.

    Returns
    -------
    nn.Module
        The layer.
    """
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; accepted: {', '.join(NORM_KINDS)}")


def norm_factory(kind: str) -> Callable[[int], nn.Module]:
    """Return ``channels -> layer`` for ``kind`` (the ``norm_layer`` argument torchvision takes)."""
    make_norm(kind, 32)  # validates kind before any model is built

    def factory(channels: int) -> nn.Module:
        return make_norm(kind, channels)

    return factory
