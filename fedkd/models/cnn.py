"""Small CNNs for 8x8 to 32x32 grey or colour images: the normalised default and a plain one."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from fedkd.models.base import FeatureModel
from fedkd.models.norm import make_norm

POOLED_SIZE = 2  # spatial size after the adaptive pool: (B, channels[-1], 2, 2)


class SmallCNN(FeatureModel):
    """Conv blocks -> adaptive average pool -> one hidden linear layer -> logits.

    Each block is ``conv3x3 (padding 1) -> norm -> ReLU``; all blocks but the last end with a 2x2
    max-pool, so two halvings (8x8 -> 2x2, 28x28 -> 7x7, 32x32 -> 8x8) come before the
    adaptive pool to a fixed 2x2. Any image of at least 4x4 pixels works.

    The default norm is GroupNorm. Federated clients train on small shards with tiny (even
    single-sample) final batches, where BatchNorm's batch statistics are noisy or undefined; its
    running statistics also differ between train and eval mode and between clients, so averaged
    weights (FedAvg) and logits computed on the public set in eval mode drift from what was
    trained. GroupNorm keeps the per-sample normalisation that makes a small CNN train fast
    (it reaches ~98% on sklearn digits in a few Adam epochs) without any batch dependence or state.

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` of one image (``H, W >= 4``).
    num_classes
        Number of output logits.
    channels
        Output channels of each conv block; features ``"conv1"``, ``"conv2"``, ...
    hidden
        Width of the hidden linear layer (feature ``"fc"``).
    norm
        ``"group"`` (default), ``"batch"`` or ``"none"``.
    dropout
        Dropout probability before the output layer.
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128),
        hidden: int = 128,
        norm: str = "group",
        dropout: float = 0.0,
    ) -> None:
        widths = tuple(int(c) for c in channels)
        if not widths or min(widths) < 1:
            raise ValueError(f"channels must list one or more positive widths; got {channels}")
        if hidden < 1:
            raise ValueError(f"hidden must be a positive width; got {hidden}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1); got {dropout}")
        min_side = 2 ** (len(widths) - 1)
        if min(input_shape[1:]) < min_side:
            raise ValueError(
                f"SmallCNN with {len(widths)} blocks needs images of at least "
                f"{min_side}x{min_side}; got {input_shape[1]}x{input_shape[2]}"
            )
        names = tuple(f"conv{i + 1}" for i in range(len(widths))) + ("fc",)
        super().__init__(input_shape=input_shape, num_classes=num_classes, feature_names=names)
        self.min_size = min_side
        blocks: list[nn.Module] = []
        in_channels = input_shape[0]
        for index, width in enumerate(widths):
            layers: list[nn.Module] = [
                nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=norm == "none"),
                make_norm(norm, width),
                nn.ReLU(inplace=True),
            ]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
            in_channels = width
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(POOLED_SIZE)
        self.fc = nn.Sequential(
            nn.Linear(in_channels * POOLED_SIZE * POOLED_SIZE, hidden), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_classes)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Return ``{"conv1": (B, c1, H', W'), ..., "fc": (B, hidden), "logits": (B, K)}``."""
        self.check_input(x, min_size=self.min_size)
        out: dict[str, Tensor] = {}
        h = x
        for name, block in zip(self.feature_names, self.blocks, strict=False):
            h = block(h)
            out[name] = h
        h = self.fc(self.pool(h).flatten(1))  # (B, hidden)
        out["fc"] = h
        out["logits"] = self.head(self.dropout(h))
        return out


# Registry factory of "cnn": the class itself, whose keyword-only __init__ is the factory signature.
build_cnn = SmallCNN


def build_cnn_small(
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    norm: str = "group",
    dropout: float = 0.0,
) -> SmallCNN:
    """A quarter-width ``cnn`` (channels 16/32/64, hidden 64): about 4x cheaper per sample on
    28x28 inputs, for many-client simulations on few CPU cores (registry name ``"cnn_small"``)."""
    return SmallCNN(
        input_shape=input_shape,
        num_classes=num_classes,
        channels=(16, 32, 64),
        hidden=64,
        norm=norm,
        dropout=dropout,
    )


class PlainCNN(FeatureModel):
    """Two conv blocks and two linear layers, no normalisation: the "CNN" of FedAvg papers.

    ``conv3x3 -> ReLU -> max-pool`` twice (32 and 64 channels), then a 64-unit hidden layer on
    the flattened maps and the logits: McMahan et al.'s MNIST CNN at a third of its width, and
    exactly the model of the reference FedAvg (``../shared/reference/fedavg_plain.py``), where
    it beat the GroupNorm ``cnn`` for FedAvg under label skew (docs/results.md). Images of at
    least 4x4 pixels; features ``"conv1"``, ``"conv2"``, ``"fc"``.
    """

    def __init__(
        self, *, input_shape: tuple[int, int, int], num_classes: int, hidden: int = 64
    ) -> None:
        if min(input_shape[1:]) < 4:
            raise ValueError(f"PlainCNN needs images of at least 4x4; got {input_shape[1:]}")
        super().__init__(
            input_shape=input_shape, num_classes=num_classes, feature_names=("conv1", "conv2", "fc")
        )
        self.conv1 = nn.Conv2d(input_shape[0], 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        flat = 64 * (input_shape[1] // 4) * (input_shape[2] // 4)
        self.fc = nn.Linear(flat, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Return ``{"conv1": (B, 32, H/2, W/2), "conv2": (B, 64, H/4, W/4), "fc": (B, hidden),
        "logits": (B, K)}``."""
        self.check_input(x, exact_size=True)
        conv1 = F.max_pool2d(F.relu(self.conv1(x)), 2)
        conv2 = F.max_pool2d(F.relu(self.conv2(conv1)), 2)
        fc = F.relu(self.fc(conv2.flatten(1)))
        return {"conv1": conv1, "conv2": conv2, "fc": fc, "logits": self.head(fc)}


# Registry factory of "cnn_plain".
build_cnn_plain = PlainCNN
