"""The docs site builds with warnings as errors, as ``make docs`` and CI build it.

One full Sphinx build (every page, and the API reference autodoc generates by importing every
module of ``fedkd``, ``server`` and ``clients``): a broken docstring, a page outside the
toctree or a bad cross reference fails it. The HTML and Sphinx's environment go to
``tmp_path``; autosummary's stubs are written to ``docs/generated/`` as in ``make docs``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
TOOLS = ("sphinx", "myst_parser", "furo")
MISSING = [name for name in TOOLS if importlib.util.find_spec(name) is None]


@pytest.mark.slow
@pytest.mark.skipif(
    bool(MISSING),
    reason=f"docs tools not installed ({', '.join(MISSING)}): pip install -e '.[docs]'",
)
def test_docs_build_without_warnings(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-q",
        "-b",
        "html",
        "-d",
        str(tmp_path / "doctrees"),
        str(DOCS),
        str(tmp_path / "html"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"sphinx-build failed:\n{done.stderr[-8000:]}"
    assert (tmp_path / "html" / "index.html").is_file()
    assert (tmp_path / "html" / "generated" / "fedkd.fl.experiment.html").is_file()
