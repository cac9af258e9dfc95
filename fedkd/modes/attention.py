"""Attention to fixed context: distil a dynamic-attention encoder into a fixed-context student.

The sequence task is generated from an image dataset: each image's rows are tokens (``H`` tokens
of ``C * W`` features), placed at a random vertical offset inside a longer zero-padded sequence of
``H + max_shift`` tokens, so the informative tokens sit at a different position in every sequence.

- Teacher (:class:`DynamicAttentionEncoder`): token embedding + positions, one self-attention
  block (``nn.MultiheadAttention``, residual, LayerNorm, feed-forward) and attention pooling whose
  query is computed from the sequence itself (its mean token), then a linear head.
- Student (:class:`FixedContextEncoder`): the same embedding, feed-forward block and head with the
  attention replaced by one learned, input-independent context vector: ``"context"`` pooling
  scores every token against that single learned query (Yang et al. 2016's word context vector);
  ``"static"`` pooling uses learned per-position weights, the same for every input.

The student is distilled from the teacher (``kd_loss`` through :func:`fedkd.distill.distill`) and
also trained alone on hard labels as the reference; accuracy and CPU latency per batch (median of
repeats) show the accuracy lost against the speed gained.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from fedkd.data import ArrayDataset, load_split
from fedkd.distill import distill, evaluate, resolve_device, train_supervised
from fedkd.models import count_parameters
from fedkd.modes.common import cpu_latency_ms, save_figure, seed_everything, write_results

STUDENT_POOLINGS = ("context", "static")


@dataclass(frozen=True)
class AttentionConfig:
    """Settings of the attention-to-fixed-context mode (defaults: 1-2 minutes on 2 CPU cores)."""

    dataset: str = field(default="digits", metadata={"help": "dataset name for load_split"})
    data_root: str | None = field(default=None, metadata={"help": "data folder (idx/torchvision)"})
    max_shift: int = field(default=8, metadata={"help": "padding tokens; random offset range"})
    d_model: int = field(default=64, metadata={"help": "token embedding width"})
    num_heads: int = field(default=4, metadata={"help": "attention heads of the teacher"})
    student_pooling: str = field(default="context", metadata={"help": "context | static"})
    epochs: int = field(default=40, metadata={"help": "training epochs of every model"})
    batch_size: int = 64
    lr: float = 2e-3
    temperature: float = field(default=4.0, metadata={"help": "distillation temperature"})
    hard_label_weight: float = field(default=0.0, metadata={"help": "CE weight in the KD loss"})
    timing_batch_size: int = field(default=256, metadata={"help": "batch size for latency"})
    timing_repeats: int = field(default=30, metadata={"help": "timed forward passes (median)"})
    max_train: int | None = field(default=None, metadata={"help": "cap on training sequences"})
    seed: int = 0
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or auto"})


@dataclass(frozen=True)
class SequenceModelSummary:
    """Test accuracy, CPU latency per batch and size of one sequence model."""

    name: str
    accuracy: float
    latency_ms: float
    parameters: int


@dataclass(frozen=True)
class AttentionResult:
    """What :func:`run_attention` measured.

    ``accuracy_lost`` = teacher - KD student accuracy; ``kd_gain`` = KD - alone-trained student
    accuracy; ``speedup`` = teacher latency / student latency (both on the CPU).
    """

    teacher: SequenceModelSummary
    student_kd: SequenceModelSummary
    student_alone: SequenceModelSummary
    accuracy_lost: float
    kd_gain: float
    speedup: float
    sequence_length: int
    token_features: int
    out_dir: str


@dataclass(frozen=True)
class SequenceData:
    """Token sequences stored as ``(N, 1, L, F)`` "images" and each one's row offset ``(N,)``."""

    data: ArrayDataset
    offsets: np.ndarray


