"""``fedkd attack secagg-isolation``: see :mod:`fedkd.attacks.secagg_isolation`.

The Flower column runs :mod:`experiments.attacks.flower_isolation` against Flower's real
``SecAggPlusWorkflow`` and ``secaggplus_mod`` (this script may import ``flwr``; the library
may not).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from experiments.attacks.common import run_study
from experiments.attacks.flower_isolation import (
    key_substitution,
    overlapping_lists,
    replay_difference,
)
from experiments.flower_secaggplus import run_flower_exact
from fedkd.attacks import StudyOptions, StudyResult
from fedkd.attacks import secagg_isolation as study

TARGET = 0


def flower(name: str, vectors: list[np.ndarray], threshold: int, clip: float) -> dict | None:
    """One case against Flower's SecAgg+ (full SecAgg); ``None`` for cases not implemented."""
    truth = np.clip(vectors[TARGET], -clip, clip)
    if name.startswith("honest"):
        result = run_flower_exact(
            vectors, neighbours=None, threshold=threshold, dropped=(), clip=clip
        )
        assert result.mean is not None
        return {
            "verdict": "sum of all only",
            "group": list(range(len(vectors))),
            "relative_error": float("nan"),
            "refusal": "",
        }
    attacks = {
        "overlapping survivor/dropped lists": overlapping_lists,
        "replay under a fresh round id": replay_difference,
        "key substitution": key_substitution,
    }
    if name not in attacks:
        return None
    got = attacks[name](vectors, target=TARGET, neighbours=None, threshold=threshold, clip=clip)
    error = float(np.linalg.norm(got - truth) / np.linalg.norm(truth))
    return {"verdict": "recovered", "group": [TARGET], "relative_error": error, "refusal": ""}


def run(options: StudyOptions) -> StudyResult:
    """The library study with the Flower column filled in."""
    return study.run(options, flower=flower)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; exit 0 done, 1 failed, 2 bad arguments."""
    return run_study("secagg-isolation", (study.__doc__ or "").split("\n")[0], run, argv)


if __name__ == "__main__":
    sys.exit(main())
