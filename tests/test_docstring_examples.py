"""The examples in the public docstrings run, and say what they print (as Opacus tests its own)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

MODULES = ["fedkd", "fedkd.fl.config", "fedkd.secagg.driver"]


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_run(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a run's folder goes under the working directory
    monkeypatch.setenv("FEDKD_HOME", str(tmp_path / "home"))
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    outcome = doctest.testmod(module, optionflags=flags, raise_on_error=False, verbose=False)
    assert outcome.attempted > 0, f"{name} has no example"
    assert outcome.failed == 0, f"{outcome.failed} example(s) of {name} failed (printed above)"