def image_rows_to_sequences(data: ArrayDataset, *, max_shift: int, seed: int) -> SequenceData:
    """Turn images into token sequences at random offsets.

    Parameters
    ----------
    data : ArrayDataset
        Images ``(N, C, H, W)``.
    max_shift : int
        Zero tokens added; each image's ``H`` row tokens start at an offset in ``[0, max_shift]``.
    seed : int
        Seed of the offsets.

    Returns
    -------
    SequenceData
        Sequences as ``(N, 1, H + max_shift, C * W)`` "images" (so the generic training loops
        accept them) and the offsets ``(N,)``.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    n, channels, height, width = data.x.shape
    tokens = data.x.transpose(0, 2, 1, 3).reshape(n, height, channels * width)  # (N, H, C*W)
    offsets = np.asarray(np.random.default_rng(seed).integers(0, max_shift + 1, size=n))
    seqs = np.zeros((n, height + max_shift, channels * width), dtype=np.float32)
    for i, offset in enumerate(offsets):
        seqs[i, offset : offset + height] = tokens[i]
    return SequenceData(ArrayDataset(x=seqs[:, None], y=data.y), offsets)


class _TokenEncoder(nn.Module):
    """Shared parts: token embedding + learned positions, feed-forward block, head."""

    def __init__(self, *, seq_len: int, features: int, d_model: int, num_classes: int) -> None:
        super().__init__()
        self.embed = nn.Linear(features, d_model)
        self.positions = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Linear(2 * d_model, d_model)
        )
        self.ffn_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def tokens(self, x: Tensor) -> Tensor:
        """Embed ``(B, 1, L, F)`` inputs into ``(B, L, d_model)`` tokens."""
        return self.embed(x.squeeze(1)) + self.positions  # (B, L, d)

    def feed_forward(self, h: Tensor) -> Tensor:
        """Residual feed-forward block on ``(B, L, d)`` tokens."""
        return self.ffn_norm(h + self.ffn(h))


class DynamicAttentionEncoder(_TokenEncoder):
    """Teacher: self-attention block + pooling with a query computed from the sequence."""

    def __init__(
        self, *, seq_len: int, features: int, d_model: int, num_heads: int, num_classes: int
    ) -> None:
        super().__init__(
            seq_len=seq_len, features=features, d_model=d_model, num_classes=num_classes
        )
        self.self_attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.attn_norm = nn.LayerNorm(d_model)
        self.query = nn.Linear(d_model, d_model)
        self.pool_attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)

    def _pool(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.tokens(x)
        attended, _ = self.self_attn(h, h, h, need_weights=False)
        h = self.feed_forward(self.attn_norm(h + attended))  # (B, L, d)
        query = self.query(h.mean(dim=1, keepdim=True))  # (B, 1, d): depends on the input
        pooled, weights = self.pool_attn(query, h, h)  # (B, 1, d), (B, 1, L)
        return pooled.squeeze(1), weights.squeeze(1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K)`` of sequences ``(B, 1, L, F)``."""
        return self.head(self._pool(x)[0])

    def pooling_weights(self, x: Tensor) -> Tensor:
        """Attention weights ``(B, L)`` of the pooling step (averaged over heads)."""
        return self._pool(x)[1]


class _ContextScores(nn.Module):
    """Scores ``(B, L)`` of every token against one learned context vector (the fixed query)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.key = nn.Linear(d_model, d_model)
        self.context = nn.Parameter(torch.randn(d_model) * 0.02)

    def forward(self, h: Tensor) -> Tensor:
        return self.key(h) @ self.context / math.sqrt(h.shape[-1])  # (B, L)


class _StaticScores(nn.Module):
    """Learned per-position scores ``(B, L)``, identical for every input."""

    def __init__(self, seq_len: int) -> None:
        super().__init__()
        self.position_scores = nn.Parameter(torch.zeros(seq_len))

    def forward(self, h: Tensor) -> Tensor:
        return self.position_scores.expand(h.shape[0], -1)  # (B, L)


class FixedContextEncoder(_TokenEncoder):
    """Student: no self-attention; pooling against one learned, input-independent context."""

    def __init__(
        self, *, seq_len: int, features: int, d_model: int, num_classes: int, pooling: str
    ) -> None:
        if pooling not in STUDENT_POOLINGS:
            raise ValueError(f"unknown student pooling {pooling!r}; known: {STUDENT_POOLINGS}")
        super().__init__(
            seq_len=seq_len, features=features, d_model=d_model, num_classes=num_classes
        )
        self.pooling = pooling
        self.scores: nn.Module = (
            _ContextScores(d_model) if pooling == "context" else _StaticScores(seq_len)
        )

    def _pool(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.feed_forward(self.tokens(x))  # (B, L, d)
        weights = self.scores(h).softmax(dim=-1)  # (B, L)
        return (weights.unsqueeze(-1) * h).sum(dim=1), weights  # (B, d), (B, L)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K)`` of sequences ``(B, 1, L, F)``."""
        return self.head(self._pool(x)[0])

    def pooling_weights(self, x: Tensor) -> Tensor:
        """Pooling weights ``(B, L)`` over the tokens."""
        return self._pool(x)[1]


def _summary(
    name: str, model: nn.Module, test: ArrayDataset, config: AttentionConfig, device: torch.device
) -> SequenceModelSummary:
    accuracy = evaluate(model, test, device=device).accuracy
    batch = torch.from_numpy(test.x[: config.timing_batch_size])
    latency = cpu_latency_ms(model, batch, repeats=config.timing_repeats)
    model.to(device)
    return SequenceModelSummary(name, accuracy, latency, count_parameters(model))


