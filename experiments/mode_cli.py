"""The command line shared by the single-node experiment scripts (``fedkd <mode>``).

Every mode script is a summary function plus a ``main`` that calls :func:`run_mode_cli`: flags
from the mode's config dataclass, an output folder (``--out-dir``, alias ``--out``), the run, a
printed summary and where the results went.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

from fedkd.modes.common import RESULTS_FILE, add_config_arguments, config_from_args

__all__ = ["RESULTS_JSON_LINE", "run_mode_cli"]

RESULTS_JSON_LINE = f"results: {{out}}/{RESULTS_FILE}"
"""A ``results_line`` naming the results file rather than the folder."""

ConfigT = TypeVar("ConfigT")
ResultT = TypeVar("ResultT")


def run_mode_cli(
    name: str,
    config_cls: type[ConfigT],
    run: Callable[[ConfigT, str], ResultT],
    summarize: Callable[[ResultT], str],
    argv: list[str] | None = None,
    doc: str | None = None,
    *,
    results_line: str = "results and plots in {out}",
    catch_errors: bool = True,
) -> int:
    """Parse flags onto ``config_cls``, run the mode, print its summary; return the exit code.

    Parameters
    ----------
    name : str
        The mode's name: the program is ``fedkd <name>`` and the default output folder
        ``runs/<name>``.
    config_cls : type
        The mode's config dataclass; each field becomes a ``--flag-name``.
    run : callable
        ``run(config, out_dir) -> result``, the mode itself.
    summarize : callable
        ``summarize(result) -> str``, the text printed after the run (tables and notes).
    argv : list of str, optional
        The arguments; ``None`` reads ``sys.argv``.
    doc : str, optional
        The script's docstring; its first line is the ``--help`` description.
    results_line : str
        The line printed last, where ``{out}`` is the output folder.
    catch_errors : bool
        ``True``: a ``ValueError`` or ``KeyError`` (bad flag values, unknown names) is printed as
        ``fedkd <name>: error: ...`` on stderr and the exit code is 2. ``False``: it propagates.

    Returns
    -------
    int
        0 on success, 2 on a caught error.
    """
    description = doc.splitlines()[0] if doc else None
    parser = argparse.ArgumentParser(prog=f"fedkd {name}", description=description)
    parser.add_argument(
        "--out-dir", "--out", dest="out_dir", default=f"runs/{name}", help="output folder"
    )
    add_config_arguments(parser, config_cls)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(config_cls, args)
        result = run(config, args.out_dir)
    except (ValueError, KeyError) as error:
        if not catch_errors:
            raise
        print(f"fedkd {name}: error: {error}", file=sys.stderr)
        return 2
    print(summarize(result))
    print(results_line.format(out=args.out_dir))
    return 0
