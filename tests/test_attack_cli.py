"""``fedkd attack``: dispatch, bad arguments refused early, the report of a quick study."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.attacks import all as all_studies
from experiments.attacks.cli import STUDIES, main
from fedkd.attacks import StudyOptions, read_study


def test_unknown_study_and_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nope"]) == 2
    assert "unknown study 'nope'" in capsys.readouterr().err
    assert main(["label-inference", "--dataset", "idx"]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert main(["byzantine", "--set", "no-such-key=1"]) == 2
    assert "no-such-key" in capsys.readouterr().err
    assert set(STUDIES) >= {"label-inference", "membership", "byzantine", "crafted-queries"}


def test_options_refuse_an_empty_seed_list() -> None:
    with pytest.raises(ValueError, match="seed"):
        StudyOptions(seeds=())


def test_all_writes_one_report_with_the_study_table_and_plots(tmp_path: Path) -> None:
    tiny = ["model=mlp", "warmup-epochs=2", "local-epochs=1", "distill-epochs=1"]
    argv = ["--quick", "--out", str(tmp_path), "--set", *tiny, "--only", "crafted-queries"]
    assert all_studies.main(argv) == 0
    report = (tmp_path / "report.md").read_text()
    assert "## crafted-queries" in report and "![crafted_membership_auc.png]" in report
    assert (tmp_path / "crafted-queries" / "crafted_membership_auc.png").stat().st_size > 0
    earlier = read_study(tmp_path / "crafted-queries")
    assert earlier.table in report and "node pin" in earlier.table
