"""``fedkd attack <study>|all``: dispatch to one study's runner, or to the whole report.

    fedkd attack label-inference [--dataset idx --data-root DIR] [--seeds 0 1] [--out DIR]
    fedkd attack all [--out runs/attacks]

Exit codes: 0 done, 1 a study failed, 2 bad command line.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

STUDIES = {
    "secagg-isolation": "experiments.attacks.secagg_isolation",
    "label-inference": "experiments.attacks.label_inference",
    "membership": "experiments.attacks.membership",
    "byzantine": "experiments.attacks.byzantine",
    "crafted-queries": "experiments.attacks.crafted_queries",
    "differencing": "experiments.attacks.differencing",
    "all": "experiments.attacks.all",
}
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """``argv[0]`` names the study (or ``all``); the rest goes to its ``main``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        print("studies: " + ", ".join(STUDIES))
        return 0 if args else EXIT_USAGE
    study, rest = args[0], args[1:]
    if study not in STUDIES:
        print(
            f"fedkd attack: unknown study {study!r}; known: {', '.join(STUDIES)}", file=sys.stderr
        )
        return EXIT_USAGE
    module = importlib.import_module(STUDIES[study])
    return int(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
