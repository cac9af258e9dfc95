"""Spread over seeds: sample std, t-interval, paired differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedkd.modes.common import to_jsonable
from fedkd.modes.stats import cell, interval, paired_difference, spread


def test_spread_uses_the_sample_std_and_a_t_interval() -> None:
    values = [0.91, 0.93, 0.95]
    s = spread(values)
    assert s.mean == pytest.approx(0.93) and s.n == 3
    assert s.std == pytest.approx(np.std(values, ddof=1))  # 0.02, not ddof=0's 0.0163
    half = stats.t.ppf(0.975, 2) * 0.02 / math.sqrt(3)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.93 - half, 0.93 + half))
    assert s.excludes(0.8) and not s.excludes(0.93)
    assert cell(s) == "0.9300 ± 0.0200" and interval(s).startswith("[0.8")


def test_one_value_has_no_spread_and_is_null_in_json() -> None:
    s = spread([0.5])
    assert math.isnan(s.std) and not s.excludes(0.0)
    payload = to_jsonable(s)
    assert payload["std"] is None and payload["ci_low"] is None and payload["values"] == [0.5]
    assert interval(s) == "-" and cell(None) == "-"


def test_paired_difference_and_bad_input() -> None:
    d = paired_difference([0.9, 0.8, 0.85], [0.8, 0.7, 0.76])
    assert d.values == pytest.approx((0.1, 0.1, 0.09))
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-empty"):
        spread([])
    with pytest.raises(ValueError, match="finite"):
        spread([1.0, float("nan")])
