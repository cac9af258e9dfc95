"""Tests of fedkd.data: dataset registry, loaders, IDX reader and private/public/test splits."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fedkd.data import (
    ArrayDataset,
    DataSplit,
    available_datasets,
    load_idx_folder,
    load_split,
    read_idx,
    register_dataset,
)
from fedkd.data import registry as registry_module
from fedkd.data.builtin import make_synthetic

SHARED_MNIST = Path("/work/shared/data/mnist")
SHARED_FASHION = Path("/work/shared/data/fashion-mnist")
BUILTIN_NAMES = {"cifar10", "digits", "fashion-mnist", "idx", "mnist", "synthetic"}


# ---------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array in the IDX format (big-endian)."""
    codes = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C}
    codes.update({np.float32: 0x0D, np.float64: 0x0E})
    code = codes[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_mnist_pair(folder: Path, prefix: str, count: int, *, compress: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, 6, 5), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)


def indexed_loader(num_samples: int = 200, num_classes: int = 4):
    """A loader whose image i is constant i / num_samples, so splits reveal indices."""

    def loader(*, data_root: object, download: bool, seed: int) -> ArrayDataset:
        values = np.arange(num_samples, dtype=np.float32) / num_samples
        x = np.broadcast_to(values[:, None, None, None], (num_samples, 1, 2, 2)).copy()
        y = np.arange(num_samples) % num_classes
        return ArrayDataset(x=x, y=y)

    return loader


def original_indices(data: ArrayDataset, num_samples: int) -> np.ndarray:
    return np.rint(data.x[:, 0, 0, 0] * num_samples).astype(np.int64)


