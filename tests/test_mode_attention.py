"""Attention-to-fixed-context mode: sequence construction, models, and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from experiments.attention import main
from fedkd.data import ArrayDataset
from fedkd.modes.latency import count_flops, measure_latency
from fedkd.modes.sequence_models import (
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
    noisy = image_rows_to_sequences(images, max_shift=3, seed=1, noise=0.5)
    np.testing.assert_array_equal(noisy.offsets, seqs.offsets)
    for i, offset in enumerate(noisy.offsets):
        tokens = noisy.data.x[i, 0]
        np.testing.assert_array_equal(
            tokens[offset : offset + 4], seqs.data.x[i, 0, offset : offset + 4]
        )
        others = np.delete(tokens, np.s_[offset : offset + 4], axis=0)
        assert others.size == 0 or (others.max() <= 0.5 and others.std() > 0)


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
            features = model.forward_features(x)
            torch.testing.assert_close(features["pooling"], weights)
            torch.testing.assert_close(features["logits"], model(x))
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


def test_latency_control_and_flops_see_the_attention() -> None:
    torch.manual_seed(0)
    dims = {"seq_len": 12, "features": 8, "d_model": 16, "num_classes": 3}
    teacher = DynamicAttentionEncoder(num_heads=2, **dims)
    student = FixedContextEncoder(pooling="context", **dims)
    x = torch.rand(32, 1, 12, 8)
    assert count_flops(teacher, x) > 1.5 * count_flops(student, x)
    report = measure_latency({"teacher": teacher, "student": student}, x, repeats=15, warmup=2)
    assert set(report.ms) == {"teacher", "student"} and report.threads == 1
    assert 0.1 < report.control_ratio < 10.0  # an identical copy of the teacher, timed alike
    with pytest.raises(ValueError, match="control"):
        measure_latency({"control": student}, x)


def test_attention_mode_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "attention"
    code = main(
        ["--out", str(out), "--epochs", "2", "--d-model", "16", "--timing-repeats", "2",
         "--timing-batch-size", "32", "--max-shift", "4", "--seeds", "0", "1",
         "--label-budget", "50", "--validation-size", "60"]
    )  # fmt: skip
    assert code == 0
    assert "kd_attention" in capsys.readouterr().out
    payload = json.loads((out / "results.json").read_text())
    assert payload["config"]["max_shift"] == 4
    results = payload["results"]
    assert results["sequence_length"] == 8 + 4 and results["token_features"] == 8
    assert set(results["students"]) == {"alone", "kd", "kd_attention"}
    for spread in [results["teacher_accuracy"], *results["students"].values()]:
        assert spread["n"] == 2 and 0.0 <= spread["mean"] <= 1.0
    for name in ("kd", "kd_attention"):
        gain = results["gain_over_alone"][name]
        diffs = np.subtract(
            results["students"][name]["values"], results["students"]["alone"]["values"]
        )
        np.testing.assert_allclose(gain["values"], diffs)
    assert results["parameters"]["kd_attention"] < results["parameters"]["teacher"]
    assert results["speedup"] > 0 and results["flop_ratio"] > 1
    assert (out / "pooling_weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
