"""Classifier models with named hidden features, and their registry."""

from fedkd.models.base import FeatureModel
from fedkd.models.cnn import SmallCNN, build_cnn
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
    "MLP",
    "NORM_KINDS",
    "FeatureModel",
    "MobileNetV2",
    "ModelFactory",
    "ResNet18",
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
