"""torchvision's MobileNetV2 adapted to small grey or colour images."""

from __future__ import annotations

from torch import Tensor, nn

from fedkd.models.base import FeatureModel
from fedkd.models.norm import norm_factory

# torchvision's ImageNet setting: expansion t, channels c, repeats n, stride s of each stage.
IMAGENET_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# Setting rows grouped into the named feature stages; "stage1" also holds the stem and "stage5"
# the final 1x1 conv to 1280 channels.
STAGE_ROWS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("stage1", (0,)),
    ("stage2", (1,)),
    ("stage3", (2,)),
    ("stage4", (3, 4)),
    ("stage5", (5, 6)),
)


def small_image_setting(min_side: int) -> list[list[int]]:
    """Inverted-residual setting for images whose smaller side is ``min_side`` pixels.

    The 24-channel stage keeps stride 1 (the CIFAR adaptation, total downsampling 8 instead of
    32), and any later stride-2 stage whose input is already 1x1 gets stride 1, so the spatial
    size never drops below one pixel: 8x8 -> 8, 8, 4, 2, 1 and 32x32 -> 32, 32, 16, 8, 4.

    Parameters
    ----------
    min_side
        ``min(H, W)`` of the input images.

    Returns
    -------
    list[list[int]]
        Rows ``[t, c, n, s]`` for torchvision's ``inverted_residual_setting``.
    """
    setting = [list(row) for row in IMAGENET_SETTING]
    setting[1][3] = 1
    side = min_side
    for row in setting:
        if row[3] == 2:
            if side <= 1:
                row[3] = 1
            else:
                side = (side + 1) // 2
    return setting


class MobileNetV2(FeatureModel):
    """torchvision ``mobilenet_v2(weights=None)`` with a small-image stem (random init).

    The stem conv is 3x3 stride 1 over ``C`` input channels instead of stride 2 over RGB, and the
    stage strides come from :func:`small_image_setting`.

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` of one image.
    num_classes
        Number of output logits.
    width_mult
        torchvision's channel width multiplier.
    norm
        ``"batch"`` (torchvision's default), ``"group"`` or ``"none"``.
    dropout
        Dropout probability before the classifier (torchvision's default 0.2).

    Notes
    -----
    Features: ``"stage1"`` ... ``"stage5"`` ``(B, C_i, H_i, W_i)`` (``"stage5"`` ends with the
    1x1 conv to 1280 channels) and ``"pool"`` ``(B, 1280)``. With ``norm="batch"`` an 8x8 input
    ends at 1x1, so a one-sample training batch makes BatchNorm raise; use ``norm="group"`` or
    training batches larger than one.
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width_mult: float = 1.0,
        norm: str = "batch",
        dropout: float = 0.2,
    ) -> None:
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive; got {width_mult}")
        names = tuple(name for name, _ in STAGE_ROWS) + ("pool",)
        super().__init__(input_shape=input_shape, num_classes=num_classes, feature_names=names)
        setting = small_image_setting(min(input_shape[1:]))
        from torchvision.models import mobilenet_v2  # lazy: importing torchvision costs seconds

        net = mobilenet_v2(
            weights=None,
            num_classes=num_classes,
            width_mult=width_mult,
            inverted_residual_setting=setting,
            norm_layer=norm_factory(norm),
            dropout=dropout,
        )
        stem_channels = net.features[0][0].out_channels
        stem = nn.Conv2d(input_shape[0], stem_channels, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(stem.weight, mode="fan_out")
        net.features[0][0] = stem
        self.net = net
        self.stage_ends = self._stage_ends(setting)

    @staticmethod
    def _stage_ends(setting: list[list[int]]) -> tuple[int, ...]:
        """Index into ``net.features`` one past the last module of each named stage."""
        blocks_before_row = [1]  # features[0] is the stem
        for row in setting:
            blocks_before_row.append(blocks_before_row[-1] + row[2])
        ends = [blocks_before_row[rows[-1] + 1] for _, rows in STAGE_ROWS]
        ends[-1] += 1  # the final 1x1 conv belongs to the last stage
        return tuple(ends)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Return ``{"stage1": ..., "stage5": ..., "pool": (B, 1280), "logits": (B, K)}``."""
        self.check_input(x)
        out: dict[str, Tensor] = {}
        h = x
        start = 0
        for (name, _), end in zip(STAGE_ROWS, self.stage_ends, strict=True):
            h = self.net.features[start:end](h)
            out[name] = h
            start = end
        pooled = nn.functional.adaptive_avg_pool2d(h, 1).flatten(1)  # (B, 1280)
        out["pool"] = pooled
        out["logits"] = self.net.classifier(pooled)
        return out


# Registry factory of "mobilenet_v2": the class itself (its keyword-only __init__).
build_mobilenet_v2 = MobileNetV2
