"""torchvision's ResNet-18 adapted to small grey or colour images."""

from __future__ import annotations

from torch import Tensor, nn

from fedkd.models.base import FeatureModel
from fedkd.models.norm import norm_factory

STEM_CHANNELS = 64  # torchvision's ResNet stem width


class ResNet18(FeatureModel):
    """torchvision ``resnet18(weights=None)`` with a small-image stem (random init).

    The 7x7 stride-2 stem and the max-pool of the ImageNet model would shrink an 8x8 digit to
    2x2 before the first residual stage; here the stem is a 3x3 stride-1 conv over ``C`` input
    channels and the max-pool is removed (the usual CIFAR adaptation). The stride-2 stages then
    give 8x8 -> 8, 4, 2, 1 and 32x32 -> 32, 16, 8, 4 (a padded stride-2 conv keeps a 1x1 map at
    1x1, so every image size of at least 1x1 works).

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` of one image.
    num_classes
        Number of output logits.
    norm
        ``"batch"`` (torchvision's default), ``"group"`` (batch-size independent, suits federated
        clients with tiny batches) or ``"none"``.

    Notes
    -----
    Features: ``"layer1"`` ... ``"layer4"`` ``(B, C_i, H_i, W_i)`` and ``"pool"`` ``(B, 512)``.
    With ``norm="batch"`` an 8x8 input reaches ``layer4`` as 1x1, so a training batch of one
    sample has a single value per channel and BatchNorm raises; use ``norm="group"`` or keep
    training batches larger than one.
    """

    def __init__(
        self, *, input_shape: tuple[int, int, int], num_classes: int, norm: str = "batch"
    ) -> None:
        names = ("layer1", "layer2", "layer3", "layer4", "pool")
        super().__init__(input_shape=input_shape, num_classes=num_classes, feature_names=names)
        from torchvision.models import resnet18  # lazy: importing torchvision costs seconds

        net = resnet18(weights=None, num_classes=num_classes, norm_layer=norm_factory(norm))
        net.conv1 = nn.Conv2d(
            input_shape[0], STEM_CHANNELS, kernel_size=3, stride=1, padding=1, bias=False
        )
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
        self.net = net

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Return ``{"layer1": ..., "layer4": ..., "pool": (B, 512), "logits": (B, K)}``."""
        self.check_input(x)
        net = self.net
        h = net.relu(net.bn1(net.conv1(x)))  # (B, 64, H, W)
        out: dict[str, Tensor] = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            h = getattr(net, name)(h)
            out[name] = h
        pooled = net.avgpool(h).flatten(1)  # (B, 512)
        out["pool"] = pooled
        out["logits"] = net.fc(pooled)
        return out


# Registry factory of "resnet18": the class itself (its keyword-only __init__).
build_resnet18 = ResNet18
