"""What the fixed-point width of secure aggregation costs: accuracy and bytes against 40 bits.

    python -m experiments.bits_tradeoff                       # digits, 10 clients, 3 rounds
    python -m experiments.bits_tradeoff --bits 8 12 16 24 40 --set dataset=idx \\
        data-root=../shared/data/mnist split-private=6000 split-public=2000 split-test=2000

Each width runs the same federation in process (``fedkd.fl.experiment.simulate``: the library's
round over an in-process transport, same seed, so the clients' work is identical until the
decoded teachers differ). Prints, per width, the teacher's and the student's accuracy, the
largest difference of round 1's teacher probabilities from the widest run's (the clients' work
up to there is identical, so this is the quantisation alone), and the bytes a client
uploads per round, with the ratio to FedAvg's ``cnn_small`` and ``resnet18`` weights.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings

import numpy as np

from fedkd.cli.run_config import parse_assignments
from fedkd.fl.config import FedConfig, parse_run_config
from fedkd.fl.data import load_run_split
from fedkd.fl.experiment import simulate
from fedkd.models import build_model


def _weights_bytes(model: str, input_shape: tuple[int, int, int], classes: int) -> int:
    net = build_model(model, input_shape=input_shape, num_classes=classes)
    return sum(v.numel() * v.element_size() for v in net.state_dict().values())


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 12, 16, 24, 40])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    base = {**FedConfig().to_dict(), "num-rounds": args.rounds, "secagg-roster": ""}
    base.update(parse_assignments(args.set))
    widest = max(args.bits)
    rows, teachers = [], {}
    with tempfile.TemporaryDirectory() as out:
        for bits in sorted(args.bits, reverse=True):
            config = {**base, "secagg-bits": bits, "out-dir": out, "run-name": f"bits-{bits}"}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                recorder = simulate(config, args.clients)
            history = json.loads((recorder.path / "history.json").read_text())
            last = history[-1]
            folder = recorder.path / "teachers"
            # Round 1's teacher: the clients' work before it is identical at every width.
            teachers[bits] = _softmax(np.load(folder / "round-001.npy"))
            rows.append(
                {
                    "bits": bits,
                    "teacher": last["teacher_accuracy"],
                    "student": last["student_accuracy"],
                    "up_kB": last["bytes_up"] / max(last["sampled"], 1) / 1e3,
                }
            )
    loaded = load_run_split(parse_run_config(base))
    shape, classes = loaded.input_shape, loaded.num_classes
    fedavg = {m: _weights_bytes(m, shape, classes) / 1e3 for m in ("cnn_small", "resnet18")}
    print(
        f"{args.clients} clients, {args.rounds} rounds, last round; FedAvg upload: "
        + ", ".join(f"{m} {kb:.0f} kB" for m, kb in fedavg.items())
    )
    print(
        "| bits | teacher | student | round-1 teacher prob diff vs widest | kB up / client "
        "| vs FedAvg cnn_small | vs resnet18 |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: r["bits"]):
        diff = float(np.abs(teachers[row["bits"]] - teachers[widest]).max())
        print(
            f"| {row['bits']} | {row['teacher']:.4f} | {row['student']:.4f} | {diff:.2e} | "
            f"{row['up_kB']:.1f} | {row['up_kB'] / fedavg['cnn_small']:.1%} | "
            f"{row['up_kB'] / fedavg['resnet18']:.2%} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
