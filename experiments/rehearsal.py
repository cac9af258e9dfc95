"""Why clients rehearse the teacher: one round of three clients under label skew, four ways.

    python -m experiments.rehearsal --set dataset=idx data-root=../shared/data/mnist \\
        split-private=6000 split-public=2000 split-test=2000

A stand-in for the pushed knowledge (a model trained on the public set's labels, its logits the
"teacher") is loaded into a client, which then trains ``--epochs`` local epochs on its private
shard (Dirichlet ``alpha`` over ``--clients`` clients) with 0, 300 or 600 public rows rehearsed
against the teacher (:func:`fedkd.distill.train.train_with_soft_targets`), or -- FedMD's
situation -- starts from its own model trained on its shard alone. Prints each client's test
accuracy after the round: what it keeps of the classes it does not hold.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from fedkd.cli.run_config import parse_assignments
from fedkd.distill import evaluate, predict_logits, train_supervised
from fedkd.distill.train import train_with_soft_targets
from fedkd.fl.config import FedConfig, parse_run_config
from fedkd.fl.data import federated_data
from fedkd.models import build_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--show", type=int, default=3, help="how many clients to report")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    raw = {**FedConfig().to_dict(), "model": "cnn_small", "alpha": args.alpha}
    raw.update(parse_assignments(args.set))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = parse_run_config(raw)
    data = federated_data(config, args.clients)
    split, model_name, local = data.split, config.local.model, config.local

    def fresh() -> torch.nn.Module:
        return build_model(model_name, input_shape=split.input_shape, num_classes=split.num_classes)

    torch.manual_seed(config.seed)
    pushed = fresh()
    train_supervised(pushed, split.public, epochs=5, seed=config.seed)
    teacher = predict_logits(pushed, split.public.x)
    print(f"stand-in pushed model: {evaluate(pushed, split.test).accuracy:.1%} on the test set")
    print(
        "| client (its labels) | shard only | + 300 public rows | + 600 public rows "
        "| own model (FedMD) + 600 rows |"
    )
    print("|---|---|---|---|---|")
    for pid in range(min(args.show, args.clients)):
        shard = data.client_train(pid)
        cells = []
        for start, rows in (("pushed", 0), ("pushed", 300), ("pushed", 600), ("own", 600)):
            torch.manual_seed(config.seed + pid)
            model = fresh()
            if start == "pushed":
                model.load_state_dict(pushed.state_dict())
            else:  # a FedMD client's own model: trained on its shard alone first
                train_supervised(
                    model, shard, epochs=local.epochs + local.warmup_epochs, seed=config.seed
                )
            if rows:
                train_with_soft_targets(
                    model,
                    shard,
                    split.public.x,
                    teacher,
                    public_samples=rows,
                    epochs=args.epochs,
                    batch_size=local.batch_size,
                    lr=local.lr,
                    seed=config.seed + 1,
                )
            else:  # what a FedDF client without rehearsal does
                train_supervised(
                    model,
                    shard,
                    epochs=args.epochs,
                    batch_size=local.batch_size,
                    lr=local.lr,
                    seed=config.seed + 1,
                )
            cells.append(f"{evaluate(model, split.test).accuracy:.1%}")
        held = np.flatnonzero(np.bincount(shard.y, minlength=split.num_classes))
        print(
            f"| {pid} ({len(shard)} images, classes {held.tolist()}) | " + " | ".join(cells) + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
