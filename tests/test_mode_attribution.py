"""Attribution-alignment mode: attribution methods on known models, and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from experiments.attribution import main
from fedkd.modes.attribution import (
    cosine_similarity_maps,
    gradient_saliency,
    integrated_gradients,
)


def _linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 3, 4)).eval()


def test_saliency_of_a_linear_model_is_its_weights() -> None:
    model = _linear_model()
    x = torch.rand(5, 2, 3, 3)
    target = torch.tensor([0, 1, 2, 3, 0])
    maps = gradient_saliency(model, x, target)
    weights = model[1].weight.detach().reshape(4, 2, 3, 3)
    torch.testing.assert_close(maps, weights[target].abs().amax(dim=1))


def test_integrated_gradients_of_a_linear_model_are_exact() -> None:
    model = _linear_model()
    x = torch.rand(5, 2, 3, 3)
    target = torch.tensor([3, 2, 1, 0, 3])
    attributions = integrated_gradients(model, x, target, steps=3)
    weights = model[1].weight.detach().reshape(4, 2, 3, 3)
    torch.testing.assert_close(attributions, x * weights[target])  # zero baseline: w * x
    with pytest.raises(ValueError, match="steps"):
        integrated_gradients(model, x, target, steps=0)


def test_integrated_gradients_are_complete_on_a_relu_network() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.rand(4, 1, 2, 4)
    target = torch.tensor([0, 1, 2, 0])
    attributions = integrated_gradients(model, x, target, steps=400)
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None]).squeeze(1)
    torch.testing.assert_close(attributions.flatten(1).sum(1), gap, atol=2e-3, rtol=2e-2)


def test_cosine_similarity_maps() -> None:
    a = np.random.default_rng(0).normal(size=(3, 4, 4))
    np.testing.assert_allclose(cosine_similarity_maps(a, a), 1.0)
    np.testing.assert_allclose(cosine_similarity_maps(a, -2 * a), -1.0)
    np.testing.assert_array_equal(cosine_similarity_maps(a, np.zeros_like(a)), 0.0)


def test_attribution_mode_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "attribution"
    code = main(
        [
            "--out",
            str(out),
            "--epochs",
            "2",
            "--temperatures",
            "1",
            "4",
            "--num-explain",
            "24",
            "--ig-steps",
            "20",
            "--num-examples",
            "2",
            "--seeds",
            "0",
            "1",
        ]
    )
    assert code == 0
    assert "KD T=4" in capsys.readouterr().out
    payload = json.loads((out / "results.json").read_text())
    assert payload["config"]["temperatures"] == [1.0, 4.0]
    results = payload["results"]
    assert 0.0 <= results["teacher_accuracy"]["mean"] <= 1.0
    assert results["teacher_accuracy"]["n"] == 2
    assert results["num_explained"] == 24
    assert 0.0 <= results["ig_completeness_error"] < 0.1
    assert [s["temperature"] for s in results["students"]] == [1.0, 4.0]
    assert results["alone"]["temperature"] is None
    for student in [*results["students"], results["alone"]]:
        assert 0.0 <= student["accuracy"]["mean"] <= 1.0
        assert all(0.0 <= v <= 1.0 for v in student["saliency_cosine"]["values"])  # maps >= 0
        assert -1.0 <= student["ig_cosine"]["mean"] <= 1.0
        assert student["saliency_cosine"]["std"] >= 0.0 and student["ig_cosine"]["n"] == 2
    for plot in ("similarity_vs_temperature.png", "attribution_maps.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attribution_mode_rejects_bad_temperatures(tmp_path) -> None:
    with pytest.raises(ValueError, match="temperatures"):
        main(["--out", str(tmp_path), "--temperatures", "1", "0"])
