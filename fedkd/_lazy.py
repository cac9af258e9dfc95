"""Lazy package exports (PEP 562), so that importing a light submodule stays light.

A deployed SuperNode starts a fresh ClientApp process for every message, and four of a secure
round's five messages (the secure-aggregation stages) need numpy and cryptography only. With
eager ``__init__`` imports, parsing the run config alone pulled in PyTorch (through the model
registry and ``fedkd.distill``): seconds of start-up per message, four times a round.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any


def lazy_exports(
    package: str, names: Sequence[str], modules: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a package's ``__getattr__`` and ``__dir__`` for its ``__all__``.

    Parameters
    ----------
    package
        The package's ``__name__``.
    names
        Its ``__all__``: each name is imported from the first of ``modules`` that defines it,
        on first access, and then cached on the package.
    modules
        The submodules that define ``names``.

    Returns
    -------
    tuple
        ``(__getattr__, __dir__)`` to assign at the package's top level.
    """
    exported = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name in exported:
            for module_name in modules:
                module = importlib.import_module(module_name)
                if hasattr(module, name):
                    value = getattr(module, name)
                    setattr(sys.modules[package], name, value)
                    return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, lambda: sorted(exported)