def _plot_tradeoff(summaries: list[SequenceModelSummary], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for s in summaries:
        ax.scatter(s.latency_ms, s.accuracy, s=60)
        ax.annotate(s.name, (s.latency_ms, s.accuracy), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("CPU latency per batch (ms, median)")
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy vs inference time")
    save_figure(fig, path)


@torch.no_grad()
def _plot_pooling(
    teacher: DynamicAttentionEncoder,
    student: FixedContextEncoder,
    test: ArrayDataset,
    offsets: np.ndarray,
    height: int,
    path: Path,
) -> None:
    count = min(8, len(test))
    x = torch.from_numpy(test.x[:count])
    teacher.cpu().eval()
    student.cpu().eval()
    maps = [teacher.pooling_weights(x).numpy(), student.pooling_weights(x).numpy()]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, weights, title in zip(
        axes, maps, ("teacher (dynamic)", "student KD (fixed)"), strict=True
    ):
        ax.imshow(weights, aspect="auto", cmap="viridis")
        for row, offset in enumerate(offsets[:count]):
            ax.plot([offset - 0.5, offset + height - 0.5], [row, row], color="red", lw=1)
        ax.set_title(title)
        ax.set_xlabel("token position (red: image rows)")
    axes[0].set_ylabel("test sequence")
    save_figure(fig, path)


def run_attention(config: AttentionConfig, out_dir: str | Path) -> AttentionResult:
    """Train the dynamic-attention teacher and the fixed-context students; measure the trade-off.

    Parameters
    ----------
    config : AttentionConfig
        Settings.
    out_dir : str or Path
        Folder for ``results.json``, ``accuracy_vs_latency.png`` and ``pooling_weights.png``.

    Returns
    -------
    AttentionResult
        Accuracy, latency and size of teacher, KD student and alone-trained student.
    """
    if config.student_pooling not in STUDENT_POOLINGS:
        raise ValueError(
            f"unknown student_pooling {config.student_pooling!r}; known: {STUDENT_POOLINGS}"
        )
    out = Path(out_dir)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    split = load_split(config.dataset, seed=config.seed, data_root=config.data_root)
    train_images = split.private
    if config.max_train is not None:
        train_images = train_images.subset(np.arange(min(config.max_train, len(train_images))))
    train = image_rows_to_sequences(train_images, max_shift=config.max_shift, seed=config.seed).data
    test_sequences = image_rows_to_sequences(
        split.test, max_shift=config.max_shift, seed=config.seed + 1
    )
    test = test_sequences.data
    _, _, seq_len, features = train.x.shape
    dims = {
        "seq_len": seq_len,
        "features": features,
        "d_model": config.d_model,
        "num_classes": split.num_classes,
    }
    progress: dict[str, object] = {"sequence_length": seq_len, "token_features": features}

    seed_everything(config.seed)
    teacher = DynamicAttentionEncoder(num_heads=config.num_heads, **dims)
    train_supervised(
        teacher,
        train,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        device=device,
        seed=config.seed,
    )
    teacher_summary = _summary("teacher", teacher, test, config, device)
    progress["teacher"] = asdict(teacher_summary)
    write_results(out, config, progress)

    def new_student() -> FixedContextEncoder:
        seed_everything(config.seed + 1)  # both students start from the same weights
        return FixedContextEncoder(pooling=config.student_pooling, **dims)

    student_kd = new_student()
    distill(
        student_kd,
        train.x,
        teacher_model=teacher.to(device),
        temperature=config.temperature,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        labels=train.y,
        hard_label_weight=config.hard_label_weight,
        device=device,
        seed=config.seed,
    )
    kd_summary = _summary("student_kd", student_kd, test, config, device)
    progress["student_kd"] = asdict(kd_summary)
    write_results(out, config, progress)

    student_alone = new_student()
    train_supervised(
        student_alone,
        train,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        device=device,
        seed=config.seed,
    )
    alone_summary = _summary("student_alone", student_alone, test, config, device)

    result = AttentionResult(
        teacher=teacher_summary,
        student_kd=kd_summary,
        student_alone=alone_summary,
        accuracy_lost=teacher_summary.accuracy - kd_summary.accuracy,
        kd_gain=kd_summary.accuracy - alone_summary.accuracy,
        speedup=teacher_summary.latency_ms / max(kd_summary.latency_ms, 1e-9),
        sequence_length=seq_len,
        token_features=features,
        out_dir=str(out),
    )
    write_results(out, config, result)
    _plot_tradeoff([teacher_summary, kd_summary, alone_summary], out / "accuracy_vs_latency.png")
    _plot_pooling(
        teacher,
        student_kd,
        test,
        test_sequences.offsets,
        split.input_shape[1],
        out / "pooling_weights.png",
    )
    return result
