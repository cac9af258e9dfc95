"""Server cost of distributed DP under secure aggregation, against the same round without it.

    python -m experiments.bench_dp                     # n = 20, d = 20,014 (MNIST-sized teacher)
    python -m experiments.bench_dp --n 20 50 --repeat 5

Both rounds run :func:`fedkd.secagg.driver.run_secagg` with the same inputs, 16 quantisation
bits and 10% of the clients dropping after share keys; the distributed one adds each client's
Skellam share (for ``z = 1``, ``dp-clip = 0.1``) before masking, which widens the modulus by the
noise headroom. Prints the median server seconds of each and their ratio (target <= 1.5x).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np

from fedkd.dp.plan import NoisePlan, share_variance
from fedkd.secagg.config import majority_threshold
from fedkd.secagg.driver import Stage, run_secagg
from fedkd.secagg.quantize import Quantizer


def server_seconds(n: int, d: int, variance: float, seed: int) -> float:
    """Server seconds of one round (10% dropped after share keys)."""
    rng = np.random.default_rng(seed)
    inputs = [rng.uniform(-0.01, 0.01, d) for _ in range(n)]
    dropped = set(range(max(1, n // 10)))
    result = run_secagg(
        inputs, clip=1.0, bits=16, noise_variance=variance, dropouts={Stage.MASKED_INPUT: dropped}
    )
    return result.server_seconds["total"]  # every stage the server ran


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[20])
    parser.add_argument("--d", type=int, default=20_014)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print("| n | d | secagg server s | + distributed DP server s | ratio |")
    print("|---|---|---|---|---|")
    for n in args.n:
        plan = NoisePlan("distributed", clip=0.1, noise_multiplier=1.0, sampling=1.0)
        threshold = majority_threshold(n - 1)
        variance = share_variance(
            plan, scale=Quantizer(1.0, 16).scale, length=args.d, threshold=threshold
        )
        plain, noisy = [], []
        for r in range(args.repeat):  # interleaved, so load changes hit both alike
            plain.append(server_seconds(n, args.d, 0.0, r))
            noisy.append(server_seconds(n, args.d, variance, r))
        a, b = statistics.median(plain), statistics.median(noisy)
        print(f"| {n} | {args.d} | {a:.3f} | {b:.3f} | {b / a:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
