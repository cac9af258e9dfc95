"""Dataset registry: names mapped to loaders that return the whole dataset: one
:class:`ArrayDataset` pool, or a :class:`TrainTest` pair when it ships its own test set."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from fedkd.data.arrays import ArrayDataset, TrainTest
from fedkd.data.builtin import load_digits, load_synthetic
from fedkd.data.fashion_mnist import load_fashion_mnist
from fedkd.data.idx import load_idx_parts
from fedkd.data.torchvision_sets import load_cifar10, load_mnist


class DatasetLoader(Protocol):
    """A registered loader: keyword arguments in, the whole dataset out.

    ``data_root`` is the folder to read (or download into), ``download`` allows a download,
    ``seed`` seeds generated data. Loaders that need none of these accept and ignore them.
    """

    def __call__(
        self, *, data_root: str | Path | None, download: bool, seed: int
    ) -> ArrayDataset | TrainTest: ...


def load_idx(
    *, data_root: str | Path | None = None, download: bool = False, seed: int = 0
) -> ArrayDataset | TrainTest:
    """Registry loader for ``"idx"``: the IDX image/label pairs in ``data_root``.

    Parameters
    ----------
    data_root : str or Path
        Folder of (gzipped) IDX files, e.g. ``/work/shared/data/mnist``. Required.
    download : bool
        Must be False: local IDX files are never downloaded.
    seed : int
        Ignored.

    Returns
    -------
    ArrayDataset or TrainTest
        Both the ``train`` and the ``t10k`` pair: a :class:`TrainTest`; one of them alone
        (e.g. MNIST's 10,000 test images): that pool (:func:`fedkd.data.idx.load_idx_parts`).

    Raises
    ------
    ValueError
        If ``data_root`` is None or ``download`` is True.
    """
    if data_root is None:
        raise ValueError(
            "the 'idx' dataset needs data_root: a folder holding train-/t10k- "
            "images-idx3-ubyte and labels-idx1-ubyte files (gzipped or plain)"
        )
    if download:
        raise ValueError(
            "the 'idx' dataset reads local files and cannot download; use 'mnist' or "
            "'fashion-mnist' with download=True to fetch files"
        )
    parts = load_idx_parts(data_root)
    if len(parts) == 2:
        return TrainTest(train=parts["train"], test=parts["t10k"])
    return next(iter(parts.values()))


_LOADERS: dict[str, DatasetLoader] = {
    "digits": load_digits,
    "synthetic": load_synthetic,
    "idx": load_idx,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
}


def register_dataset(name: str, loader: DatasetLoader) -> None:
    """Add a dataset loader under a new name.

    Parameters
    ----------
    name : str
        Registry name; must be non-empty and not registered yet.
    loader : DatasetLoader
        Called as ``loader(data_root=..., download=..., seed=...)``; returns the whole
        dataset with images in ``[0, 1]``: an :class:`ArrayDataset`, or a :class:`TrainTest`
        when the test set is fixed.

    Raises
    ------
    ValueError
        If ``name`` is empty or already registered.
    TypeError
        If ``loader`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string; got {name!r}")
    if name in _LOADERS:
        raise ValueError(
            f"dataset {name!r} is already registered; registered: {available_datasets()}"
        )
    if not callable(loader):
        raise TypeError(f"loader for {name!r} must be callable; got {type(loader).__name__}")
    _LOADERS[name] = loader


def available_datasets() -> list[str]:
    """Names of the registered datasets, sorted.

    Returns
    -------
    list of str
        Every name :func:`fedkd.data.load_split` accepts.
    """
    return sorted(_LOADERS)


def get_loader(name: str) -> DatasetLoader:
    """Look up a registered loader.

    Parameters
    ----------
    name : str
        Registry name.

    Returns
    -------
    DatasetLoader
        The loader registered under ``name``.

    Raises
    ------
    KeyError
        If ``name`` is unknown; the message lists the registered names.
    """
    try:
        return _LOADERS[name]
    except KeyError:
        raise KeyError(
            f"unknown dataset {name!r}; available datasets: {available_datasets()}"
        ) from None
