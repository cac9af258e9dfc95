"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision, stored under a data root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedkd.data.arrays import ArrayDataset

DEFAULT_DATA_ROOT = Path("data")


def _resolve_root(data_root: str | Path | None) -> Path:
    return DEFAULT_DATA_ROOT if data_root is None else Path(data_root)


def _open_both_splits(
    dataset_cls: Any, name: str, root: Path, download: bool, hint: str
) -> tuple[Any, Any]:
    try:
        train = dataset_cls(root=str(root), train=True, download=download)
        test = dataset_cls(root=str(root), train=False, download=download)
    except (RuntimeError, OSError) as err:  # torchvision reports missing files as RuntimeError
        if download:
            raise RuntimeError(
                f"downloading {name} into {root} failed ({err}); without internet access {hint}"
            ) from err
        raise FileNotFoundError(
            f"{name} files are missing under {root} ({err}). Pass download=True to fetch "
            f"them with torchvision (needs internet), or {hint}"
        ) from err
    return train, test


_IDX_HINT = (
    "use the 'idx' dataset with data_root set to a folder of IDX files "
    "(e.g. load_split('idx', data_root='/path/to/mnist'))"
)


def _load_mnist_like(dataset_cls: Any, name: str, root: Path, download: bool) -> ArrayDataset:
    train, test = _open_both_splits(dataset_cls, name, root, download, _IDX_HINT)
    images = np.concatenate([train.data.numpy(), test.data.numpy()])  # (N, 28, 28) uint8
    labels = np.concatenate([train.targets.numpy(), test.targets.numpy()])
    x = (images[:, None, :, :] / np.float32(255.0)).astype(np.float32)  # (N, 1, 28, 28)
    return ArrayDataset(x=x, y=labels.astype(np.int64))


def load_mnist(
    *, data_root: str | Path | None = None, download: bool = False, seed: int = 0
) -> ArrayDataset:
    """Load MNIST (train + test, 70,000 images) through torchvision.

    Parameters
    ----------
    data_root : str or Path, optional
        Folder torchvision reads from and downloads into (``MNIST/raw`` below it);
        defaults to ``./data``.
    download : bool
        Download the files when they are missing (needs internet).
    seed : int
        Ignored (the data are fixed).

    Returns
    -------
    ArrayDataset
        Images ``(70000, 1, 28, 28)`` float32 in ``[0, 1]``, labels int64.

    Raises
    ------
    FileNotFoundError
        If the files are missing and ``download`` is False.
    RuntimeError
        If the download fails.
    """
    from torchvision.datasets import MNIST  # heavy import, used here only

    return _load_mnist_like(MNIST, "MNIST", _resolve_root(data_root), download)


def load_fashion_mnist(
    *, data_root: str | Path | None = None, download: bool = False, seed: int = 0
) -> ArrayDataset:
    """Load Fashion-MNIST (train + test, 70,000 images) through torchvision.

    Parameters
    ----------
    data_root : str or Path, optional
        Folder torchvision reads from and downloads into (``FashionMNIST/raw`` below it);
        defaults to ``./data``.
    download : bool
        Download the files when they are missing (needs internet).
    seed : int
        Ignored (the data are fixed).

    Returns
    -------
    ArrayDataset
        Images ``(70000, 1, 28, 28)`` float32 in ``[0, 1]``, labels int64.

    Raises
    ------
    FileNotFoundError
        If the files are missing and ``download`` is False.
    RuntimeError
        If the download fails.
    """
    from torchvision.datasets import FashionMNIST  # heavy import, used here only

    return _load_mnist_like(FashionMNIST, "Fashion-MNIST", _resolve_root(data_root), download)


def load_cifar10(
    *, data_root: str | Path | None = None, download: bool = False, seed: int = 0
) -> ArrayDataset:
    """Load CIFAR-10 (train + test, 60,000 colour images) through torchvision.

    Parameters
    ----------
    data_root : str or Path, optional
        Folder torchvision reads from and downloads into (``cifar-10-batches-py`` below
        it); defaults to ``./data``.
    download : bool
        Download the files when they are missing (needs internet).
    seed : int
        Ignored (the data are fixed).

    Returns
    -------
    ArrayDataset
        Images ``(60000, 3, 32, 32)`` float32 in ``[0, 1]``, labels int64.

    Raises
    ------
    FileNotFoundError
        If the files are missing and ``download`` is False.
    RuntimeError
        If the download fails.
    """
    from torchvision.datasets import CIFAR10  # heavy import, used here only

    hint = "place the extracted 'cifar-10-batches-py' folder under the data root"
    train, test = _open_both_splits(CIFAR10, "CIFAR-10", _resolve_root(data_root), download, hint)
    images = np.concatenate([train.data, test.data])  # (N, 32, 32, 3) uint8
    labels = np.concatenate([np.asarray(train.targets), np.asarray(test.targets)])
    x = (images.transpose(0, 3, 1, 2) / np.float32(255.0)).astype(np.float32)  # (N, 3, 32, 32)
    return ArrayDataset(x=x, y=labels.astype(np.int64))
