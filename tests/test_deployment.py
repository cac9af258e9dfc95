"""Deployment: real SuperLink/SuperNode processes on loopback.

The loopback tests start ``flower-superlink``, three ``flower-supernode`` processes and
``flwr run`` exactly as an engineer would on three machines (ports 19091-19099, away from a
developer's SuperLink and from the simulation test). The Docker Compose files are tested in
``tests/test_compose.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.deploy_local import (
    CONNECTION_NAME,
    _load_certs_module,
    deploy_local,
    group_members,
    write_flower_config,
)

SMALL_RUN = ["num-rounds=1 local-epochs=1 warmup-epochs=0 distill-epochs=1 secagg=true"]


def _assert_completed(result, work_dir: Path) -> None:  # type: ignore[no-untyped-def]
    logs = result.log_dir / "flwr-run.log"
    assert result.returncode == 0, logs.read_text()[-3000:]
    assert result.results is not None, logs.read_text()[-3000:]
    assert result.results.is_relative_to(work_dir)
    history = json.loads((result.results / "history.json").read_text())
    assert len(history) == 1
    assert history[0]["status"] == "ok"
    assert history[0]["survivors"] == 3 and history[0]["dropped"] == []
    assert history[0]["bytes_up"] > 0
    leftovers = {g: group_members(g) for g in result.process_groups}
    assert not any(leftovers.values()), f"processes left running: {leftovers}"


@pytest.mark.slow
def test_loopback_deployment_secure_round(tmp_path: Path) -> None:
    result = deploy_local(3, SMALL_RUN, port=19091, work_dir=tmp_path, timeout=600, echo=False)
    _assert_completed(result, tmp_path)
    # Each SuperNode really ran with its own partition and Runtime API port.
    for index in range(3):
        log = (result.log_dir / f"supernode-{index}.log").read_text()
        assert f"partition-id={index} num-partitions=3" in log
        assert f"--port {19092 + index}" in log


@pytest.mark.slow
def test_loopback_deployment_with_tls_and_fedkd_keys(tmp_path: Path) -> None:
    """TLS, and identities from ``fedkd keys``: each SuperNode holds its own identity file and
    its copy of the roster (node config), the ServerApp the roster (run config)."""
    result = deploy_local(
        3, SMALL_RUN, port=19095, tls=True, keys=True, work_dir=tmp_path, timeout=600, echo=False
    )
    _assert_completed(result, tmp_path)
    config = json.loads((result.results / "config.json").read_text())
    assert config["secagg-roster"] == str(tmp_path / "keys" / "roster.json")
    assert "secagg-identity=" in (result.log_dir / "supernode-2.log").read_text()
    assert "https://127.0.0.1:19095" in (result.log_dir / "superlink.log").read_text()
    assert "--root-certificates" in (result.log_dir / "supernode-0.log").read_text()


def test_certificates_chain_to_the_ca_and_name_the_superlink(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec

    paths = _load_certs_module().generate_certificates(tmp_path, extra_sans=["fl.example.org"])
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
        _load_certs_module().generate_certificates(tmp_path)
    # a different CA does not vouch for this server certificate
    other = _load_certs_module().generate_certificates(tmp_path / "other")
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