@pytest.fixture
def data_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register datasets without leaking them into other tests."""
    monkeypatch.setattr(registry_module, "_LOADERS", dict(registry_module._LOADERS))


# ---------------------------------------------------------------------------- types


def test_array_dataset_converts_dtypes_and_subsets() -> None:
    data = ArrayDataset(x=np.zeros((5, 1, 2, 2), dtype=np.float64), y=np.arange(5, dtype=np.int32))
    assert data.x.dtype == np.float32 and data.y.dtype == np.int64 and len(data) == 5
    part = data.subset(np.array([4, 0, 4]))
    assert part.y.tolist() == [4, 0, 4]
    assert len(data.subset(np.array([], dtype=np.int64))) == 0


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.zeros((3, 4)), np.zeros(3, dtype=int), "shape"),
        (np.zeros((3, 1, 2, 2)), np.zeros((3, 1), dtype=int), "shape"),
        (np.zeros((3, 1, 2, 2)), np.zeros(3), "integer"),
        (np.zeros((3, 1, 2, 2)), np.zeros(2, dtype=int), "differ in length"),
    ],
)
def test_array_dataset_rejects_bad_arrays(x: np.ndarray, y: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ArrayDataset(x=x, y=y)


def test_subset_rejects_bad_indices() -> None:
    data = ArrayDataset(x=np.zeros((3, 1, 1, 1)), y=np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        data.subset(np.array([0, 3]))
    with pytest.raises(ValueError, match="integers"):
        data.subset(np.array([0.0, 1.0]))


# ---------------------------------------------------------------------------- built-in loaders


def check_split(split: DataSplit, sizes: tuple[int, int, int], shape: tuple[int, int, int]) -> None:
    assert (len(split.private), len(split.public), len(split.test)) == sizes
    assert split.input_shape == shape
    assert split.num_classes == 10
    for data in (split.private, split.public, split.test):
        assert data.x.dtype == np.float32 and data.y.dtype == np.int64
        assert data.x.shape[1:] == shape
        assert data.x.min() >= 0.0 and data.x.max() <= 1.0
        assert set(np.unique(data.y).tolist()) == set(range(10))


def test_registry_lists_builtin_datasets() -> None:
    assert set(available_datasets()) >= BUILTIN_NAMES
    assert available_datasets() == sorted(available_datasets())


def test_digits_split_default() -> None:
    split = load_split()
    assert split.name == "digits"
    check_split(split, (1078, 359, 359), (1, 8, 8))
    assert split.private.x.max() == 1.0  # pixel / 16 reaches 1


def test_synthetic_split_is_seeded() -> None:
    split = load_split("synthetic", seed=3)
    check_split(split, (1200, 400, 400), (1, 8, 8))
    again = load_split("synthetic", seed=3)
    other = load_split("synthetic", seed=4)
    np.testing.assert_array_equal(split.private.x, again.private.x)
    assert not np.array_equal(split.private.x, other.private.x)


def test_synthetic_is_learnable() -> None:
    split = load_split("synthetic")
    centroids = np.stack([split.private.x[split.private.y == c].mean(0) for c in range(10)])
    flat_test = split.test.x.reshape(len(split.test), -1)
    distances = ((flat_test[:, None, :] - centroids.reshape(10, -1)[None]) ** 2).sum(-1)
    accuracy = float((distances.argmin(1) == split.test.y).mean())
    assert accuracy > 0.9


def test_make_synthetic_validates_arguments() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        make_synthetic(num_samples=5, num_classes=10)
    with pytest.raises(ValueError, match="noise"):
        make_synthetic(noise=-1.0)


# ---------------------------------------------------------------------------- splits


def test_split_is_deterministic_per_seed() -> None:
    first, second, other = load_split(seed=7), load_split(seed=7), load_split(seed=8)
    for name in ("private", "public", "test"):
        np.testing.assert_array_equal(getattr(first, name).x, getattr(second, name).x)
        np.testing.assert_array_equal(getattr(first, name).y, getattr(second, name).y)
    assert not np.array_equal(first.private.y, other.private.y)


def test_split_is_disjoint_and_stratified(data_registry: None) -> None:
    register_dataset("data-indexed", indexed_loader(num_samples=200, num_classes=4))
    split = load_split("data-indexed", private=0.5, public=0.25, test=0.2, seed=1)
    parts = [original_indices(d, 200) for d in (split.private, split.public, split.test)]
    assert [len(p) for p in parts] == [100, 50, 40]
    union = np.concatenate(parts)
    assert len(np.unique(union)) == len(union) == 190
    for part, data in zip(parts, (split.private, split.public, split.test), strict=True):
        np.testing.assert_array_equal(part % 4, data.y)  # labels travel with their images
        counts = np.bincount(data.y, minlength=4)
        assert np.abs(counts - len(part) / 4).max() <= 2


def test_split_accepts_absolute_and_mixed_sizes(data_registry: None) -> None:
    register_dataset("data-indexed", indexed_loader(num_samples=200, num_classes=4))
    split = load_split("data-indexed", private=120, public=0.25, test=30)
    assert (len(split.private), len(split.public), len(split.test)) == (120, 50, 30)
    split = load_split("data-indexed", private=0.7, public=0.2, test=0.1)  # sums to 1 (float)
    assert (len(split.private), len(split.public), len(split.test)) == (140, 40, 20)


@pytest.mark.parametrize(
    ("sizes", "match"),
    [
        ({"private": -5}, "private count must be >= 1"),
        ({"public": 0}, "public count must be >= 1"),
        ({"test": 0.0}, r"test fraction must lie in \(0, 1\]"),
        ({"private": 1.5}, r"private fraction must lie in \(0, 1\]"),
        ({"private": 0.7, "public": 0.3, "test": 0.2}, "fractions sum to 1.2 > 1"),
        ({"private": 150, "public": 40, "test": 20}, "requested 210 samples .* only 200"),
        ({"test": 0.001}, "gives 0 samples"),
        ({"public": True}, "fraction .* or a count"),
        ({"public": "half"}, "fraction .* or a count"),
    ],
)
def test_bad_split_sizes_name_the_problem(
    data_registry: None, sizes: dict[str, object], match: str
) -> None:
    register_dataset("data-indexed", indexed_loader(num_samples=200, num_classes=4))
    with pytest.raises(ValueError, match=match):
        load_split("data-indexed", **sizes)  # type: ignore[arg-type]


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(KeyError, match="unknown dataset 'nope'") as info:
        load_split("nope")
    for name in BUILTIN_NAMES:
        assert repr(name) in str(info.value)


def test_register_dataset_refuses_duplicates_and_non_callables(data_registry: None) -> None:
    with pytest.raises(ValueError, match="'digits' is already registered"):
        register_dataset("digits", indexed_loader())
    with pytest.raises(ValueError, match="non-empty"):
        register_dataset("", indexed_loader())
    with pytest.raises(TypeError, match="callable"):
        register_dataset("data-bad", 42)  # type: ignore[arg-type]
    register_dataset("data-new", indexed_loader())
    assert "data-new" in available_datasets()


def test_loader_output_is_validated(data_registry: None) -> None:
    def unscaled(*, data_root: object, download: bool, seed: int) -> ArrayDataset:
        return ArrayDataset(x=np.full((10, 1, 2, 2), 255.0), y=np.arange(10) % 2)

    register_dataset("data-unscaled", unscaled)
    with pytest.raises(ValueError, match=r"loaders must scale images to \[0, 1\]"):
        load_split("data-unscaled")


# ---------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_round_trips(tmp_path: Path, compress: bool, dtype: type) -> None:
    offset = 0 if dtype == np.uint8 else -5  # signed types get negative values too
    array = (np.arange(24).reshape(2, 3, 4) + offset).astype(dtype)
    path = write_idx(tmp_path / "a-idx3", array, compress=compress)
    result = read_idx(path)
    assert result.dtype == np.dtype(dtype) and result.dtype.isnative
    np.testing.assert_array_equal(result, array)


def test_load_idx_folder_reads_train_then_t10k(tmp_path: Path) -> None:
    write_mnist_pair(tmp_path, "train", 30, compress=False, seed=0)
    write_mnist_pair(tmp_path, "t10k", 20, compress=True, seed=1)
    data = load_idx_folder(tmp_path)
    assert data.x.shape == (50, 1, 6, 5) and data.x.dtype == np.float32
    assert data.x.min() >= 0.0 and data.x.max() <= 1.0
    expected_first = np.random.default_rng(0).integers(0, 256, size=(30, 6, 5), dtype=np.uint8)
    np.testing.assert_allclose(data.x[:30, 0], expected_first / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y, np.concatenate([np.arange(30), np.arange(20)]) % 10)


def test_load_split_idx(tmp_path: Path) -> None:
    write_mnist_pair(tmp_path, "t10k", 100, compress=True, seed=0)
    split = load_split("idx", data_root=tmp_path, private=60, public=20, test=20)
    assert split.input_shape == (1, 6, 5) and split.num_classes == 10
    assert len(split.private) == 60 and len(split.test) == 20


def test_plain_file_wins_over_gzip_twin(tmp_path: Path) -> None:
    write_mnist_pair(tmp_path, "t10k", 10, compress=False, seed=0)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"garbage")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    assert len(load_idx_folder(tmp_path)) == 10


def test_idx_corrupt_files_raise_clear_errors(tmp_path: Path) -> None:
    good = idx_bytes(np.zeros((4, 3, 3), dtype=np.uint8))
    cases = {
        "magic.idx": (b"\x01\x02" + good[2:], "invalid IDX magic number"),
        "type.idx": (good[:2] + b"\x07" + good[3:], "invalid IDX magic number"),
        "short.idx": (good[:-5], "truncated or corrupt"),
        "long.idx": (good + b"\x00", "truncated or corrupt"),
        "header.idx": (good[:6], "ends inside its header"),
        "tiny.idx": (b"\x00", "too short"),
        "gzip.idx": (gzip.compress(good)[:-12], "corrupt gzip"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=match):
            read_idx(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        read_idx(tmp_path / "absent.idx")


def test_idx_folder_mismatches_raise_clear_errors(tmp_path: Path) -> None:
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((5, 2, 2), np.uint8), compress=True)
    with pytest.raises(FileNotFoundError, match="no matching 't10k-labels"):
        load_idx_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8), compress=True)
    with pytest.raises(ValueError, match="counts differ: 5 .* 4"):
        load_idx_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros((5, 1), np.uint8), compress=True)
    with pytest.raises(ValueError, match="integer labels of dims"):
        load_idx_folder(tmp_path)


def test_idx_missing_folder_or_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="IDX folder not found"):
        load_idx_folder(tmp_path / "absent")
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(FileNotFoundError, match="no IDX image/label files .*readme.txt"):
        load_idx_folder(tmp_path)
    with pytest.raises(ValueError, match="needs data_root"):
        load_split("idx")
    with pytest.raises(ValueError, match="cannot download"):
        load_split("idx", data_root=tmp_path, download=True)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="shared MNIST IDX files not present")
def test_shared_mnist_through_idx() -> None:
    full = load_idx_folder(SHARED_MNIST)
    assert full.x.shape == (10_000, 1, 28, 28)
    assert np.bincount(full.y).tolist()[:3] == [980, 1135, 1032]  # official t10k counts
    split = load_split("idx", data_root=SHARED_MNIST, private=6000, public=2000, test=2000)
    check_split(split, (6000, 2000, 2000), (1, 28, 28))
    assert abs(np.bincount(split.public.y)[1] - 1135 / 5) <= 2


# ---------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_torchvision_datasets_without_download_explain_missing_files(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(FileNotFoundError, match="missing under .*download=True") as info:
        load_split(name, data_root=tmp_path)
    if name != "cifar10":
        assert "'idx' dataset" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or created


# ---------------------------------------------------------------------------- Fashion-MNIST


def write_train_test(folder: Path, train: int, test: int) -> None:
    """IDX train and t10k pairs whose first pixel tells them apart (0 in train, 255 in test)."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count, mark in (("train", train, 0), ("t10k", test, 255)):
        images = np.full((count, 4, 4), 7, dtype=np.uint8)
        images[:, 0, 0] = mark
        images[:, 1, 1] = np.arange(count) % 256  # rows differ, so duplicates would show
        images[:, 1, 2] = np.arange(count) // 256
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images, compress=True)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels, compress=True)


