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


def test_patience_zero_trains_every_epoch_on_every_row(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, bool, int | None]] = []
    real = public_ceiling.train_supervised

    def spy(model, data, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((len(data), kwargs["validation"] is None, kwargs["patience"]))
        return real(model, data, **kwargs)

    monkeypatch.setattr(public_ceiling, "train_supervised", spy)
    for patience in ("0", "5"):
        args = ["--models", "mlp", "--seeds", "0", "--epochs", "2", "--patience", patience]
        assert public_ceiling.main(args) == 0
    assert "| mlp | public | 359 |" in capsys.readouterr().out
    # public then private rows: all of them without early stopping, 90% with it
    assert seen == [(359, True, None), (1078, True, None), (324, False, 5), (971, False, 5)]
    with pytest.raises(SystemExit):
        public_ceiling.main(["--patience", "-1"])
