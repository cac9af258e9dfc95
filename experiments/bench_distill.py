"""Benchmark of the server's distillation step: CPU vs CUDA fp32 vs CUDA AMP, in one run.

    python -m experiments.bench_distill                       # digits, whatever devices exist
    python -m experiments.bench_distill --dataset idx --data-root ../shared/data/mnist \
        --models cnn resnet18 --epochs 5

A teacher is trained on the private pool; its logits on the public set are the soft targets
(exactly what the federated server distills from). For each student model and device the
script times ``fedkd.distill.distill`` and reports the student's test accuracy, so the GPU path
is checked for correctness as well as speed. Ratios are against the CPU run of the same call.
Writes ``bench_distill.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fedkd.data import load_split
from fedkd.distill import distill, evaluate, predict_logits, train_supervised
from fedkd.models import build_model


def _settings(cuda: bool) -> list[tuple[str, str, bool | None]]:
    rows: list[tuple[str, str, bool | None]] = [("cpu", "cpu", False)]
    if cuda:
        rows += [("cuda fp32", "cuda", False), ("cuda amp", "cuda", None)]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--models", nargs="*", default=["cnn"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cpu-threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="runs/bench_distill")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.cpu_threads)
    sizes = (
        {"private": 6000, "public": 2000, "test": 2000}
        if args.dataset == "idx"
        else {"private": 0.6, "public": 0.2, "test": 0.2}
    )
    split = load_split(args.dataset, data_root=args.data_root, seed=0, **sizes)
    torch.manual_seed(0)
    teacher = build_model("cnn", input_shape=split.input_shape, num_classes=split.num_classes)
    train_supervised(teacher, split.private, epochs=5, device="cpu")
    soft_targets = predict_logits(teacher, split.public.x, device="cpu")
    teacher_accuracy = evaluate(teacher, split.test, device="cpu").accuracy
    cuda = torch.cuda.is_available()
    rows = []
    for model_name in args.models:
        baseline = None
        for label, device, amp in _settings(cuda):
            torch.manual_seed(1)
            student = build_model(
                model_name, input_shape=split.input_shape, num_classes=split.num_classes
            )
            if device == "cuda":  # warm-up: kernels and the allocator, not part of the timing
                distill(
                    student,
                    split.public.x[:256],
                    teacher_logits=soft_targets[:256],
                    epochs=1,
                    device=device,
                    amp=amp,
                )
                torch.manual_seed(1)
                student = build_model(
                    model_name, input_shape=split.input_shape, num_classes=split.num_classes
                )
                torch.cuda.synchronize()
            start = time.perf_counter()
            report = distill(
                student,
                split.public.x,
                teacher_logits=soft_targets,
                temperature=2.0,
                epochs=args.epochs,
                batch_size=args.batch_size,
                device=device,
                amp=amp,
            )
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            baseline = baseline or seconds
            accuracy = evaluate(student, split.test, device=device).accuracy
            rows.append(
                {
                    "model": model_name,
                    "setting": label,
                    "seconds": seconds,
                    "speedup_vs_cpu": baseline / seconds,
                    "student_accuracy": accuracy,
                    "final_loss": report.losses[-1],
                    "samples": len(split.public),
                    "epochs": args.epochs,
                }
            )
            print(
                f"{model_name:>13} {label:>10}: {seconds:7.2f} s  x{baseline / seconds:6.1f} "
                f"vs cpu  student acc {accuracy:.4f}  loss {report.losses[-1]:.4f}",
                flush=True,
            )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_distill.json").write_text(
        json.dumps(
            {
                "dataset": args.dataset,
                "teacher_accuracy": teacher_accuracy,
                "rows": rows,
                "torch": torch.__version__,
                "cpu_threads": args.cpu_threads,
                "gpu": torch.cuda.get_device_name(0) if cuda else None,
                "machine": platform.machine(),
                "numpy": np.__version__,
            },
            indent=2,
        )
    )
    print(f"teacher test accuracy {teacher_accuracy:.4f}; written to {out / 'bench_distill.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
