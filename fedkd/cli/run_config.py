"""The app's run config on the launcher side: defaults, ``--set`` parsing, the early check.

The defaults have one declaration, the library's (:class:`fedkd.fl.config.FedConfig`).
``flwr run .`` reads them from the Flower app's ``pyproject.toml`` (``[tool.flwr.app.config]``),
a copy a test holds equal to the library's. So the launcher reads the app's table when there is
an app folder (``--app DIR``, or the checkout this package runs from) and the library's
otherwise (an installed wheel has no ``pyproject.toml``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType


def checkout_root() -> Path | None:
    """The fedkd checkout this package runs from (its ``pyproject.toml`` beside ``server/``
    and ``clients/``: the Flower app), or ``None`` when it is installed from a wheel."""
    root = Path(__file__).resolve().parents[2]
    app_files = ("pyproject.toml", "server/app.py", "clients/app.py")
    return root if all((root / name).is_file() for name in app_files) else None


CHECKOUT = checkout_root()


def flower_app(app_dir: Path | None, needed_by: str = "--engine flower") -> Path:
    """The Flower app folder: ``app_dir``, else the checkout this package runs from.

    Raises
    ------
    ValueError
        When there is neither (an installed wheel ships the library, not the Flower app), or
        ``app_dir`` has no ``pyproject.toml``.
    """
    app = app_dir or CHECKOUT
    if app is None:
        raise ValueError(
            f"{needed_by} needs the Flower app (a fedkd checkout's folder: pyproject.toml, "
            "server/, clients/): pass --app DIR"
        )
    if not (app / "pyproject.toml").is_file():
        raise ValueError(f"--app {app}: no pyproject.toml there (not a Flower app folder)")
    return app.resolve()


def parse_assignments(items: list[str]) -> dict[str, object]:
    """``key=value`` strings to a run-config dict (numbers and booleans parsed).

    Raises
    ------
    ValueError
        When an item has no ``=`` or an empty key.
    """
    parsed: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        value: object = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    continue
        parsed[key.strip()] = value
    return parsed


def app_run_config(app_dir: Path | None = None) -> dict[str, object]:
    """The default run config: ``[tool.flwr.app.config]`` of the app folder (``app_dir``, else
    the checkout), or the library's defaults when there is no app folder (an installed wheel).

    Raises
    ------
    ValueError
        When ``app_dir`` is given but has no ``pyproject.toml``.
    """
    if app_dir is None and CHECKOUT is None:
        from fedkd.fl.config import FedConfig

        return FedConfig().to_dict()
    return dict(_app_table(flower_app(app_dir) / "pyproject.toml"))


@functools.cache
def _app_table(pyproject: Path) -> Mapping[str, object]:
    """``[tool.flwr.app.config]`` of ``pyproject``, read once per process: a ``fedkd run``
    asks for it up to three times (resume, check, Ray engine) and ``compare`` once per run."""
    import tomllib

    with pyproject.open("rb") as handle:
        project = tomllib.load(handle)
    return MappingProxyType(dict(project["tool"]["flwr"]["app"]["config"]))


PATH_KEYS = ("out-dir", "data-root")


def absolute_paths(overrides: Mapping[str, object]) -> dict[str, object]:
    """Run-config overrides with relative ``out-dir`` / ``data-root`` made absolute.

    The ServerApp runs from a copy of the app under the Flower home, so a relative path
    would be read from there; the user means their current folder.
    """
    fixed = dict(overrides)
    for key in PATH_KEYS:
        value = fixed.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            fixed[key] = str(Path(value).resolve())
    return fixed


def check_run_config(
    overrides: Mapping[str, object],
    num_clients: int,
    app_dir: Path | None = None,
    *,
    local: bool = True,
) -> None:
    """Validate the whole run config (app defaults + overrides) before anything starts.

    With ``local=False`` (a run on a deployed SuperLink, whose files -- data, roster, run
    folders -- are on the ServerApp's machine) only the keys are checked here; the ServerApp
    checks the rest before any client work.

    Raises
    ------
    ValueError
        One line naming the key and what it accepts (unknown keys, types, ranges, names,
        data, device, enough samples for ``num_clients`` clients).
    """
    defaults = app_run_config(app_dir)
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown run config key '{unknown[0]}'; known keys: {', '.join(sorted(defaults))}"
        )
    if not local:
        return
    from fedkd.fl.preflight import preflight

    with warnings.catch_warnings():  # the ServerApp repeats risky-setting warnings in its log
        warnings.simplefilter("ignore")
        preflight({**defaults, **overrides}, num_clients)


def toml_value(value: object) -> str:
    """A Python scalar written as a TOML value for ``--run-config``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
