"""experiments.public_ceiling: the true-label bound of a student that sees only the public set."""

from __future__ import annotations

import pytest

from experiments import public_ceiling


def test_it_prints_public_and_private_rows(capsys: pytest.CaptureFixture[str]) -> None:
    assert public_ceiling.main(["--models", "mlp", "--seeds", "0", "--epochs", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    public = next(line for line in lines if "| mlp | public |" in line)
    private = next(line for line in lines if "| mlp | private |" in line)
    assert "| 359 |" in public and "| 1078 |" in private  # digits' 0.2 / 0.6 of 1,797 images
    accuracy = float(public.split("|")[4].split("%")[0])
    assert 10.0 < accuracy <= 100.0  # above chance for ten digits after two epochs
