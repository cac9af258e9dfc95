"""Reader for the IDX file format (MNIST, Fashion-MNIST), gzipped or plain."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from fedkd.data.arrays import ArrayDataset

# IDX type codes (third magic byte) -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_SPLIT_PREFIXES = ("train", "t10k")
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"corrupt gzip data in IDX file {path}: {err}") from err


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzip detected from its first bytes) into a numpy array.

    Parameters
    ----------
    path : str or Path
        The file, e.g. ``t10k-images-idx3-ubyte.gz``.

    Returns
    -------
    np.ndarray
        Array with the dims and native-endian dtype the header declares.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the gzip stream is corrupt, the magic number is invalid, or the data length
        differs from what the header declares.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"IDX file {path} is too short for a header ({len(data)} bytes)")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_DTYPES or ndim == 0:
        known = ", ".join(f"0x{code:02X}" for code in IDX_DTYPES)
        raise ValueError(
            f"invalid IDX magic number {data[:4].hex()} in {path}: expected 00 00, a type "
            f"code in ({known}) and at least one dimension"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"IDX file {path} ends inside its header ({ndim} dims declared)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        raise ValueError(
            f"IDX file {path} holds {actual} data bytes but its header declares dims "
            f"{dims} of {dtype.name}, i.e. {expected} bytes (truncated or corrupt file)"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return array.astype(dtype.newbyteorder("="))


def _find_one(folder: Path, pattern: str) -> Path | None:
    matches = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not matches:
        return None
    plain = [p for p in matches if p.suffix != ".gz"]
    return (plain or matches)[0]


def _load_idx_pair(images_path: Path, labels_path: Path) -> ArrayDataset:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path} must hold unsigned-byte images of dims (N, H, W); "
            f"got dims {images.shape} of {images.dtype}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{labels_path} must hold integer labels of dims (N,); "
            f"got dims {labels.shape} of {labels.dtype}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"image and label counts differ: {len(images)} in {images_path.name}, "
            f"{len(labels)} in {labels_path.name}"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"{labels_path} holds negative labels (min {labels.min()})")
    x = (images[:, None, :, :] / np.float32(255.0)).astype(np.float32)  # (N, 1, H, W)
    return ArrayDataset(x=x, y=labels.astype(np.int64))


def load_idx_parts(folder: str | Path) -> dict[str, ArrayDataset]:
    """The IDX image/label pairs of a folder by prefix (``"train"``, ``"t10k"``), those found.

    See :func:`load_idx_folder` for the file names and the errors.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"IDX folder not found: {folder}")
    parts: dict[str, ArrayDataset] = {}
    for prefix in IDX_SPLIT_PREFIXES:
        images_path = _find_one(folder, f"{prefix}-images*idx3*")
        labels_path = _find_one(folder, f"{prefix}-labels*idx1*")
        if images_path is None and labels_path is None:
            continue
        if images_path is None or labels_path is None:
            present, missing = (
                (images_path, f"{prefix}-labels*idx1*")
                if labels_path is None
                else (labels_path, f"{prefix}-images*idx3*")
            )
            raise FileNotFoundError(f"found {present} but no matching '{missing}' file in {folder}")
        parts[prefix] = _load_idx_pair(images_path, labels_path)
    if not parts:
        contents = sorted(p.name for p in folder.iterdir())
        raise FileNotFoundError(
            f"no IDX image/label files in {folder}; expected names like "
            f"'train-images-idx3-ubyte[.gz]' + 'train-labels-idx1-ubyte[.gz]' and/or "
            f"'t10k-images-idx3-ubyte[.gz]' + 't10k-labels-idx1-ubyte[.gz]'; "
            f"folder holds: {contents}"
        )
    shapes = {part.x.shape[1:] for part in parts.values()}
    if len(shapes) > 1:
        raise ValueError(f"IDX image sizes differ between files in {folder}: {sorted(shapes)}")
    return parts


def load_idx_folder(folder: str | Path) -> ArrayDataset:
    """Load every MNIST-style IDX image/label pair found in a folder.

    Looks for ``train-images*idx3*`` / ``train-labels*idx1*`` and ``t10k-images*idx3*`` /
    ``t10k-labels*idx1*`` (gzipped or plain; the plain file wins when both exist, as in
    torchvision's ``raw/`` folders) and concatenates the pairs found, train first.

    Parameters
    ----------
    folder : str or Path
        Folder holding the files, e.g. ``/work/shared/data/mnist``.

    Returns
    -------
    ArrayDataset
        Images ``(N, 1, H, W)`` float32 scaled to ``[0, 1]``, labels int64.

    Raises
    ------
    FileNotFoundError
        If the folder is missing, holds no pair, or holds images without labels (or the
        reverse).
    ValueError
        If a file is corrupt, or images and labels disagree in count or image size.
    """
    parts = list(load_idx_parts(folder).values())
    return ArrayDataset(
        x=np.concatenate([part.x for part in parts]),
        y=np.concatenate([part.y for part in parts]),
    )
