"""ClientApp handlers on hand-built Messages: good requests, malformed ones, refusals."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, Metadata, RecordDict
from flwr.app.message.message import make_message

from clients import codec
from clients.app import BAD_REQUEST, REFUSED
from clients.app import app as client_app
from fedkd.fl import keys
from fedkd.fl.config import FedConfig
from fedkd.fl.contribution import STATS, vector_length
from fedkd.fl.data import load_run_split
from fedkd.fl.server_work import new_student
from fedkd.secagg import protocol

pytestmark = pytest.mark.filterwarnings("ignore:secure aggregation is OFF")
NODE = 42


def incoming(content: RecordDict, message_type: str = keys.TRAIN) -> Message:
    """A message as a SuperNode hands it to the ClientApp."""
    metadata = Metadata(
        run_id=1,
        message_id=uuid.uuid4().hex,
        src_node_id=0,
        dst_node_id=NODE,
        reply_to_message_id="",
        group_id="round-1",
        created_at=time.time(),
        ttl=600,
        message_type=message_type,
    )
    return make_message(metadata, content)


def context(**overrides: object) -> Context:
    run_config = {
        **FedConfig().to_dict(),
        "local-epochs": 1,
        "warmup-epochs": 0,
        "secagg": False,
        **overrides,
    }
    return Context(
        run_id=1,
        node_id=NODE,
        node_config={"partition-id": 1, "num-partitions": 4},
        state=RecordDict(),
        run_config=run_config,
    )


@pytest.fixture(scope="module")
def student_weights() -> ArrayRecord:
    split = load_run_split(FedConfig())
    return ArrayRecord(new_student(FedConfig(), split).state_dict())


def train_content(weights: ArrayRecord | None, **config: object) -> RecordDict:
    round_config = ConfigRecord({keys.ROUND: 1, keys.PHASE: "fedkd", **config})
    content = RecordDict({codec.CONFIG: round_config})
    if weights is not None:
        content[codec.WEIGHTS] = weights
    return content


def test_plaintext_train_returns_a_contribution(student_weights: ArrayRecord) -> None:
    reply = client_app(incoming(train_content(student_weights)), context())
    assert not reply.has_error()
    (vector,) = reply.content[keys.CONTRIBUTION].to_numpy_ndarrays()
    split = load_run_split(FedConfig())
    assert vector.shape == (vector_length(split),)
    assert np.all(np.isfinite(vector))
    metrics = reply.content[codec.METRICS]
    # Only who answered travels in the clear; the statistics ride inside the summed vector.
    assert dict(metrics) == {keys.PARTITION_ID: 1}
    stats = dict(zip(STATS, vector[-len(STATS) :], strict=True))
    assert stats["accuracy_count"] == 1.0 and 0.0 <= stats["accuracy_sum"] <= 1.0
    assert stats["train_loss_sum"] > 0 and stats["clipped_sum"] == 0
    histogram = [stats[name] for name in STATS if name.startswith("accuracy_bin_")]
    assert sum(histogram) == 1.0  # one-hot: the sum over clients is a histogram


def test_missing_config_record_is_a_clear_error(student_weights: ArrayRecord) -> None:
    reply = client_app(incoming(RecordDict({codec.WEIGHTS: student_weights})), context())
    assert reply.has_error() and reply.error.code == BAD_REQUEST
    assert "'config'" in reply.error.reason


def test_missing_student_weights_is_a_clear_error() -> None:
    reply = client_app(incoming(train_content(None)), context(mode="feddf"))
    assert reply.has_error() and reply.error.code == BAD_REQUEST
    assert "student weights" in reply.error.reason


def test_weights_of_another_shape_are_refused(student_weights: ArrayRecord) -> None:
    wrong = ArrayRecord([np.zeros((3, 3), dtype=np.float32)])
    reply = client_app(incoming(train_content(wrong)), context(mode="feddf"))
    assert reply.has_error() and reply.error.code == BAD_REQUEST
    assert "do not fit" in reply.error.reason


def test_nan_teacher_logits_are_refused() -> None:
    split = load_run_split(FedConfig())
    teacher = np.full((len(split.public), split.num_classes), np.nan, dtype=np.float32)
    content = train_content(None)
    content[keys.TEACHER] = ArrayRecord([teacher])
    reply = client_app(incoming(content), context(mode="fedmd", **{"digest-epochs": 1}))
    assert reply.has_error() and reply.error.code == BAD_REQUEST
    assert "NaN" in reply.error.reason


def test_teacher_logits_of_wrong_shape_are_refused() -> None:
    content = train_content(None)
    content[keys.TEACHER] = ArrayRecord([np.zeros((5, 10), dtype=np.float32)])
    reply = client_app(incoming(content), context(mode="fedmd", **{"digest-epochs": 1}))
    assert reply.has_error() and "expected" in reply.error.reason


def test_secagg_stage_without_a_round_is_a_clear_error() -> None:
    content = RecordDict(
        {
            codec.CONFIG: ConfigRecord({protocol.PAYLOAD: b"garbage", keys.ROUND: 1}),
        }
    )
    reply = client_app(incoming(content, codec.message_type(protocol.UNMASK)), context(secagg=True))
    assert reply.has_error() and reply.error.code == BAD_REQUEST
    assert "no secure-aggregation round" in reply.error.reason


def test_unknown_run_config_key_is_named() -> None:
    reply = client_app(incoming(train_content(None)), context(**{"local-epoch": 3}))
    assert reply.has_error() and "local-epoch" in reply.error.reason


def test_node_config_without_partition_is_explained(student_weights: ArrayRecord) -> None:
    ctx = context()
    ctx.node_config = {}
    reply = client_app(incoming(train_content(student_weights)), ctx)
    assert reply.has_error() and "partition-id" in reply.error.reason


def test_refusal_code_is_distinct() -> None:
    assert REFUSED != BAD_REQUEST


def test_plaintext_is_refused_when_the_run_demands_secagg(student_weights: ArrayRecord) -> None:
    # A server that simply leaves out the secure-aggregation config must not get logits.
    reply = client_app(incoming(train_content(student_weights)), context(secagg=True))
    assert reply.has_error() and reply.error.code == REFUSED
    assert "in clear" in reply.error.reason and not reply.has_content()


def test_node_operator_can_require_secagg(student_weights: ArrayRecord) -> None:
    ctx = context(secagg=False)
    ctx.node_config = {**ctx.node_config, "require-secagg": "true"}
    reply = client_app(incoming(train_content(student_weights)), ctx)
    assert reply.has_error() and reply.error.code == REFUSED
