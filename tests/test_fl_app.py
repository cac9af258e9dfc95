"""The ServerApp and ClientApp together, over an in-process Grid (no Ray, seconds per run)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

from clients import codec
from clients.app import app as client_app
from fedkd.fl import keys
from fedkd.fl.config import FAULT_STAGES, FedConfig, parse_run_config
from fedkd.fl.faults import fault_hits
from fedkd.secagg import protocol
from server.app import app as server_app
from tests.flower_harness import InProcessGrid, server_context

pytestmark = pytest.mark.filterwarnings("ignore:secure aggregation is OFF")


def run_config(tmp_path: Path, **overrides: object) -> dict[str, object]:
    base = FedConfig().to_dict()
    base.update(
        {
            "num-rounds": 2,
            "local-epochs": 1,
            "warmup-epochs": 0,
            "distill-epochs": 3,
            "out-dir": str(tmp_path),
            "eval-clients": True,
            "node-wait": 5.0,
        }
    )
    base.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return base


def run_app(tmp_path: Path, nodes: int = 4, grid_kwargs: dict | None = None, **overrides: object):
    config = run_config(tmp_path, **overrides)
    grid = InProcessGrid(client_app, config, nodes, **(grid_kwargs or {}))
    server_app(grid, server_context(config))
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    history = json.loads((folder / "history.json").read_text())
    return folder, history, grid


def test_secure_round_matches_plaintext_and_student_learns(tmp_path: Path) -> None:
    # 40 quantisation bits: the secure path must then reproduce the plaintext teacher.
    secure_dir, secure, grid = run_app(tmp_path / "secure", run_name="s", **{"secagg-bits": 40})
    plain_dir, plain, _ = run_app(tmp_path / "plain", run_name="p", secagg=False)
    for row in secure:
        assert row["status"] == "ok" and row["survivors"] == 4 and row["dropped"] == []
    first, second = ("round-001.npy", "round-002.npy")
    a, b = np.load(secure_dir / "teachers" / first), np.load(plain_dir / "teachers" / first)
    # Fixed-point with 40 bits: the decoded teacher equals the plaintext one to ~1e-7.
    np.testing.assert_allclose(a, b, atol=1e-5)
    # Round 2 starts from students distilled on teachers 1e-7 apart, and training amplifies
    # that: the same teacher up to a few public samples.
    a, b = np.load(secure_dir / "teachers" / second), np.load(plain_dir / "teachers" / second)
    assert np.mean(a.argmax(1) == b.argmax(1)) > 0.9
    assert secure[-1]["student_accuracy"] > 0.5  # from ~0.1 at initialisation
    assert secure[-1]["student_accuracy"] >= secure[0]["student_accuracy"] - 0.05
    # Four exchanges per secure round (train+advertise, share, mask, unmask), one plaintext.
    types = [m.metadata.message_type for m in grid.sent]
    assert types.count(keys.TRAIN) == 8 and types.count(codec.message_type(protocol.UNMASK)) == 8
    for name in ("config.json", "history.csv", "student.pt", "summary.json"):
        assert (secure_dir / name).exists()
    assert (secure_dir / "plots" / "accuracy.png").exists()


def test_server_never_holds_an_individual_contribution(tmp_path: Path) -> None:
    _, _, grid = run_app(tmp_path, num_rounds=1)
    for reply in grid.replies:
        assert keys.CONTRIBUTION not in reply.content  # plaintext vectors never leave a client
        if protocol.MASKED in reply.content:
            masked = reply.content[protocol.MASKED].to_numpy_ndarrays()[0]
            # Only masked field elements travel, packed to the modulus' width.
            assert masked.dtype == np.uint8


def test_crashes_at_mask_stage_are_survived_and_logged(tmp_path: Path) -> None:
    _, history, _ = run_app(
        tmp_path,
        nodes=6,
        num_rounds=2,
        fault_stage="masked_input",
        fault_prob=0.3,
        seed=3,
        secagg_threshold=0.6,
    )
    config = parse_run_config(
        run_config(tmp_path, fault_stage="masked_input", fault_prob=0.3, seed=3)
    )
    for row in history:
        expected = [p for p in range(6) if fault_hits(config, "masked_input", row["round"], p)]
        assert row["dropped"] == expected
        if row["status"] == "ok":
            assert row["survivors"] == 6 - len(expected)
            assert math.isfinite(row["student_accuracy"])
    assert any(row["dropped"] for row in history), "seed 3 should drop someone"


def test_fault_stages_are_the_protocol_stages_and_old_names_still_work() -> None:
    assert set(FAULT_STAGES) == {"none", keys.TRAIN, *protocol.STAGES} - {protocol.ADVERTISE}
    with pytest.warns(FutureWarning, match="'fault-stage' = 'mask' is deprecated"):
        old = parse_run_config({"fault-stage": "mask", "fault-prob": 0.3})
    assert old.faults.stage == protocol.MASKED_INPUT
    # A seed fails the same clients as it did under the old name (the draw hashes it).
    drawn = [p for p in range(40) if fault_hits(old, protocol.MASKED_INPUT, 2, p)]
    token = f"{old.seed}/2/{{}}/mask"
    hashes = [hashlib.sha256(token.format(p).encode()).digest()[:8] for p in range(40)]
    assert drawn == [p for p, h in enumerate(hashes) if int.from_bytes(h, "big") / 2**64 < 0.3]
    assert drawn and not fault_hits(old, protocol.SHARE_KEYS, 2, drawn[0])


def test_too_few_survivors_skips_the_round_cleanly(tmp_path: Path) -> None:
    _, history, _ = run_app(tmp_path, num_rounds=1, fault_stage="share_keys", fault_prob=1.0)
    (row,) = history
    assert row["status"] == "skipped"
    assert "threshold" in row["reason"]
    assert row["student_accuracy"] is None


def test_silent_node_counts_as_dropped(tmp_path: Path) -> None:
    victim = 1000 + 17 * 2  # the third node of the harness

    def intercept(message: Message) -> bool:
        return message.metadata.dst_node_id == victim and message.metadata.message_type == (
            codec.message_type(protocol.MASKED_INPUT)
        )

    _, history, _ = run_app(
        tmp_path, num_rounds=1, grid_kwargs={"intercept": intercept}, secagg_threshold=0.6
    )
    (row,) = history
    assert row["status"] == "ok" and row["survivors"] == 3 and row["dropped"] == [2]


def test_malformed_plaintext_contributions_are_dropped(tmp_path: Path) -> None:
    def tamper(reply: Message) -> Message:
        if reply.metadata.src_node_id == 1000 and keys.CONTRIBUTION in reply.content:
            bad = reply.content[keys.CONTRIBUTION].to_numpy_ndarrays()[0].copy()
            bad[0] = np.nan
            reply.content[keys.CONTRIBUTION] = ArrayRecord([bad])
        if reply.metadata.src_node_id == 1017 and keys.CONTRIBUTION in reply.content:
            reply.content[keys.CONTRIBUTION] = ArrayRecord([np.zeros(3)])
        return reply

    _, history, _ = run_app(tmp_path, num_rounds=1, secagg=False, grid_kwargs={"tamper": tamper})
    (row,) = history
    assert row["status"] == "ok" and row["survivors"] == 2 and row["dropped"] == [0, 1]


BAD_REPLIES = {
    "empty masked input": lambda r: r.content.__setitem__(protocol.MASKED, ArrayRecord([])),
    "config record as masked input": lambda r: r.content.__setitem__(
        protocol.MASKED, ConfigRecord({"x": 1})
    ),
    "float masked vector": lambda r: r.content.__setitem__(
        protocol.MASKED, ArrayRecord([np.zeros(3, dtype=np.float64)])
    ),
}


@pytest.mark.parametrize("damage", sorted(BAD_REPLIES))
def test_one_malformed_secure_reply_is_a_dropout_not_a_crash(tmp_path: Path, damage: str) -> None:
    """A client answering the masked-input stage with garbage drops out; the round completes
    with the other five (threshold 4 of 6), and the ServerApp never raises."""

    def tamper(reply: Message) -> Message:
        if reply.metadata.src_node_id == 1017 and protocol.MASKED in reply.content:
            BAD_REPLIES[damage](reply)
        return reply

    _, history, _ = run_app(tmp_path, nodes=6, num_rounds=1, grid_kwargs={"tamper": tamper})
    (row,) = history
    assert row["status"] == "ok" and row["survivors"] == 5 and row["dropped"] == [1], row


def test_train_replies_without_partition_or_with_odd_metrics_do_not_crash(tmp_path: Path) -> None:
    def tamper(reply: Message) -> Message:
        train = reply.metadata.message_type == keys.TRAIN and codec.METRICS in reply.content
        if train and reply.metadata.src_node_id == 1000:  # no partition id, a list-valued metric
            reply.content[codec.METRICS] = MetricRecord({"junk": [1.0, 2.0]})
        return reply

    _, history, _ = run_app(tmp_path, nodes=4, num_rounds=1, grid_kwargs={"tamper": tamper})
    (row,) = history
    assert row["status"] == "ok" and row["survivors"] == 4


def test_a_node_that_requires_secagg_never_answers_in_the_clear(tmp_path: Path) -> None:
    from clients.app import REFUSED
    from tests.flower_harness import InProcessGrid

    config = run_config(tmp_path, method="fedavg")
    grid = InProcessGrid(client_app, config, 2)
    for context in grid.contexts.values():
        context.node_config["require-secagg"] = "true"
    server_app(grid, server_context(config))
    assert grid.replies and all(r.has_error() and r.error.code == REFUSED for r in grid.replies)
    assert all(codec.WEIGHTS not in (r.content if r.has_content() else {}) for r in grid.replies)


@pytest.mark.parametrize("method", ["fedavg", "local", "central"])
def test_baselines_share_the_app_and_write_histories(tmp_path: Path, method: str) -> None:
    _, history, _ = run_app(tmp_path, method=method)
    assert [row["round"] for row in history] == [1, 2]
    assert all(row["method"] == method for row in history)
    key = "client_accuracy_mean" if method == "local" else "student_accuracy"
    assert history[-1][key] > 0.3


def test_fedmd_with_heterogeneous_clients(tmp_path: Path) -> None:
    folder, history, grid = run_app(
        tmp_path, mode="fedmd", digest_epochs=1, client_models="cnn,mlp"
    )
    assert history[-1]["status"] == "ok" and history[-1]["student_accuracy"] > 0.3
    # Round 2 pushes the round-1 teacher (public set x classes), not weights.
    round2 = [m for m in grid.sent if m.metadata.message_type == keys.TRAIN][-1]
    assert keys.TEACHER in round2.content and codec.WEIGHTS not in round2.content
    teacher = round2.content[keys.TEACHER].to_numpy_ndarrays()[0]
    np.testing.assert_allclose(teacher, np.load(folder / "teachers" / "round-001.npy"))


def test_replayed_secagg_requests_are_refused(tmp_path: Path) -> None:
    from clients.app import REFUSED

    _, _, grid = run_app(tmp_path, num_rounds=1)
    for message_type in (
        codec.message_type(protocol.MASKED_INPUT),
        codec.message_type(protocol.UNMASK),
    ):
        original = next(m for m in grid.sent if m.metadata.message_type == message_type)
        node = original.metadata.dst_node_id
        replay = grid.client_app(original, grid.contexts[node])
        assert replay.has_error() and replay.error.code == REFUSED
        assert codec.CONFIG not in (replay.content if replay.has_content() else {})  # no payload


def test_feddf_pushes_the_student_and_learns(tmp_path: Path) -> None:
    _, history, grid = run_app(tmp_path, mode="feddf")
    trains = [m for m in grid.sent if m.metadata.message_type == keys.TRAIN]
    assert all(codec.WEIGHTS in m.content for m in trains)
    # The teacher rides along from round 2 on: the clients rehearse it while they train.
    rounds = [int(m.content[codec.METRICS][keys.ROUND]) for m in trains]  # type: ignore[arg-type]
    assert [keys.TEACHER in m.content for m in trains] == [r > 1 for r in rounds]
    assert history[-1]["status"] == "ok" and history[-1]["student_accuracy"] > 0.5


STAGE_WITHOUT_TORCH = """
import sys
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from clients import codec
from clients.app import serve
from fedkd.fl.config import FedConfig
from fedkd.secagg import protocol

TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 0, 1
request = protocol.stage_envelope(protocol.SHARE_KEYS, b"keys", 1)
message = Message(
    content=codec.encode(request),
    dst_node_id=5,
    message_type=codec.message_type(request.kind),
)
context = Context(
    run_id=7,
    node_id=5,
    node_config={"partition-id": 0, "num-partitions": 3},
    state=RecordDict(),
    run_config=FedConfig().to_dict(),
)
reply = serve(message, context)
print(reply.error.reason)
print(sorted(m for m in ("torch", "torchvision", "scipy", "dp_accounting") if m in sys.modules))
"""


def test_a_secure_stage_is_answered_without_importing_torch() -> None:
    """A deployed SuperNode starts a process per message: the four secure-aggregation stages
    of a round must not pay PyTorch's (and scipy's) import, seconds each, for nothing."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", STAGE_WITHOUT_TORCH], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reason, imported = done.stdout.strip().splitlines()[-2:]
    assert "no secure-aggregation round in progress" in reason  # the stage handler answered
    assert imported == "[]"


def test_a_reply_that_answers_another_request_is_not_taken(tmp_path: Path) -> None:
    """A masked input relabelled as the answer to some other request (a replayed or misrouted
    reply) must not count: the transport takes a node's reply only to the request it sent."""
    victim = 1000 + 17 * 2

    def tamper(reply: Message) -> Message:
        if reply.metadata.src_node_id == victim and reply.metadata.message_type == (
            codec.message_type(protocol.MASKED_INPUT)
        ):
            reply.metadata.__dict__["_reply_to_message_id"] = "another-request"
        return reply

    _, history, _ = run_app(
        tmp_path, num_rounds=1, grid_kwargs={"tamper": tamper}, secagg_threshold=0.6
    )
    (row,) = history
    assert row["status"] == "ok" and row["survivors"] == 3 and row["dropped"] == [2]
