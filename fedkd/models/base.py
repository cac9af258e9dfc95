"""The base class of every registry model: logits plus named hidden features."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn


class FeatureModel(nn.Module, ABC):
    """A classifier that exposes its hidden layers by name.

    Subclasses set ``feature_names`` (shallow -> deep, never ``"logits"``) and implement
    :meth:`forward_features`; :meth:`forward` returns the ``"logits"`` entry of it, so both paths
    run exactly the same computation.

    Parameters
    ----------
    input_shape
        ``(C, H, W)`` of one input image.
    num_classes
        Number of output logits.
    feature_names
        Ordered hidden-layer names, shallow -> deep.
    """

    feature_names: tuple[str, ...]

    def __init__(
        self, *, input_shape: tuple[int, int, int], num_classes: int, feature_names: tuple[str, ...]
    ) -> None:
        super().__init__()
        if not feature_names:
            raise ValueError("a FeatureModel needs at least one named hidden feature")
        if "logits" in feature_names or len(set(feature_names)) != len(feature_names):
            raise ValueError(
                f"feature_names must be unique and must not contain 'logits'; got {feature_names}"
            )
        self.input_shape = input_shape
        self.num_classes = num_classes
        self.feature_names = tuple(feature_names)

    @abstractmethod
    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Run the model and return every hidden feature, then the logits.

        Parameters
        ----------
        x
            Input batch ``(B, C, H, W)``.

        Returns
        -------
        dict[str, Tensor]
            Keys ``feature_names`` in order, then ``"logits"`` ``(B, num_classes)``; features keep
            their natural shape, ``(B, C, H, W)`` or ``(B, D)``.
        """

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits ``(B, num_classes)`` of the input batch ``(B, C, H, W)``."""
        return self.forward_features(x)["logits"]

    def check_input(self, x: Tensor, *, exact_size: bool = False, min_size: int = 1) -> None:
        """Raise ``ValueError`` unless ``x`` is a ``(B, C, H, W)`` batch this model accepts.

        Parameters
        ----------
        x
            The input batch.
        exact_size
            Also require ``H, W`` to equal those of ``input_shape`` (models with a fixed-size
            linear input); otherwise only the channel count must match.
        min_size
            Smallest accepted ``H`` and ``W``.
        """
        channels, height, width = self.input_shape
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(
                f"{type(self).__name__} expects a batch of shape (B, {channels}, H, W); "
                f"got {tuple(x.shape)}"
            )
        if exact_size and tuple(x.shape[2:]) != (height, width):
            raise ValueError(
                f"{type(self).__name__} expects images of size {height}x{width}; "
                f"got {tuple(x.shape[2:])}"
            )
        if min(x.shape[2:]) < min_size:
            raise ValueError(
                f"{type(self).__name__} needs images of at least {min_size}x{min_size}; "
                f"got {tuple(x.shape[2:])}"
            )
