"""``fedkd attack differencing``: see :mod:`fedkd.attacks.differencing`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from experiments.attacks.common import run_study
from fedkd.attacks import differencing as study


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; exit 0 done, 1 failed, 2 bad arguments."""
    return run_study("differencing", (study.__doc__ or "").split("\n")[0], study.run, argv)


if __name__ == "__main__":
    sys.exit(main())
