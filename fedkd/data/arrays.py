"""In-memory dataset types: :class:`ArrayDataset`, :class:`TrainTest` and :class:`DataSplit`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """Images and integer labels held as numpy arrays.

    Parameters
    ----------
    x : np.ndarray
        Images, ``(N, C, H, W)``; stored as float32 (converted if needed). Datasets from
        :func:`fedkd.data.load_split` hold values in ``[0, 1]``.
    y : np.ndarray
        Integer class labels, ``(N,)``; stored as int64 (converted if needed).

    Raises
    ------
    ValueError
        If ``x`` is not 4-D, ``y`` is not 1-D with integer values, or their lengths differ.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        x = np.asarray(self.x, dtype=np.float32)
        y_raw = np.asarray(self.y)
        if x.ndim != 4:
            raise ValueError(f"x must have shape (N, C, H, W); got shape {x.shape}")
        if y_raw.ndim != 1:
            raise ValueError(f"y must have shape (N,); got shape {y_raw.shape}")
        if y_raw.size and not np.issubdtype(y_raw.dtype, np.integer):
            raise ValueError(f"y must hold integer class labels; got dtype {y_raw.dtype}")
        if len(x) != len(y_raw):
            raise ValueError(f"x and y differ in length: {len(x)} images, {len(y_raw)} labels")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y_raw.astype(np.int64, copy=False))

    def __len__(self) -> int:
        """Number of samples."""
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray) -> ArrayDataset:
        """Return the samples at ``indices`` (copied, in that order).

        Parameters
        ----------
        indices : np.ndarray
            1-D integer positions in ``[0, len(self))``; repeats are allowed.

        Returns
        -------
        ArrayDataset
            A new dataset holding ``x[indices]`` and ``y[indices]``.

        Raises
        ------
        ValueError
            If ``indices`` is not a 1-D integer array or holds an out-of-range position.
        """
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise ValueError(f"indices must be 1-D; got shape {idx.shape}")
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be integers; got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(
                f"indices must lie in [0, {len(self)}); got range [{idx.min()}, {idx.max()}]"
            )
        return ArrayDataset(x=self.x[idx], y=self.y[idx])


@dataclass(frozen=True)
class TrainTest:
    """A dataset that ships its own test set (MNIST-style ``train-*`` and ``t10k-*`` files).

    :func:`fedkd.data.load_split` draws the private pool and the public set from ``train``
    (disjoint) and the test set from ``test``, as the literature evaluates on the official
    test images.
    """

    train: ArrayDataset
    test: ArrayDataset


@dataclass(frozen=True)
class DataSplit:
    """A dataset split three ways for federated distillation.

    Attributes
    ----------
    name : str
        Registry name of the dataset the split came from.
    private : ArrayDataset
        Pool that is partitioned among the clients.
    public : ArrayDataset
        Shared public set; its labels are kept for evaluation only.
    test : ArrayDataset
        Held-out test set.
    num_classes : int
        Number of classes (largest label + 1 over the whole dataset).
    input_shape : tuple[int, int, int]
        Shape of one image, ``(C, H, W)``.
    """

    name: str
    private: ArrayDataset
    public: ArrayDataset
    test: ArrayDataset
    num_classes: int
    input_shape: tuple[int, int, int]
