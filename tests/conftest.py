"""Shared test settings: one torch thread per test process (pytest-xdist runs two), and each
test's nodes keep their release ledgers in the test's own directory, never in ~/.fedkd; the
digits split the training tests share."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedkd.data import DataSplit, load_split

torch.set_num_threads(1)  # before any fixture: module-scoped ones train models too


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One thread for each test, whatever an in-process run set before (``torch-threads``)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def fedkd_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``FEDKD_HOME`` for this test (inherited by the Flower processes a test starts)."""
    home = tmp_path_factory.mktemp("fedkd-home")
    monkeypatch.setenv("FEDKD_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def digits() -> DataSplit:
    """scikit-learn's digits, split with seed 0 (built once per test module)."""
    return load_split("digits", seed=0)
