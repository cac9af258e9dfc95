"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017) from its IDX files: 60,000 train, 10,000 test.

The files are read from ``data_root`` (a folder of the four IDX files, or torchvision's
``FashionMNIST/raw`` below it), else from Debian's package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``, installable on a machine without internet access),
else downloaded by torchvision when ``download`` allows it.
"""

from __future__ import annotations

from pathlib import Path

from fedkd.data.arrays import TrainTest
from fedkd.data.idx import load_idx_parts

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION_SUBFOLDER = Path("FashionMNIST") / "raw"
HOW_TO_GET = (
    "install Debian's package (`apt-get install dataset-fashion-mnist`, which puts the IDX "
    f"files in {DEBIAN_FOLDER}), set data-root to a folder holding them, or let torchvision "
    "download them (download=True; needs internet)"
)


def _candidates(data_root: str | Path | None) -> list[Path]:
    if data_root is None or str(data_root) == "":
        return [DEBIAN_FOLDER]
    root = Path(data_root)
    return [root, root / TORCHVISION_SUBFOLDER]


def _has_both(folder: Path) -> bool:
    return all(any(folder.glob(f"{prefix}-images*idx3*")) for prefix in ("train", "t10k"))


def load_fashion_mnist(
    *, data_root: str | Path | None = None, download: bool = False, seed: int = 0
) -> TrainTest:
    """Load Fashion-MNIST's train and test images ``(1, 28, 28)`` in ``[0, 1]``.

    Parameters
    ----------
    data_root : str or Path, optional
        Folder of the IDX files (or torchvision's root, with ``FashionMNIST/raw`` below it);
        default: Debian's ``/usr/share/datasets/fashion-mnist``.
    download : bool
        When the files are not found, download them with torchvision into ``data_root``.
    seed : int
        Ignored.

    Returns
    -------
    TrainTest
        ``train`` (60,000 images) and ``test`` (10,000), labels int64 in ``[0, 10)``.

    Raises
    ------
    FileNotFoundError
        When no folder holds both the train and the t10k files (and no download was
        allowed); the message says how to get them.
    """
    for folder in _candidates(data_root):
        if folder.is_dir() and _has_both(folder):
            parts = load_idx_parts(folder)
            return TrainTest(train=parts["train"], test=parts["t10k"])
    if download:
        from fedkd.data.torchvision_sets import load_torchvision

        return load_torchvision("fashion-mnist", data_root=data_root, download=True)
    looked = ", ".join(str(p) for p in _candidates(data_root))
    raise FileNotFoundError(
        f"Fashion-MNIST's train and t10k IDX files are not in {looked}; {HOW_TO_GET}"
    )
