"""Classifier models with named hidden features, and their registry.

The names load on first use (:mod:`fedkd._lazy`): :func:`available_models` answers without
importing PyTorch, so a run config is checked without it.
"""

from typing import TYPE_CHECKING

from fedkd._lazy import lazy_exports

if TYPE_CHECKING:
    from fedkd.models.base import FeatureModel
    from fedkd.models.cnn import PlainCNN, SmallCNN, build_cnn
    from fedkd.models.mlp import MLP, build_mlp
    from fedkd.models.mobilenet import MobileNetV2, build_mobilenet_v2
    from fedkd.models.norm import NORM_KINDS
    from fedkd.models.registry import (
        ModelFactory,
        available_models,
        build_model,
        register_model,
    )
    from fedkd.models.resnet import ResNet18, build_resnet18
    from fedkd.models.size import count_parameters, model_size_bytes

__all__ = [
    "FeatureModel",
    "MLP",
    "MobileNetV2",
    "ModelFactory",
    "NORM_KINDS",
    "ResNet18",
    "PlainCNN",
    "SmallCNN",
    "available_models",
    "build_cnn",
    "build_mlp",
    "build_mobilenet_v2",
    "build_model",
    "build_resnet18",
    "count_parameters",
    "model_size_bytes",
    "register_model",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    __all__,
    (  # searched in this order: the registry, which needs no PyTorch, first
        "fedkd.models.registry",
        "fedkd.models.base",
        "fedkd.models.norm",
        "fedkd.models.size",
        "fedkd.models.cnn",
        "fedkd.models.mlp",
        "fedkd.models.mobilenet",
        "fedkd.models.resnet",
    ),
)
