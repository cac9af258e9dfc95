"""Shared test settings: one torch thread per test process (pytest-xdist runs two), and each
test's nodes keep their release ledgers in the test's own directory, never in ~/.fedkd."""

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def fedkd_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``FEDKD_HOME`` for this test (inherited by the Flower processes a test starts)."""
    home = tmp_path_factory.mktemp("fedkd-home")
    monkeypatch.setenv("FEDKD_HOME", str(home))
    return home
