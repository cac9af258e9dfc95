"""Crafted public sets: the pin refuses a swapped set (in secure rounds); answers leak."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedkd.attacks import crafted_queries as cq
from fedkd.attacks.common import StudyOptions
from fedkd.distill import predict_logits

TINY = {"model": "mlp", "warmup-epochs": 3, "local-epochs": 1, "distill-epochs": 1}


def test_the_pin_refuses_another_public_set_in_every_round(tmp_path: Path) -> None:
    rows = cq.pin_table(StudyOptions(out=tmp_path, overrides=TINY), seed=0)
    answered = {(r["public set"], r["secagg"], r["pinned"]): r["answered"] for r in rows}
    assert answered[("the run's own", True, True)]
    assert not answered[("another split", True, True)]  # the pin at work
    assert answered[("another split", True, False)]  # without a pin nothing notices
    assert not answered[("another split", False, True)]  # plaintext rounds too
    refused = next(r for r in rows if not r["answered"])
    assert "pinned public-set digest" in str(refused["why"])


def test_a_crafted_set_returns_the_clients_own_probabilities(tmp_path: Path) -> None:
    size = cq.Sizes(clients=2, records=10, copies=3, probes=8, group_sizes=(1, 2))
    fed = cq.honest_run(StudyOptions(out=tmp_path, overrides=TINY), 0, size)
    x = fed.af.data.split.test.x[:1]
    asked = cq.queries(fed, x, cq.QUERIES[1], size.copies, 0)[0]  # one record, repeated
    seen = cq.answers(fed, asked, [cq.TARGET])
    own = torch.softmax(torch.from_numpy(predict_logits(fed.models[cq.TARGET], x)), 1).numpy()
    np.testing.assert_allclose(seen, np.repeat(own, size.copies, axis=0), atol=1e-6)
    both = cq.answers(fed, asked, [0, 1])  # the secure sum mixes in the other client
    assert np.abs(both - seen).max() > 1e-3
    near = cq.queries(fed, x, cq.QUERIES[2], size.copies, 0)[0]
    assert 0 < np.abs(near - asked).max() < 0.5 and near.min() >= 0 and near.max() <= 1
