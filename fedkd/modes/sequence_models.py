"""Sequence models of the attention mode: a dynamic-attention teacher, a fixed-context student.

The sequence task is built from an image dataset (:func:`image_rows_to_sequences`): each image's
rows are tokens (``H`` tokens of ``C * W`` features), placed at a random offset inside a longer
sequence of ``H + max_shift`` tokens whose other tokens are uniform noise in ``[0, noise]``, so
the informative tokens sit at a different place in every sequence and a model must find them.

- :class:`DynamicAttentionEncoder` (teacher): token embedding + positions, one self-attention
  block (``nn.MultiheadAttention``, residual, LayerNorm, feed-forward) and attention pooling whose
  query is computed from the sequence itself (its mean token), then a linear head.
- :class:`FixedContextEncoder` (student): the same embedding, feed-forward block and head, no
  self-attention; ``"context"`` pooling scores every token against one learned,
  input-independent context vector (Yang et al. 2016); ``"static"`` uses learned per-position
  weights, the same for every input.

Both expose ``forward_features(x) -> {"pooling": (B, L), "logits": (B, K)}``: the pooling
weights are what the attention-matching loss term compares.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from fedkd.data import ArrayDataset

STUDENT_POOLINGS = ("context", "static")


@dataclass(frozen=True)
class SequenceData:
    """Token sequences stored as ``(N, 1, L, F)`` "images" and each one's row offset ``(N,)``."""

    data: ArrayDataset
    offsets: np.ndarray


def image_rows_to_sequences(
    data: ArrayDataset, *, max_shift: int, seed: int, noise: float = 0.0
) -> SequenceData:
    """Turn images into token sequences at random offsets.

    Parameters
    ----------
    data : ArrayDataset
        Images ``(N, C, H, W)``.
    max_shift : int
        Zero tokens added; each image's ``H`` row tokens start at an offset in ``[0, max_shift]``.
    seed : int
        Seed of the offsets and the noise.
    noise : float
        The other tokens are uniform in ``[0, noise]`` (0: zero padding).

    Returns
    -------
    SequenceData
        Sequences as ``(N, 1, H + max_shift, C * W)`` "images" (so the generic training loops
        accept them) and the offsets ``(N,)``.
    """
    if max_shift < 0 or noise < 0:
        raise ValueError(f"max_shift and noise must be >= 0, got {max_shift} and {noise}")
    n, channels, height, width = data.x.shape
    tokens = data.x.transpose(0, 2, 1, 3).reshape(n, height, channels * width)  # (N, H, C*W)
    rng = np.random.default_rng(seed)
    offsets = np.asarray(rng.integers(0, max_shift + 1, size=n))
    shape = (n, height + max_shift, channels * width)
    seqs = (rng.random(shape, dtype=np.float32) * np.float32(noise)).astype(np.float32)
    for i, offset in enumerate(offsets):
        seqs[i, offset : offset + height] = tokens[i]
    return SequenceData(ArrayDataset(x=seqs[:, None], y=data.y), offsets)


class _TokenEncoder(nn.Module, abc.ABC):
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

    @abc.abstractmethod
    def _pool(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled ``(B, d)`` representation and pooling weights ``(B, L)``."""

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """``{"pooling": (B, L) weights (head-averaged for the teacher), "logits": (B, K)}``."""
        pooled, weights = self._pool(x)
        return {"pooling": weights, "logits": self.head(pooled)}

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K)`` of sequences ``(B, 1, L, F)``."""
        return self.head(self._pool(x)[0])

    def pooling_weights(self, x: Tensor) -> Tensor:
        """Pooling weights ``(B, L)`` over the tokens."""
        return self._pool(x)[1]


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
