"""The installable product: ``fedkd/`` never imports ``flwr``; the wheel holds only ``fedkd``,
installs into a fresh venv and its ``fedkd run`` works from an empty folder (issue 29, item 4).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["num-rounds=1", "local-epochs=1", "warmup-epochs=0", "distill-epochs=1", "model=mlp"]


def _imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (in functions and ``TYPE_CHECKING``
    blocks too; relative imports are the package's own)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_fedkd_never_imports_flwr() -> None:
    """The library, its command and its launcher included, runs Flower only as processes."""
    sources = sorted((ROOT / "fedkd").rglob("*.py"))
    assert len(sources) > 50 and ROOT / "fedkd" / "cli" / "launch.py" in sources
    offenders = [str(p.relative_to(ROOT)) for p in sources if "flwr" in _imported_modules(p)]
    assert offenders == []


def _run(
    command: Sequence[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel built from a copy of what it is made of (the checkout stays untouched: no
    ``build/`` or ``*.egg-info`` there), without build isolation (no download)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "fedkd", src / "fedkd", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *ROOT.glob("LICEN[CS]E*")]:
        shutil.copy(path, src / path.name)
    wheels = tmp_path / "wheels"
    pip_wheel: list[str | Path] = [sys.executable, "-m", "pip", "wheel", src, "--no-deps"]
    _run([*pip_wheel, "--no-build-isolation", "--no-index", "-q", "-w", wheels])
    (wheel,) = wheels.glob("fedkd-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    """A new venv with the wheel installed, then the running environment's site-packages
    appended for the dependencies (torch, ray, ...: nothing is downloaded). Appended by a
    ``.pth`` line, which does not run that folder's own ``.pth`` files: an editable fedkd
    installed there stays inactive, and the wheel's fedkd comes first on the path anyway."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    # installed before the dependencies are visible: pip sees no other fedkd to replace
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", python]
    _run([*pip, "install", "-q", "--no-deps", "--no-index", wheel])
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    paths = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    Path(purelib.stdout.strip(), "dependencies.pth").write_text("\n".join(paths) + "\n")
    return venv


@pytest.mark.slow
def test_the_wheel_runs_fedkd_from_an_empty_folder_in_a_fresh_venv(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.startswith("fedkd-0")} == {"fedkd"}, tops
    assert "fedkd/py.typed" in names and "fedkd/cli/launch.py" in names
    venv = _fresh_venv(tmp_path, wheel)
    here = tmp_path / "empty"
    here.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    probe = "import fedkd, importlib.util as u; print(fedkd.__file__); " + "; ".join(
        f"print(u.find_spec('{name}'))" for name in ("server", "clients", "experiments")
    )
    where, *others = _run([venv / "bin" / "python", "-c", probe], cwd=here, env=env).stdout.split()
    assert Path(where).is_relative_to(venv), where  # not the checkout's (editable) fedkd
    assert others == ["None"] * 3  # no generic top-level names installed

    fedkd = venv / "bin" / "fedkd"
    flower = subprocess.run(
        [fedkd, "run", "--engine", "flower"], cwd=here, env=env, capture_output=True, text=True
    )
    assert flower.returncode == 2 and flower.stdout == ""
    (line,) = flower.stderr.strip().splitlines()
    assert "--app DIR" in line
    done = _run([fedkd, "run", "--clients", "2", "--quiet", "--set", *TINY], cwd=here, env=env)
    (folder,) = (here / "runs").iterdir()
    rows = json.loads((folder / "history.json").read_text())
    assert [row["status"] for row in rows] == ["ok"], done.stdout
    assert sorted(p.name for p in here.iterdir()) == ["runs"]  # nothing else written here
