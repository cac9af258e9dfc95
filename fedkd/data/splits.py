"""Seeded, stratified private/public/test splits of a registered dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedkd.data.arrays import ArrayDataset, DataSplit, TrainTest
from fedkd.data.registry import get_loader

SPLIT_NAMES = ("private", "public", "test")


def resolve_split_sizes(sizes: dict[str, float | int], available: int) -> dict[str, int]:
    """Turn fractions (float) or absolute counts (int) into sample counts.

    Parameters
    ----------
    sizes : dict of str to float or int
        Per split: a float in ``(0, 1]`` is a fraction of ``available`` (rounded down), an
        int >= 1 an absolute count. Kinds may be mixed.
    available : int
        Number of samples in the dataset.

    Returns
    -------
    dict of str to int
        Sample count per split, each >= 1, summing to at most ``available``.

    Raises
    ------
    ValueError
        If a size is not a number, not positive, a fraction above 1 or rounding to zero
        samples, if the fractions sum above 1, or if the counts exceed ``available``.
    """
    counts: dict[str, int] = {}
    fraction_sum = 0.0
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
            raise ValueError(
                f"{name} size must be a fraction (float in (0, 1]) or a count (int >= 1); "
                f"got {size!r}"
            )
        if isinstance(size, (float, np.floating)):
            if not 0.0 < size <= 1.0:
                raise ValueError(f"{name} fraction must lie in (0, 1]; got {size}")
            fraction_sum += float(size)
            counts[name] = int(np.floor(size * available))
            if counts[name] == 0:
                raise ValueError(
                    f"{name} fraction {size} of {available} samples gives 0 samples; "
                    f"use a larger fraction or an absolute count"
                )
        else:
            if size < 1:
                raise ValueError(f"{name} count must be >= 1; got {size}")
            counts[name] = int(size)
    if fraction_sum > 1.0 + 1e-9:
        raise ValueError(f"split fractions sum to {fraction_sum:g} > 1: {sizes}")
    total = sum(counts.values())
    if total > available:
        raise ValueError(
            f"requested {total} samples ({counts}) but the dataset holds only {available}"
        )
    return counts


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random permutation whose every prefix and chunk keeps the class proportions.

    Each class's samples are shuffled and given evenly spaced keys ``(rank + u_c) / n_c``
    in ``[0, 1)`` with a random class offset ``u_c``; sorting by key interleaves the
    classes, so any consecutive chunk of ``k`` positions holds about ``k * n_c / N``
    samples of class ``c`` (off by at most a couple of samples).

    Parameters
    ----------
    labels : np.ndarray
        1-D integer labels.
    rng : np.random.Generator
        Source of randomness.

    Returns
    -------
    np.ndarray
        int64 permutation of ``range(len(labels))``.
    """
    keys = np.empty(len(labels), dtype=np.float64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        keys[members] = (np.arange(len(members)) + rng.uniform()) / len(members)
    return np.argsort(keys, kind="stable").astype(np.int64)


def _check_loaded(name: str, data: object) -> None:
    """What every loader must return: a non-empty dataset, pixels in [0, 1], labels >= 0."""
    if not isinstance(data, ArrayDataset):
        raise TypeError(f"loader for {name!r} returned {type(data).__name__}, not ArrayDataset")
    if len(data) == 0:
        raise ValueError(f"dataset {name!r} is empty")
    if data.x.min() < 0.0 or data.x.max() > 1.0:
        raise ValueError(
            f"dataset {name!r} has pixel values in [{data.x.min()}, {data.x.max()}]; "
            f"loaders must scale images to [0, 1]"
        )
    if data.y.min() < 0:
        raise ValueError(f"dataset {name!r} has negative labels (min {data.y.min()})")


def _cut(data: ArrayDataset, counts: list[int], rng: np.random.Generator) -> list[ArrayDataset]:
    """Disjoint stratified draws of ``counts`` samples from ``data``, each in random order."""
    order = stratified_order(data.y, rng)
    chunks = np.split(order, np.cumsum(counts))[: len(counts)]
    return [data.subset(rng.permutation(chunk)) for chunk in chunks]


def _draw_sets(
    name: str, data: ArrayDataset | TrainTest, sizes: dict[str, float | int], seed: int
) -> list[ArrayDataset]:
    """Private, public and test sets: from one pool, or private and public from the train
    set and test from the test set when the dataset ships one."""
    rng = np.random.default_rng(seed)
    if isinstance(data, TrainTest):
        for part in (data.train, data.test):
            _check_loaded(name, part)
        counts = resolve_split_sizes({k: sizes[k] for k in SPLIT_NAMES[:2]}, len(data.train))
        test = resolve_split_sizes({"test": sizes["test"]}, len(data.test))
        private, public = _cut(data.train, [counts["private"], counts["public"]], rng)
        return [private, public, *_cut(data.test, [test["test"]], rng)]
    _check_loaded(name, data)
    counts = resolve_split_sizes(sizes, available=len(data))
    return _cut(data, [counts[split] for split in SPLIT_NAMES], rng)


def load_split(
    name: str = "digits",
    *,
    seed: int = 0,
    private: float | int = 0.6,
    public: float | int = 0.2,
    test: float | int = 0.2,
    data_root: str | Path | None = None,
    download: bool = False,
    num_samples: int | None = None,
) -> DataSplit:
    """Load a registered dataset and split it into private, public and test sets.

    The split is stratified (each set keeps the class proportions to within a sample or
    two per class), disjoint, and a pure function of the data and ``seed``. Samples left
    over when the sizes sum below the dataset size are not used. A dataset that ships its own
    test set (:class:`TrainTest`: ``fashion-mnist``, ``mnist``, ``cifar10``, an ``idx``
    folder with train and t10k files) gives private and public from its train set and the
    test set from its test set; sizes given as fractions are then fractions of those.

    Parameters
    ----------
    name : str
        Registered dataset: ``"digits"`` (default, no download), ``"synthetic"``,
        ``"idx"``, ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"`` or a name added with
        :func:`fedkd.data.register_dataset`.
    seed : int
        Seed of the split (and of generated data such as ``"synthetic"``).
    private, public, test : float or int
        Size of each set: a fraction in ``(0, 1]`` (fractions drawn from one set sum to at
        most 1) or an absolute count >= 1.
    data_root : str or Path, optional
        Folder the loader reads (``"idx"``: the IDX folder; ``"fashion-mnist"``: its IDX
        folder, by default Debian's; torchvision sets: their root).
    download : bool
        Allow torchvision loaders to download missing files.
    num_samples : int, optional
        Size of a generated dataset (``"synthetic"`` only).

    Returns
    -------
    DataSplit
        The three sets with ``num_classes`` and ``input_shape``.

    Raises
    ------
    KeyError
        If ``name`` is not registered (the message lists the registered names).
    ValueError
        If a size is invalid or the loader returns images outside ``[0, 1]`` or
        negative labels.
    FileNotFoundError
        If the dataset's files are missing.
    """
    loader = get_loader(name)
    if num_samples is not None and name != "synthetic":
        raise ValueError(f"num_samples applies to the 'synthetic' dataset only, not {name!r}")
    options = {} if num_samples is None else {"num_samples": num_samples}
    data = loader(data_root=data_root, download=download, seed=seed, **options)
    if not isinstance(data, (ArrayDataset, TrainTest)):
        raise TypeError(
            f"loader for {name!r} returned {type(data).__name__}, not ArrayDataset or TrainTest"
        )
    sizes = {"private": private, "public": public, "test": test}
    sets = dict(zip(SPLIT_NAMES, _draw_sets(name, data, sizes, seed), strict=True))
    whole = (data.train, data.test) if isinstance(data, TrainTest) else (data,)
    c, h, w = sets["private"].x.shape[1:]
    return DataSplit(
        name=name,
        private=sets["private"],
        public=sets["public"],
        test=sets["test"],
        num_classes=int(max(part.y.max() for part in whole)) + 1,
        input_shape=(int(c), int(h), int(w)),
    )
