"""The README's generated parts and its Python example (issue 29: the README says only what
the repository shows)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments import report

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_results_table_is_the_one_the_results_files_give() -> None:
    assert report.main(["--check"]) == 0, "README or docs/results/summary.md is stale"


def test_a_typed_figure_in_the_results_table_is_caught(tmp_path: Path) -> None:
    table = report.summary_table()
    edited = report.with_summary(README.read_text(), table.replace("0.688", "0.600"))
    assert edited != report.with_summary(README.read_text(), table)


def test_the_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 200


@pytest.mark.slow
def test_the_readmes_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    monkeypatch.chdir(tmp_path)  # the run writes its folder under the working directory
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 -- our own README
    history = namespace["history"]
    assert [row.round for row in history.rows] == [1, 2, 3]  # type: ignore[attr-defined]
    assert all(row.student_accuracy > 0.5 for row in history.rows)  # type: ignore[attr-defined]
