"""A multilayer perceptron over flattened images."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from torch import Tensor, nn

from fedkd.models.base import FeatureModel


class MLP(FeatureModel):
    """Flatten -> ``Linear + ReLU`` per hidden width -> logits.

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` of one image; the model only accepts exactly this size.
    num_classes
        Number of output logits.
    hidden
        Widths of the hidden layers, named ``"fc1"``, ``"fc2"``, ... (post-ReLU, ``(B, width)``).
    dropout
        Dropout probability after each hidden layer (0 disables it).
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        hidden: Sequence[int] = (128, 64),
        dropout: float = 0.0,
    ) -> None:
        widths = tuple(int(w) for w in hidden)
        if not widths or min(widths) < 1:
            raise ValueError(f"hidden must list one or more positive widths; got {tuple(hidden)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1); got {dropout}")
        names = tuple(f"fc{i + 1}" for i in range(len(widths)))
        super().__init__(input_shape=input_shape, num_classes=num_classes, feature_names=names)
        in_features = prod(input_shape)
        self.hidden = nn.ModuleList()
        for width in widths:
            self.hidden.append(nn.Sequential(nn.Linear(in_features, width), nn.ReLU(inplace=True)))
            in_features = width
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(in_features, num_classes)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Return ``{"fc1": (B, w1), ..., "logits": (B, num_classes)}``."""
        self.check_input(x, exact_size=True)
        out: dict[str, Tensor] = {}
        h = x.flatten(1)  # (B, C*H*W)
        for name, layer in zip(self.feature_names, self.hidden, strict=True):
            h = layer(h)
            out[name] = h
            h = self.dropout(h)
        out["logits"] = self.head(h)
        return out


def build_mlp(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    hidden: Sequence[int] = (128, 64),
    dropout: float = 0.0,
) -> MLP:
    """Build an :class:`MLP` (registry name ``"mlp"``); see the class for the parameters."""
    return MLP(input_shape=input_shape, num_classes=num_classes, hidden=hidden, dropout=dropout)
