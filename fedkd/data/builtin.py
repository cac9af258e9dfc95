"""Datasets that need no files: scikit-learn's ``digits`` and a seeded synthetic set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedkd.data.arrays import ArrayDataset

SYNTHETIC_NUM_SAMPLES = 2000
SYNTHETIC_NUM_CLASSES = 10
SYNTHETIC_NOISE = 0.3


def load_digits(
    *, data_root: str | Path | None = None, download: bool = False, seed: int = 0
) -> ArrayDataset:
    """Load scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes).

    The data ships inside scikit-learn, so nothing is read from disk or downloaded;
    ``data_root``, ``download`` and ``seed`` are accepted for the loader protocol and ignored.

    Parameters
    ----------
    data_root : str or Path, optional
        Ignored.
    download : bool
        Ignored.
    seed : int
        Ignored (the data are fixed).

    Returns
    -------
    ArrayDataset
        Images ``(1797, 1, 8, 8)`` float32 in ``[0, 1]`` (pixel / 16), labels int64.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits  # slow import, used here only

    bunch = sklearn_load_digits()
    x = (bunch.images[:, None, :, :] / 16.0).astype(np.float32)  # (N, 1, 8, 8)
    return ArrayDataset(x=x, y=bunch.target.astype(np.int64))


def make_synthetic(
    *,
    num_samples: int = SYNTHETIC_NUM_SAMPLES,
    num_classes: int = SYNTHETIC_NUM_CLASSES,
    noise: float = SYNTHETIC_NOISE,
    image_size: int = 8,
    seed: int = 0,
) -> ArrayDataset:
    """Generate a learnable image classification set: class prototypes plus noise.

    Each class has a random prototype image in ``[0, 1]``; a sample is its class prototype
    plus Gaussian noise of standard deviation ``noise``, clipped to ``[0, 1]``. Classes are
    balanced (sizes differ by at most one) and samples come in random order.

    Parameters
    ----------
    num_samples : int
        Number of samples, at least ``num_classes``.
    num_classes : int
        Number of classes, at least 2.
    noise : float
        Standard deviation of the pixel noise, >= 0.
    image_size : int
        Height and width of the single-channel images.
    seed : int
        Seed of the generator; equal seeds give equal data.

    Returns
    -------
    ArrayDataset
        Images ``(num_samples, 1, image_size, image_size)`` float32, labels int64.

    Raises
    ------
    ValueError
        If a size is too small or ``noise`` is negative.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2; got {num_classes}")
    if num_samples < num_classes:
        raise ValueError(f"num_samples ({num_samples}) must be >= num_classes ({num_classes})")
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1; got {image_size}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0; got {noise}")
    rng = np.random.default_rng(seed)
    shape = (1, image_size, image_size)
    prototypes = rng.uniform(0.0, 1.0, size=(num_classes, *shape))  # (classes, 1, H, W)
    y = rng.permutation(np.arange(num_samples) % num_classes).astype(np.int64)
    x = prototypes[y] + rng.normal(0.0, noise, size=(num_samples, *shape))  # (N, 1, H, W)
    return ArrayDataset(x=np.clip(x, 0.0, 1.0).astype(np.float32), y=y)


def load_synthetic(
    *,
    data_root: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    num_samples: int = SYNTHETIC_NUM_SAMPLES,
) -> ArrayDataset:
    """Registry loader for ``"synthetic"``: :func:`make_synthetic` with its defaults.

    Parameters
    ----------
    data_root : str or Path, optional
        Ignored.
    download : bool
        Ignored.
    seed : int
        Seed of the generator.
    num_samples : int
        How many samples to generate (large federations need many).

    Returns
    -------
    ArrayDataset
        2,000 images ``(1, 8, 8)`` in 10 balanced classes.
    """
    return make_synthetic(num_samples=num_samples, seed=seed)
