"""The federated round as library code: in process, no Flower, same result as the Flower app."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from clients.app import app as client_app
from fedkd.fl.config import FedConfig, parse_run_config
from fedkd.fl.contribution import vector_length
from fedkd.fl.data import load_run_split
from fedkd.fl.experiment import in_process_clients, open_run, simulate
from fedkd.fl.federation import Federation
from fedkd.fl.preflight import preflight
from fedkd.fl.rounds import secagg_round_config
from fedkd.secagg.packing import packed_size
from fedkd.transport import Envelope, Transport
from server.app import app as server_app
from tests.flower_harness import RUN_ID, InProcessGrid, server_context
from tests.relay import Eavesdropper

ROOT = Path(__file__).resolve().parents[1]


def small(tmp_path: Path, name: str, **overrides: object) -> dict[str, object]:
    config = {
        **FedConfig().to_dict(),
        "num-rounds": 2,
        "local-epochs": 1,
        "warmup-epochs": 1,
        "distill-epochs": 2,
        "eval-clients": False,
        "out-dir": str(tmp_path),
        "run-name": name,
        "node-wait": 5.0,
    }
    config.update(overrides)
    return config


def test_pyproject_run_config_is_the_library_defaults() -> None:
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert table == FedConfig().to_dict()
    assert parse_run_config(table) == FedConfig()


@pytest.mark.slow
def test_secure_round_in_process_equals_the_flower_app(tmp_path: Path) -> None:
    config = small(tmp_path, "library")
    recorder = simulate(config, num_clients=4, run_id=RUN_ID)
    flower = small(tmp_path, "flower")
    server_app(InProcessGrid(client_app, flower, 4), server_context(flower))
    ours = json.loads((recorder.path / "history.json").read_text())
    theirs = json.loads((tmp_path / "flower" / "history.json").read_text())
    assert [r["status"] for r in ours] == ["ok", "ok"] and [r["survivors"] for r in ours] == [4, 4]
    for name in ("round-001.npy", "round-002.npy"):
        np.testing.assert_array_equal(
            np.load(recorder.path / "teachers" / name),
            np.load(tmp_path / "flower" / "teachers" / name),
        )
    assert [r["student_accuracy"] for r in ours] == [r["student_accuracy"] for r in theirs]
    assert ours[-1]["student_accuracy"] > 0.3  # chance is 0.1
    for run in (recorder.path, tmp_path / "flower"):  # every engine's rounds in TensorBoard
        assert any((run / "tensorboard").glob("events.out.tfevents.*"))


def test_secure_run_shows_the_server_no_contribution(tmp_path: Path) -> None:
    box: list[Eavesdropper] = []

    def spy_on(transport: Transport) -> Transport:
        box.append(Eavesdropper(transport))
        return box[0]

    simulate(small(tmp_path, "spy", **{"num-rounds": 1}), 4, wrap=spy_on)
    (spy,) = box
    assert spy.seen and all("contribution" not in r.arrays for r in spy.seen)
    trains = [r for r in spy.seen if r.kind == "train"]
    # Nothing per client beyond participation: the statistics ride inside the masked sum.
    assert len(trains) == 4 and all(set(r.fields) == {"partition-id", "payload"} for r in trains)
    masked = [r.arrays["masked"] for r in spy.seen if "masked" in r.arrays]
    # Masked words packed to bits + ceil(log2 n) = 16 + 2 bits each (default secagg-bits).
    width = 16 + 2
    assert len(masked) == 4 and all(m.dtype == np.uint8 for m in masked)
    length = vector_length(load_run_split(parse_run_config(small(tmp_path, "spy"))))
    assert all(m.size == packed_size(length, width) for m in masked)


@pytest.mark.filterwarnings("ignore:secagg-threshold")
def test_threshold_is_never_below_a_strict_majority(tmp_path: Path) -> None:
    run = open_run(small(tmp_path, "t", **{"secagg-threshold": 0.1}), 10)
    fed = Federation(in_process_clients({}, 10), run.config, run.split, run.recorder, 1, b"\0" * 32)
    assert secagg_round_config(fed, 1, list(range(10))).threshold == 6


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("teacher-rule", "median", "teacher-rule"),
        ("model", "transformer", "model"),
        ("client-models", "cnn,nope", "client-models"),
        ("device", "tpu", "device"),
        ("dataset", "imagenet", "dataset"),
        ("secagg-neighbours", -1, "secagg-neighbours"),
    ],
)
def test_bad_names_are_refused_before_any_work(key: str, value: object, named: str) -> None:
    with pytest.raises(ValueError, match=f"'{named}'"):
        parse_run_config({key: value})


def test_preflight_checks_the_data_and_the_clients(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="private pool"):
        preflight({}, num_clients=100_000)
    with pytest.raises(ValueError, match="cannot be loaded"):
        preflight({"dataset": "idx", "data-root": str(tmp_path / "none")}, num_clients=2)
    with pytest.raises(ValueError, match="min-clients"):
        preflight({"min-clients": 5}, num_clients=3)


@pytest.mark.slow
def test_a_stopped_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    full = simulate(small(tmp_path, "full", **{"num-rounds": 3, "mode": "feddf"}), 3)
    cut = simulate(small(tmp_path, "cut", **{"num-rounds": 2, "mode": "feddf"}), 3)
    resumed = simulate(
        small(tmp_path, "x", **{"num-rounds": 3, "mode": "feddf", "resume": str(cut.path)}), 3
    )
    assert resumed.path == cut.path and [r.round for r in resumed.rows] == [1, 2, 3]
    # Per-round seeds: the resumed third round is the uninterrupted one's.
    np.testing.assert_array_equal(
        np.load(full.path / "teachers" / "round-003.npy"),
        np.load(cut.path / "teachers" / "round-003.npy"),
    )
    assert resumed.rows[-1].student_accuracy == full.rows[-1].student_accuracy
    with pytest.raises(ValueError, match="'alpha'"):
        simulate(
            small(tmp_path, "y", **{"num-rounds": 4, "alpha": 0.1, "resume": str(cut.path)}), 3
        )


def test_a_request_past_its_deadline_is_dropped_not_trained(tmp_path: Path) -> None:
    from fedkd.fl.client import MemoryStore, NodeInfo, handle
    from fedkd.transport import Refusal

    node, config = NodeInfo(1, 0, 0, 2), small(tmp_path, "late", secagg=False)
    late = Envelope("train", {"round": 1, "phase": "fedkd", "deadline": 1.0})
    reply = handle(late, node, MemoryStore(), config)
    assert isinstance(reply, Refusal) and "deadline passed" in reply.reason


def test_auto_deadline_follows_the_measured_train_time(tmp_path: Path) -> None:
    run = open_run(small(tmp_path, "auto"), 4)
    fed = Federation(in_process_clients({}, 4), run.config, run.split, run.recorder, 1, b"\0" * 32)
    assert run.config.stage_timeout == 0 and fed.timeout() == 1800.0
    fed.last_train_seconds = 40.0
    assert fed.timeout() == 120.0
    fed.last_train_seconds = 1.0
    assert fed.timeout() == 60.0


@pytest.mark.parametrize("roster", ["", "simulated"])
def test_key_substitution_through_the_federated_round(tmp_path: Path, roster: str) -> None:
    """The attacker's own keys shown in place of one client's peers' (and the other way round):
    without a roster the round completes and the server holds that client's exact input; with
    the (default) roster no client answers past share keys and nothing is exposed."""
    from fedkd.attacks.secagg.key_substitution import KeySubstitution
    from fedkd.attacks.secagg.leakage import assess
    from fedkd.fl.experiment import FIRST_NODE_ID

    box: list[KeySubstitution] = []

    def attack(transport: Transport) -> Transport:
        box.append(KeySubstitution(transport, target=FIRST_NODE_ID))
        return box[0]

    config = small(tmp_path, f"k{roster}", **{"num-rounds": 1, "secagg-roster": roster})
    recorder = simulate(config, 5, wrap=attack)
    observed = box[0].observed
    assert observed.config is not None
    leak = assess(observed)
    if roster:
        assert recorder.rows[0].status == "skipped" and not leak.groups
    else:
        assert recorder.rows[0].status == "ok"  # the curious-server protocol does not notice
        assert leak.smallest == (FIRST_NODE_ID,)  # ... and the target's input is exposed


def test_a_pinned_node_refuses_another_public_set_in_plaintext_rounds_too(tmp_path: Path) -> None:
    from fedkd.fl.client import MemoryStore, NodeInfo, handle
    from fedkd.transport import Refusal

    config = small(tmp_path, "pin", secagg=False)
    pinned = NodeInfo(1, 0, 0, 2, public_set_digest="00" * 32)
    request = Envelope("train", {"round": 1, "phase": "fedkd"})
    reply = handle(request, pinned, MemoryStore(), config)
    assert isinstance(reply, Refusal) and "pinned public-set digest" in reply.reason
