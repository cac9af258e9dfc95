"""Attention-to-fixed-context mode: sequence construction, models, and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from experiments.attention import main
from fedkd.data import ArrayDataset
from fedkd.modes.attention import (
    DynamicAttentionEncoder,
    FixedContextEncoder,
    image_rows_to_sequences,
)


def _images(n: int = 5) -> ArrayDataset:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 1.0, size=(n, 2, 4, 3)).astype(np.float32)  # (N, C, H, W)
    return ArrayDataset(x=x, y=np.arange(n, dtype=np.int64) % 3)


def test_rows_become_tokens_at_their_offsets() -> None:
    images = _images()
    seqs = image_rows_to_sequences(images, max_shift=3, seed=1)
    assert seqs.data.x.shape == (5, 1, 4 + 3, 2 * 3)
    for i, offset in enumerate(seqs.offsets):
        assert 0 <= offset <= 3
        tokens = seqs.data.x[i, 0]
        expected = images.x[i].transpose(1, 0, 2).reshape(4, 6)  # row h = all channels' row h
        np.testing.assert_array_equal(tokens[offset : offset + 4], expected)
        assert np.count_nonzero(tokens) == expected.size  # padding tokens are zero
    np.testing.assert_array_equal(seqs.data.y, images.y)
    with pytest.raises(ValueError, match="max_shift"):
        image_rows_to_sequences(images, max_shift=-1, seed=0)


def test_pooling_weights_dynamic_vs_fixed() -> None:
    torch.manual_seed(0)
    dims = {"seq_len": 6, "features": 4, "d_model": 8, "num_classes": 3}
    x = torch.rand(5, 1, 6, 4)
    teacher = DynamicAttentionEncoder(num_heads=2, **dims).eval()
    static = FixedContextEncoder(pooling="static", **dims).eval()
    context = FixedContextEncoder(pooling="context", **dims).eval()
    with torch.no_grad():
        for model in (teacher, static, context):
            assert model(x).shape == (5, 3)
            weights = model.pooling_weights(x)
            assert weights.shape == (5, 6)
            torch.testing.assert_close(weights.sum(dim=1), torch.ones(5))
        static_weights = static.pooling_weights(x)
        torch.nn.init.normal_(static.scores.position_scores)
        learned = static.pooling_weights(x)
        torch.testing.assert_close(learned, learned[:1].expand(5, -1))  # same for every input
        assert not torch.allclose(learned, static_weights)
        teacher_weights = teacher.pooling_weights(x)
        assert not torch.allclose(teacher_weights, teacher_weights[:1].expand(5, -1))
    with pytest.raises(ValueError, match="context"):
        FixedContextEncoder(pooling="mean", **dims)


def test_attention_mode_end_to_end(tmp_path, capsys) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "attention"
    code = main(
        [
            "--out",
            str(out),
            "--epochs",
            "1",
            "--max-train",
            "300",
            "--d-model",
            "16",
            "--timing-repeats",
            "2",
            "--timing-batch-size",
            "32",
            "--max-shift",
            "4",
        ]
    )
    assert code == 0
    assert "student_kd" in capsys.readouterr().out
    payload = json.loads((out / "results.json").read_text())
    assert payload["config"]["max_shift"] == 4
    results = payload["results"]
    assert results["sequence_length"] == 8 + 4 and results["token_features"] == 8
    for name in ("teacher", "student_kd", "student_alone"):
        summary = results[name]
        assert summary["name"] == name
        assert 0.0 <= summary["accuracy"] <= 1.0
        assert summary["latency_ms"] > 0
    assert results["student_kd"]["parameters"] < results["teacher"]["parameters"]
    assert results["speedup"] > 0
    expected_lost = results["teacher"]["accuracy"] - results["student_kd"]["accuracy"]
    assert results["accuracy_lost"] == pytest.approx(expected_lost)
    for plot in ("accuracy_vs_latency.png", "pooling_weights.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
