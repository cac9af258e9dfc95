"""DP-SGD's plan (noise calibrated before the run) against what Opacus then runs and accounts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.data_loader import DPDataLoader
from torch.utils.data import DataLoader, TensorDataset

from fedkd.dp.dpsgd import dp_train, epsilon_of_history, sample_rate, steps_per_epoch
from fedkd.fl.config import parse_run_config
from fedkd.fl.privacy import dpsgd_noise
from fedkd.models import build_model


@settings(max_examples=60, deadline=None)
@given(num_samples=st.integers(1, 3000), batch_size=st.integers(1, 256))
def test_the_plan_has_the_rate_and_steps_opacus_runs(num_samples: int, batch_size: int) -> None:
    dataset = TensorDataset(torch.zeros(num_samples, 1))
    base = DataLoader(dataset, batch_size=min(batch_size, num_samples))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = DPDataLoader.from_data_loader(base)
    assert steps_per_epoch(num_samples, batch_size) == len(loader)
    assert sample_rate(num_samples, batch_size) == pytest.approx(loader.sample_rate)


@pytest.mark.parametrize("num_samples", [50, 319])  # both overspent under rate = batch / n
def test_a_client_spends_at_most_its_target_over_the_run(num_samples: int) -> None:
    """The client's real rounds (warm-up once, then local epochs) against the planned noise:
    the accountant of what ran ends at the target, not above it."""
    config = parse_run_config(
        {
            "client-dp-sgd": True,
            "client-dp-epsilon": 4.0,
            "num-rounds": 2,
            "warmup-epochs": 1,
            "local-epochs": 1,
            "batch-size": 32,
        }
    )
    noise = dpsgd_noise(config, num_samples)
    torch.manual_seed(0)
    model = build_model("cnn_small", input_shape=(1, 8, 8), num_classes=10)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_samples, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, num_samples)
    history: list[tuple[float, float, int]] = []
    for epochs in (2, 1):  # round 1 with its warm-up epoch, round 2
        report = dp_train(
            model,
            x,
            y,
            epochs=epochs,
            batch_size=32,
            lr=1e-3,
            noise_multiplier=noise,
            max_grad_norm=1.0,
            delta=1e-5,
            history=history,
        )
        history = report.history
    assert sum(steps for _, _, steps in history) == 3 * steps_per_epoch(num_samples, 32)
    assert 3.95 <= report.epsilon <= 4.0  # the PLD calibration lands just under the target
    assert report.epsilon == pytest.approx(epsilon_of_history(history, 1e-5))
    assert report.epsilon_rdp == pytest.approx(epsilon_of_history(history, 1e-5, accountant="rdp"))


def test_the_rdp_cross_check_agrees_and_is_looser() -> None:
    history = [(1.1, 0.1, 40), (1.1, 0.1, 20)]
    pld = epsilon_of_history(history, 1e-5)
    rdp = epsilon_of_history(history, 1e-5, accountant="rdp")
    assert pld == pytest.approx(epsilon_of_history([(1.1, 0.1, 60)], 1e-5), rel=1e-3)
    assert rdp == pytest.approx(epsilon_of_history([(1.1, 0.1, 60)], 1e-5, accountant="rdp"))
    assert 0.7 * rdp < pld < rdp
    assert epsilon_of_history([], 1e-5) == epsilon_of_history([], 1e-5, accountant="rdp") == 0.0


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.8, 1.3]), st.sampled_from([0.05, 0.2]), st.integers(1, 30)),
        min_size=1,
        max_size=6,
    )
)
def test_merging_equal_entries_keeps_the_epsilon(history: list[tuple[float, float, int]]) -> None:
    """The report merges runs of equal (noise, rate) entries; the privacy of the steps taken
    must be that of the entries one by one, as the library composes them."""
    import dp_accounting

    from fedkd.dp.accounting import epsilon_of, run_event

    one_by_one = dp_accounting.ComposedDpEvent([run_event(z, q, s) for z, q, s in history])
    assert epsilon_of_history(history, 1e-5) == pytest.approx(
        epsilon_of(one_by_one, 1e-5), rel=1e-6
    )


def test_training_only_the_head_keeps_the_pushed_features() -> None:
    torch.manual_seed(0)
    model = build_model("cnn_small", input_shape=(1, 8, 8), num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, 64)
    settings = {"epochs": 1, "batch_size": 16, "lr": 0.1, "noise_multiplier": 1.0}
    settings |= {"max_grad_norm": 1.0, "delta": 1e-5, "optimizer": "sgd"}
    report = dp_train(model, x, y, only="head", **settings)  # type: ignore[arg-type]
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"head.weight", "head.bias"}
    assert all(p.requires_grad for p in model.parameters())  # the features train again later
    assert report.history == [(1.0, report.sample_rate, steps_per_epoch(64, 16))]
    with pytest.raises(ValueError, match="'body'.*does not have"):
        dp_train(model, x, y, only="body", **settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"client-dp-layers": "body"}, "client-dp-layers"),
        ({"client-dp-layers": "head"}, "client-dp-sgd = true"),
        (
            {
                "client-dp-layers": "head",
                "client-dp-sgd": True,
                "client-dp-epsilon": 8.0,
                "mode": "fedmd",
            },
            "mode 'fedmd'",
        ),
        (
            {
                "client-dp-layers": "head",
                "client-dp-sgd": True,
                "client-dp-epsilon": 8.0,
                "method": "fedavg",
            },
            "method 'fedavg'",
        ),
    ],
)
def test_head_only_dpsgd_settings_are_checked(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_run_config(overrides)
