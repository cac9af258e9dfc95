"""What a student can learn from the public set at all: the ceiling of logit-only distillation.

    python -m experiments.public_ceiling --models cnn_small cnn --seeds 0 1 2 \\
        --set dataset=idx data-root=../shared/data/mnist split-private=6000 \\
        split-public=2000 split-test=2000

In FedKD (FedMD and FedDF as run here) the student sees only the public set, labelled by the
ensemble teacher. No teacher can do better than the public set's true labels, so the student
trained on those labels (the public labels are never used in a federated run) bounds any
distilled student of that architecture and public-set size. Beside it, the same architecture
trained on the private pool (``method=central``'s setting) shows what the federation's data
could give a model that sees it. Both use the run config's local optimiser and batch size;
``--epochs`` epochs with early stopping on a seeded tenth of the training set, or
(``--patience 0``) all ``--epochs`` epochs on all of it.

Prints a markdown table, mean ± sample std over the seeds (one row per model and training set).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from fedkd.cli.run_config import parse_assignments
from fedkd.data import ArrayDataset, DataSplit
from fedkd.distill import evaluate, train_supervised
from fedkd.fl.config import FedConfig, parse_run_config
from fedkd.fl.data import load_run_split
from fedkd.models import build_model


def _held_out(data: ArrayDataset, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    """A seeded 90/10 split of ``data`` (train, validation)."""
    order = np.random.default_rng(seed).permutation(len(data))
    cut = max(1, len(data) // 10)
    return data.subset(order[cut:]), data.subset(order[:cut])


def accuracy_on(
    model_name: str,
    data: ArrayDataset,
    split: DataSplit,
    *,
    config: FedConfig,
    seed: int,
    epochs: int,
    patience: int = 5,
) -> float:
    """Test accuracy of ``model_name`` trained on ``data``'s true labels (early-stopped after
    ``patience`` epochs without a better validation score; 0: every epoch on all of ``data``)."""
    torch.manual_seed(seed)
    model = build_model(model_name, input_shape=split.input_shape, num_classes=split.num_classes)
    train, validation = _held_out(data, seed) if patience > 0 else (data, None)
    train_supervised(
        model,
        train,
        epochs=epochs,
        batch_size=config.local.batch_size,
        lr=config.local.lr,
        optimizer=config.local.optimizer,
        seed=seed,
        validation=validation,
        patience=patience or None,
    )
    return evaluate(model, split.test).accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["cnn_small", "cnn"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(
        "--patience", type=int, default=5, help="early-stopping patience (0: no early stopping)"
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if args.patience < 0 or args.epochs < 1:
        parser.error("--patience must be >= 0 and --epochs >= 1")
    torch.set_num_threads(1)
    print("| model | trained on (true labels) | rows | test accuracy | seeds | s / seed |")
    print("|---|---|---|---|---|---|")
    configs = {}
    for seed in args.seeds:  # the run config (and so the split) of each seed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = {**FedConfig().to_dict(), **parse_assignments(args.set), "seed": seed}
            configs[seed] = parse_run_config(raw)
    for model_name in args.models:
        scores: dict[str, list[float]] = {"public": [], "private": []}
        rows, seconds = {}, {"public": 0.0, "private": 0.0}
        for seed, config in configs.items():
            split = load_run_split(config)
            for name in scores:
                start = time.perf_counter()
                data = getattr(split, name)
                scores[name].append(
                    accuracy_on(
                        model_name,
                        data,
                        split,
                        config=config,
                        seed=seed,
                        epochs=args.epochs,
                        patience=args.patience,
                    )
                )
                rows[name] = len(data)
                seconds[name] += time.perf_counter() - start
        for name, values in scores.items():
            spread = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
            per_seed = ", ".join(f"{100 * v:.2f}" for v in values)
            print(
                f"| {model_name} | {name} | {rows[name]} | "
                f"{100 * statistics.mean(values):.1f}{spread}% ({per_seed}) | "
                f"{' '.join(map(str, args.seeds))} | {seconds[name] / len(args.seeds):.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
