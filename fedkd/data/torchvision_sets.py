"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision, stored under a data root.

Fashion-MNIST's registry entry reads local IDX files first (``fedkd.data.fashion_mnist``) and
comes here only to download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedkd.data.arrays import ArrayDataset, TrainTest

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


@dataclass(frozen=True)
class _Source:
    """One torchvision dataset: its class, its name in messages, what to do without internet."""

    class_name: str  # attribute of torchvision.datasets
    title: str
    hint: str


_SOURCES: dict[str, _Source] = {
    "mnist": _Source("MNIST", "MNIST", _IDX_HINT),
    "fashion-mnist": _Source(
        "FashionMNIST", "Fashion-MNIST", "install Debian's dataset-fashion-mnist package"
    ),
    "cifar10": _Source(
        "CIFAR10",
        "CIFAR-10",
        "place the extracted 'cifar-10-batches-py' folder under the data root",
    ),
}


def _as_dataset(split: Any) -> ArrayDataset:
    # MNIST-like sets hold (N, H, W) uint8 tensors; CIFAR-10 (N, H, W, C) uint8 arrays
    images, labels = np.asarray(split.data), np.asarray(split.targets)
    images = images[:, None, :, :] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    x = (images / np.float32(255.0)).astype(np.float32)  # (N, C, H, W)
    return ArrayDataset(x=x, y=labels.astype(np.int64))


def load_torchvision(
    name: str, *, data_root: str | Path | None = None, download: bool = False
) -> TrainTest:
    """Load a torchvision dataset's train and test sets.

    Parameters
    ----------
    name : str
        ``"mnist"`` (60,000 + 10,000 images ``(1, 28, 28)``), ``"fashion-mnist"`` (the same
        sizes) or ``"cifar10"`` (50,000 + 10,000 colour images ``(3, 32, 32)``).
    data_root : str or Path, optional
        Folder torchvision reads from and downloads into (``MNIST/raw``, ``FashionMNIST/raw``
        or ``cifar-10-batches-py`` below it); defaults to ``./data``.
    download : bool
        Download the files when they are missing (needs internet).

    Returns
    -------
    TrainTest
        Images ``(N, C, H, W)`` float32 in ``[0, 1]``, labels int64; the private pool and the
        public set are drawn from ``train``, the test set from ``test``.

    Raises
    ------
    KeyError
        If ``name`` is not one of the names above (the message lists them).
    FileNotFoundError
        If the files are missing and ``download`` is False.
    RuntimeError
        If the download fails.
    """
    if name not in _SOURCES:
        raise KeyError(f"unknown torchvision dataset {name!r}; known: {', '.join(_SOURCES)}")
    source = _SOURCES[name]
    import torchvision.datasets  # heavy import, used here only

    dataset_cls = getattr(torchvision.datasets, source.class_name)
    root = _resolve_root(data_root)
    train, test = _open_both_splits(dataset_cls, source.title, root, download, source.hint)
    return TrainTest(train=_as_dataset(train), test=_as_dataset(test))


def load_mnist(
    *, data_root: str | Path | None = None, download: bool = False, seed: int = 0
) -> TrainTest:
    """Load MNIST (60,000 + 10,000 images ``(1, 28, 28)``); ``seed`` is ignored.

    See :func:`load_torchvision` for the parameters, the result and the errors.
    """
    return load_torchvision("mnist", data_root=data_root, download=download)


def load_cifar10(
    *, data_root: str | Path | None = None, download: bool = False, seed: int = 0
) -> TrainTest:
    """Load CIFAR-10 (50,000 + 10,000 colour images ``(3, 32, 32)``); ``seed`` is ignored.

    See :func:`load_torchvision` for the parameters, the result and the errors.
    """
    return load_torchvision("cifar10", data_root=data_root, download=download)