def rows(data: ArrayDataset) -> set[tuple[float, ...]]:
    return {tuple(row) for row in data.x.reshape(len(data), -1).tolist()}


@pytest.mark.parametrize("layout", [".", "FashionMNIST/raw"])
def test_fashion_mnist_draws_test_from_test_files(tmp_path: Path, layout: str) -> None:
    write_train_test(tmp_path / layout, train=300, test=100)
    split = load_split("fashion-mnist", data_root=tmp_path, private=0.6, public=100, test=1.0)
    assert (len(split.private), len(split.public), len(split.test)) == (180, 100, 100)
    assert (split.private.x[:, 0, 0, 0] == 0).all() and (split.public.x[:, 0, 0, 0] == 0).all()
    assert (split.test.x[:, 0, 0, 0] == 1).all()  # every test image from the t10k files
    assert not rows(split.private) & rows(split.public)
    assert split.num_classes == 10 and split.input_shape == (1, 4, 4)
    with pytest.raises(ValueError, match="only 300"):  # private + public come from train
        load_split("fashion-mnist", data_root=tmp_path, private=250, public=100, test=10)


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    write_mnist_pair(tmp_path, "t10k", 10, compress=True, seed=0)  # no train files
    with pytest.raises(FileNotFoundError) as info:
        load_split("fashion-mnist", data_root=tmp_path)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "torchvision" in message


def test_idx_folder_with_train_and_test_files_keeps_them_apart(tmp_path: Path) -> None:
    write_train_test(tmp_path, train=200, test=50)
    split = load_split("idx", data_root=tmp_path, private=100, public=50, test=50)
    assert (split.test.x[:, 0, 0, 0] == 1).all() and (split.private.x[:, 0, 0, 0] == 0).all()


@pytest.mark.skipif(not SHARED_FASHION.is_dir(), reason="shared Fashion-MNIST files not present")
def test_shared_fashion_mnist() -> None:
    split = load_split(
        "fashion-mnist", data_root=SHARED_FASHION, private=50_000, public=10_000, test=1.0
    )
    check_split(split, (50_000, 10_000, 10_000), (1, 28, 28))
    assert np.bincount(split.test.y).tolist() == [1000] * 10  # the official test set
    assert np.bincount(split.public.y).tolist() == [1000] * 10
