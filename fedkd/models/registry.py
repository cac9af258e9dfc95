"""The model registry: names -> factories that build a :class:`FeatureModel`.

The built-in factories are imported on first use, so that naming a model (a run config's
check) needs no PyTorch; see :mod:`fedkd._lazy`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedkd.models.base import FeatureModel

ModelFactory = Callable[..., "FeatureModel"]

# name -> (module, factory): imported by _factory on first use
_BUILT_IN: dict[str, tuple[str, str]] = {
    "mlp": ("fedkd.models.mlp", "build_mlp"),
    "cnn": ("fedkd.models.cnn", "build_cnn"),
    "cnn_small": ("fedkd.models.cnn", "build_cnn_small"),
    "cnn_plain": ("fedkd.models.cnn", "build_cnn_plain"),
    "resnet18": ("fedkd.models.resnet", "build_resnet18"),
    "mobilenet_v2": ("fedkd.models.mobilenet", "build_mobilenet_v2"),
}
_MODELS: dict[str, ModelFactory] = {}  # registered, and the built-ins already imported


def _known(name: str) -> bool:
    return name in _MODELS or name in _BUILT_IN


def _factory(name: str) -> ModelFactory:
    if name not in _MODELS:
        module, attribute = _BUILT_IN[name]
        _MODELS[name] = getattr(importlib.import_module(module), attribute)
    return _MODELS[name]


def register_model(name: str, factory: ModelFactory) -> None:
    """Add a model factory under a new name.

    Parameters
    ----------
    name
        Registry name; must not be taken already.
    factory
        Called as ``factory(input_shape=(C, H, W), num_classes=K, **kwargs)``; must return a
        :class:`FeatureModel`.

    Raises
    ------
    ValueError
        If ``name`` is empty or already registered.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string; got {name!r}")
    if _known(name):
        raise ValueError(
            f"model {name!r} is already registered; taken names: {', '.join(available_models())}"
        )
    if not callable(factory):
        raise TypeError(f"factory for model {name!r} must be callable; got {factory!r}")
    _MODELS[name] = factory


def available_models() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(set(_MODELS) | set(_BUILT_IN))


def build_model(
    name: str, *, input_shape: tuple[int, int, int], num_classes: int, **kwargs: Any
) -> FeatureModel:
    """Build a registered model with random weights.

    Parameters
    ----------
    name
        One of :func:`available_models` (built in: ``"mlp"``, ``"cnn"`` (a small CNN with
        GroupNorm), ``"cnn_small"`` (its quarter width), ``"cnn_plain"`` (two conv layers, no
        normalisation), ``"resnet18"``, ``"mobilenet_v2"``).
    input_shape
        ``(C, H, W)`` of one input image.
    num_classes
        Number of output logits (at least 2).
    **kwargs
        Model-specific options (e.g. ``hidden`` for ``"mlp"``, ``norm`` for the conv models).

    Returns
    -------
    FeatureModel
        The model, in training mode.

    Raises
    ------
    ValueError
        Unknown name, or a malformed ``input_shape`` / ``num_classes``.
    TypeError
        An option the model does not accept (the message lists the accepted ones).
    """
    if not _known(name):
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    shape = _checked_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2; got {num_classes!r}")
    from fedkd.models.base import FeatureModel

    factory = _factory(name)
    _check_options(name, factory, kwargs)
    model = factory(input_shape=shape, num_classes=num_classes, **kwargs)
    if not isinstance(model, FeatureModel):
        raise TypeError(
            f"factory of model {name!r} returned {type(model).__name__}, not a FeatureModel"
        )
    return model


def _checked_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Return ``input_shape`` as a tuple of three positive ints or raise ``ValueError``."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise ValueError(f"input_shape must be (C, H, W) with positive ints; got {input_shape!r}")
    return (shape[0], shape[1], shape[2])


def _check_options(name: str, factory: ModelFactory, options: dict[str, Any]) -> None:
    """Raise ``TypeError`` naming the accepted options if ``options`` has unknown keys."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # signature unavailable (e.g. a C callable): let it decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = sorted(set(parameters) - {"input_shape", "num_classes"})
    unknown = sorted(set(options) - set(parameters))
    if unknown:
        raise TypeError(
            f"model {name!r} does not accept {', '.join(unknown)}; "
            f"accepted options: {', '.join(accepted) or '(none)'}"
        )
