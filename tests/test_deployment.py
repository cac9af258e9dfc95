"""Deployment: real SuperLink/SuperNode processes on loopback, and the faults they meet.

The slow test starts ``flower-superlink`` (HTTPS, its state in a database), three
``flower-supernode`` processes with identities from ``fedkd keys`` and ``flwr run``, exactly as
an engineer would on four machines, and fires one fault per round from the server's round
journal (``experiments/fault_drill.py``): a SuperNode SIGKILLed in each secure stage and started
again, then the SuperLink and the ServerApp killed and the run resumed. Each round must
complete with the survivors' exact sum (``experiments/fault_check.py`` recomputes it from the
clients' own plaintext contributions), each fault must leave one log line naming node and
stage, and ``fedkd status`` must show it. Ports 19491-19494 keep it away from a developer's
SuperLink. The Docker Compose stack is tested in ``tests/test_compose.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from experiments.deploy_local import CONNECTION_NAME, load_certs_module, write_flower_config
from experiments.fault_check import check_run, deployed_rounds
from experiments.fault_drill import Fault, run_drill
from experiments.netfault import Relay
from fedkd.cli.status import render, run_status

KILLS = [  # (round, stage, partition): one SuperNode lost in each secure stage
    (1, "train", 0),
    (2, "share_keys", 1),
    (3, "masked_input", 2),
    (4, "consistency", 0),
    (5, "unmask", 1),
]
# Survivors whose inputs are in the sum: a node lost before its masked input arrived is out
# of the sum; one lost after (consistency, unmask) is in it, recovered by the others.
IN_SUM = {1: 2, 2: 2, 3: 2, 4: 3, 5: 3, 6: 3}


@pytest.mark.slow
def test_a_supernode_killed_in_each_stage_and_a_killed_server_resumed(tmp_path: Path) -> None:
    faults = [Fault(r, stage, "kill-node", p, 2.0) for r, stage, p in KILLS]
    faults.append(Fault(6, "share_keys", "kill-server"))
    result = run_drill(
        faults, supernodes=3, rounds=6, tls=True, keys=True, work_dir=tmp_path, port=19491
    )
    log = (tmp_path / "logs" / "flwr-run.log").read_text()
    assert result.completed, log[-4000:]
    assert len(result.fired) == len(faults), result.fired
    history = json.loads((result.folder / "history.json").read_text())
    assert [(r["round"], r["status"]) for r in history] == [(n, "ok") for n in range(1, 7)]
    assert {r["round"]: r["survivors"] for r in history} == IN_SUM
    # Every fault left one line naming its node (and partition) and its stage.
    for number, stage, _ in KILLS:
        found = re.findall(rf"fault: round {number}, stage {stage}: node \d+ \(partition", log)
        assert len(found) == 1, (number, stage)
    # The killed SuperNode came back as a new node (a fresh state) and answered later rounds.
    deployed = deployed_rounds(result.folder)
    for number, _, partition in KILLS:
        before = {n for n in deployed.asked[number] if deployed.partitions.get(n) == partition}
        joined = deployed.answered[number + 1]["train"]
        after = {n for n in joined if deployed.partitions.get(n) == partition}
        assert after and not after & before, (number, partition)
    # The server: two Flower runs; round 6 interrupted before any release, run again once.
    assert len(result.flower_runs) == 2
    assert "round 6 was interrupted at stage share_keys" in log
    # The sums: each round's teacher is the one of its survivors' own plaintext contributions.
    report = check_run(result.folder, partitions=3)
    assert report.ok, report.problems
    assert all(r["equals_plaintext_sum"] for r in report.rounds)
    status = render(run_status(result.folder))
    assert "rounds: 6/6 recorded (6 ok" in status and "last fault: round 5, stage unmask" in status


def test_a_relay_cut_drops_the_link_and_restore_brings_it_back() -> None:
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def echo() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: c.sendall(c.recv(100)), daemon=True).start()

    threading.Thread(target=echo, daemon=True).start()
    relay = Relay(f"127.0.0.1:{server.getsockname()[1]}")
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
            sock.sendall(b"ping")
            assert sock.recv(100) == b"ping"
        relay.cut()
        with pytest.raises(ConnectionRefusedError):  # the link is down
            socket.create_connection(("127.0.0.1", relay.port), timeout=5)
        relay.restore()
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as sock:
            sock.sendall(b"pong")
            assert sock.recv(100) == b"pong"
    finally:
        relay.close()
        server.close()


def test_fault_specs_parse_and_refuse_nonsense() -> None:
    assert Fault.parse("3:masked_input:kill-node:2:5") == Fault(
        3, "masked_input", "kill-node", 2, 5
    )
    assert Fault.parse("2:unmask:kill-server").seconds == 0.0
    for bad in ("3:mask:kill-node", "3:unmask:explode", "3"):
        with pytest.raises(ValueError):
            Fault.parse(bad)


def test_certificates_chain_to_the_ca_and_name_the_superlink(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec

    paths = load_certs_module().generate_certificates(tmp_path, extra_sans=["fl.example.org"])
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(paths.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(san.get_values_for_type(x509.DNSName))
    assert {"localhost", "superlink", "fl.example.org"} <= names
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert oct(paths.server_key.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(FileExistsError):  # never overwrites keys silently
        load_certs_module().generate_certificates(tmp_path)
    # a different CA does not vouch for this server certificate
    other = load_certs_module().generate_certificates(tmp_path / "other")
    with pytest.raises(InvalidSignature):
        server.verify_directly_issued_by(x509.load_pem_x509_certificate(other.ca_cert.read_bytes()))
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey)


@pytest.mark.parametrize("tls", [False, True])
def test_flower_config_is_read_by_flwr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls: bool
) -> None:
    from flwr.cli.flower_config import read_superlink_connection

    ca = tmp_path / "ca.crt"
    ca.write_text("placeholder")
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    write_flower_config(tmp_path / "home", "127.0.0.1:19091", ca_cert=ca if tls else None)
    connection = read_superlink_connection()  # the default connection
    assert connection.name == CONNECTION_NAME
    assert connection.address == "127.0.0.1:19091"
    assert connection.insecure is (not tls)
    assert connection.root_certificates == (str(ca.resolve()) if tls else None)
