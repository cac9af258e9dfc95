"""fedkd.fl.run_keys: every run-config key declared once, and what is derived from it.

The parser's checks, ``fedkd run --help`` and ``docs/configuration.md`` (held fresh by
``tests/test_readme.py``'s report check) all come from :data:`SETTINGS`.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkd.cli.commands import run_parser
from fedkd.fl.config import RUN_CONFIG_KEYS, FedConfig, parse_run_config
from fedkd.fl.config_doc import reference_markdown, rows
from fedkd.fl.run_keys import SETTINGS

NUMERIC = sorted(key for key, s in SETTINGS.items() if s.valid is not None)
NAMED = sorted(key for key, s in SETTINGS.items() if s.choices is not None)


def test_every_key_is_declared_with_a_reader_and_help_and_lands_on_a_field() -> None:
    assert set(RUN_CONFIG_KEYS) == set(SETTINGS)
    defaults = FedConfig().to_dict()
    for key, setting in SETTINGS.items():
        assert setting.reads in ("server", "client", "both"), key
        assert setting.help.strip(), key
        assert key in defaults, key
        # a checked key says what it accepts, and its own default passes its check
        if setting.valid is not None:
            assert setting.accepted and setting.valid(defaults[key]), key
        if setting.choices is not None:
            assert defaults[key] in setting.names(), key


# keys whose value is a path, a name list checked elsewhere, or free text
FREE_TEXT = {"data-root", "out-dir", "run-name", "resume", "log", "client-models", "secagg-roster"}


def test_every_number_has_a_range_and_every_name_its_choices() -> None:
    for key, default in FedConfig().to_dict().items():
        setting = SETTINGS[key]
        if isinstance(default, bool):
            assert setting.valid is None and setting.choices is None, key
        elif isinstance(default, (int, float)):
            assert setting.valid is not None, f"{key} is a number without a declared range"
        else:
            assert setting.choices is not None or key in FREE_TEXT, f"{key}: no choices"


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(NUMERIC),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**6), max_value=10**6),
    ),
)
def test_a_value_outside_a_keys_declared_range_is_refused_naming_key_and_range(
    key: str, value: float
) -> None:
    kind = type(FedConfig().to_dict()[key])
    if kind is int and (isinstance(value, float) and not value.is_integer()):
        value = math.floor(value) if math.isfinite(value) else value
    try:
        coerced = kind(value)
    except (ValueError, OverflowError):
        return  # not a number of the key's type: the type check's business
    valid = SETTINGS[key].valid
    assert valid is not None
    if valid(coerced):
        return
    with pytest.raises(ValueError, match=key) as refused:
        parse_run_config({key: value})
    assert key in str(refused.value)


@pytest.mark.parametrize("key", NAMED)
def test_a_name_outside_a_keys_choices_is_refused_listing_them(key: str) -> None:
    with pytest.raises(ValueError, match=f"'{key}' = 'no-such-name'; accepted: ") as refused:
        parse_run_config({key: "no-such-name"})
    assert ", ".join(SETTINGS[key].names()) in str(refused.value)


def test_help_and_the_docs_page_list_every_key_with_its_default() -> None:
    text = run_parser().format_help()
    page = reference_markdown()
    assert [row.key for row in rows()] != [] and {row.key for row in rows()} == set(SETTINGS)
    for row in rows():
        assert f"  {row.key} = {row.default}  " in text, row.key
        assert f"| `{row.key}` | `{row.default}` |" in page, row.key
