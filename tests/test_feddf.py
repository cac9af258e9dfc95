"""FedDF as published: weights summed securely beside the logits, averaged, then distilled."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from fedkd.fl.experiment import simulate
from fedkd.fl.fedavg import weighted_average, weights_of
from fedkd.fl.feddf import average_from_block, weights_block, weights_length
from fedkd.models import build_model
from fedkd.secagg.quantize import Quantizer


def models(count: int) -> list[torch.nn.Module]:
    out = []
    for seed in range(count):
        torch.manual_seed(seed)
        out.append(build_model("cnn", input_shape=(1, 8, 8), num_classes=10))
    return out


def trained_from(start: torch.nn.Module, count: int) -> list[torch.nn.Module]:
    """``count`` clients that moved ``start``'s weights by up to 0.5 (a round of training)."""
    out = []
    for seed in range(count):
        model = copy.deepcopy(start)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5 * (2 * torch.rand(p.shape, generator=generator) - 1))
        out.append(model)
    return out


@pytest.mark.parametrize("bits", [None, 16])
def test_summed_blocks_give_fedavgs_average(bits: int | None) -> None:
    (start,) = models(1)
    clients, shares, bound, clip = trained_from(start, 4), [0.1, 0.4, 0.2, 0.3], 1.0, 1.0
    pushed = start.state_dict()
    blocks = [
        weights_block(m, pushed, s, clip=clip, bound=bound)[0]
        for m, s in zip(clients, shares, strict=True)
    ]
    assert all(np.abs(b).max() <= bound for b in blocks)  # within the quantiser's range
    total = np.sum(blocks, axis=0)
    if bits is not None:  # what secure aggregation decodes: quantised, summed, decoded
        quantizer = Quantizer(clip=bound, bits=bits)
        levels = np.sum([quantizer.encode(b).values for b in blocks], axis=0)
        total = quantizer.decode_sum(levels, len(blocks))
    average = average_from_block(total, start, clip=clip)
    expected = weighted_average([weights_of(m) for m in clients], shares)
    assert average is not None and average.keys() == expected.keys()
    # Rounding: at most half a level per client and entry, scaled back by clip / sum(shares)
    # (whose decoded value carries its own rounding: the 1.5).
    tolerance = 1e-6 if bits is None else 1.5 * Quantizer(bound, bits).error_bound(4) * clip
    for name, value in average.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=tolerance, err_msg=name)


def test_changes_beyond_the_clip_are_cut_and_counted() -> None:
    (start,) = models(1)
    model = copy.deepcopy(start)
    with torch.no_grad():
        model.head.bias.add_(10.0)
    block, clipped = weights_block(model, start.state_dict(), 0.5, clip=4.0, bound=2.0)
    assert clipped == pytest.approx(10 / weights_length(model))
    assert block.max() == pytest.approx(1.0) and block[-1] == pytest.approx(1.0)
    average = average_from_block(block, start, clip=4.0)
    assert average is not None
    np.testing.assert_allclose(average["head.bias"], start.head.bias.detach().numpy() + 4.0)
    with pytest.raises(ValueError, match="expected"):
        average_from_block(block[:-1], start, clip=4.0)
    assert average_from_block(np.zeros_like(block), start, clip=4.0) is None


def test_feddf_secure_weight_sum_is_fedavgs_average(tmp_path: Path) -> None:
    """One round without distillation: FedDF's student is the securely summed average of the
    clients' weights, which is FedAvg's global model from the same clients."""
    config = {
        "num-rounds": 1,
        "local-epochs": 1,
        "eval-clients": False,
        "distill-epochs": 0,
        "secagg-bits": 40,
    }
    feddf = simulate({**config, "method": "feddf", "out-dir": str(tmp_path / "a")}, 4)
    fedavg = simulate({**config, "method": "fedavg", "out-dir": str(tmp_path / "b")}, 4)
    ours = torch.load(feddf.path / "student.pt", weights_only=True)
    theirs = torch.load(fedavg.path / "student.pt", weights_only=True)
    for name, value in ours.items():
        torch.testing.assert_close(value, theirs[name], rtol=0, atol=1e-6)
    row = feddf.rows[0]
    assert row.method == "feddf" and row.status == "ok" and row.survivors == 4
    assert row.student_accuracy == fedavg.rows[0].student_accuracy
    # The upload carries the weights (masked words) on top of FedKD's logits.
    assert row.bytes_up / 4 > weights_length(build_model("cnn", input_shape=(1, 8, 8),
                                                         num_classes=10)) * 40 / 8  # fmt: skip
