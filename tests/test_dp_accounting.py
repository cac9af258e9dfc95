"""Accounting: every epsilon is dp-accounting's own answer; calibration meets its target."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp

from fedkd.dp.accounting import (
    PLD_DISCRETIZATION,
    PrivacyLedger,
    calibrate_noise_multiplier,
    epsilon_of,
    run_event,
)


def _library_epsilon(sigma: float, q: float, rounds: int, delta: float, **pld_args: float) -> float:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), rounds
    )
    accountant = pld.PLDAccountant(**pld_args)  # type: ignore[arg-type]
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def test_design_brief_example_q1_sigma5_t50() -> None:
    # DESIGN.md: at q = 1, sigma = 5, T = 50, delta = 1e-5 PLD gives eps ~ 6.6.
    ledger = PrivacyLedger(1e-5)
    for _ in range(50):
        report = ledger.record(5.0, 1.0)
    assert report.epsilon == pytest.approx(
        _library_epsilon(5.0, 1.0, 50, 1e-5, value_discretization_interval=PLD_DISCRETIZATION),
        rel=1e-9,
    )
    # the library at its default discretisation agrees to 1e-2
    assert report.epsilon == pytest.approx(_library_epsilon(5.0, 1.0, 50, 1e-5), abs=1e-2)
    assert report.epsilon == pytest.approx(6.57, abs=0.02)
    assert report.epsilon_known_sample == report.epsilon  # q = 1: the views coincide


def test_ledger_reports_the_library_answer_with_sampling_and_rdp() -> None:
    ledger = PrivacyLedger(1e-5)
    for _ in range(6):
        report = ledger.record(1.3, 0.1)
    assert report.epsilon == pytest.approx(
        _library_epsilon(1.3, 0.1, 6, 1e-5, value_discretization_interval=PLD_DISCRETIZATION),
        rel=1e-9,
    )
    accountant = rdp.RdpAccountant()
    accountant.compose(run_event(1.3, 0.1, 6))
    assert report.epsilon_rdp == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-12)
    assert report.epsilon_rdp >= report.epsilon - 1e-3  # RDP is the looser bound
    assert report.epsilon_known_sample > 3 * report.epsilon  # no amplification: far weaker


def test_epsilon_grows_with_every_round_and_falls_with_more_noise() -> None:
    ledger = PrivacyLedger(1e-5)
    spent = [ledger.record(2.0, 1.0).epsilon for _ in range(4)]
    assert all(b > a for a, b in zip(spent, spent[1:], strict=False))
    less = PrivacyLedger(1e-5, [(2.0, 1.0)] * 3).record(2.5, 1.0).epsilon
    assert less < spent[-1]  # a round with more realised noise (fewer dropouts) costs less


@pytest.mark.parametrize(("epsilon", "rounds", "q"), [(1.0, 5, 1.0), (8.0, 5, 1.0), (2.0, 5, 0.1)])
def test_calibration_meets_its_target(epsilon: float, rounds: int, q: float) -> None:
    z = calibrate_noise_multiplier(epsilon, 1e-5, rounds=rounds, sampling=q)
    reached = epsilon_of(run_event(z, q, rounds), 1e-5)
    assert reached <= epsilon * (1 + 1e-6)
    assert reached > 0.98 * epsilon  # not a wastefully large sigma
    assert epsilon_of(run_event(0.97 * z, q, rounds), 1e-5) > epsilon  # the smallest such z


def test_calibration_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        calibrate_noise_multiplier(0.0, 1e-5, rounds=5)
    with pytest.raises(ValueError):
        calibrate_noise_multiplier(math.inf, 1e-5, rounds=5)
    with pytest.raises(ValueError):
        calibrate_noise_multiplier(1.0, 1.5, rounds=5)


def test_an_empty_ledger_has_spent_nothing() -> None:
    assert PrivacyLedger(1e-5).report().epsilon == 0.0
    assert np.isinf(PrivacyLedger(1e-5, [(0.0, 1.0)]).report().epsilon)  # no noise: no bound
