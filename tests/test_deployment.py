"""Deployment: real SuperLink/SuperNode processes on loopback, and the Docker Compose file.

The loopback tests start ``flower-superlink``, three ``flower-supernode`` processes and
``flwr run`` exactly as an engineer would on three machines (ports 19091-19099, away from a
developer's SuperLink and from the simulation test). The compose test checks the file's
structure offline (there is no Docker engine here).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
import yaml

from experiments.deploy_local import (
    CONNECTION_NAME,
    _load_certs_module,
    deploy_local,
    group_members,
    write_flower_config,
)
from experiments.launch import PROJECT_ROOT

FLWR_VERSION = "1.42.0"
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
def test_loopback_deployment_with_tls(tmp_path: Path) -> None:
    result = deploy_local(
        3, SMALL_RUN, port=19095, tls=True, work_dir=tmp_path, timeout=600, echo=False
    )
    _assert_completed(result, tmp_path)
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


# --------------------------------------------------------------------------- compose file


def _compose(*names: str) -> dict:
    """Merge compose files the way ``docker compose -f a -f b`` does for what we check."""
    merged: dict = {}
    for name in names:
        data = yaml.safe_load((PROJECT_ROOT / name).read_text())
        for key, value in data.items():
            if key == "services":
                services = merged.setdefault("services", {})
                for service, spec in value.items():
                    services.setdefault(service, {}).update(spec)
            elif isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            else:
                merged[key] = value
    return merged


def _command(spec: dict) -> list[str]:
    command = spec.get("command", [])
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    return [
        part
        for arg in args
        for part in (arg.split("=", 1) if arg.startswith("--") and "=" in arg else [arg])
    ]


def _flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def test_compose_file_structure() -> None:
    compose = _compose("docker-compose.yml")
    services = compose["services"]

    superlink = services["superlink"]
    assert superlink["image"].endswith(f"flwr/superlink:{FLWR_VERSION}")
    link_args = _command(superlink)
    assert "--insecure" in link_args
    assert _flag(link_args, "--isolation") == "process"
    link_port = _flag(link_args, "--port")
    assert any(str(p).endswith(f":{link_port}") for p in superlink["ports"])

    supernodes = {name: spec for name, spec in services.items() if name.startswith("supernode-")}
    assert len(supernodes) == 3
    partitions = set()
    for spec in supernodes.values():
        assert spec["image"].endswith(f"flwr/supernode:{FLWR_VERSION}")
        args = _command(spec)
        assert _flag(args, "--superlink") == f"superlink:{link_port}"
        assert _flag(args, "--isolation") == "process"
        assert _flag(args, "--host") == "0.0.0.0"  # reachable from its SuperExec container
        config = dict(item.split("=") for item in _flag(args, "--node-config").split())
        assert config["num-partitions"] == "3"
        partitions.add(int(config["partition-id"]))
    assert partitions == {0, 1, 2}

    # One SuperExec for the ServerApp, one per SuperNode for its ClientApps, all from the
    # app image built from deploy/ on top of flwr/superexec.
    executors = {name: spec for name, spec in services.items() if name.startswith("superexec")}
    assert len(executors) == 4
    targets = set()
    for spec in executors.values():
        build = spec["build"]
        assert build["dockerfile"] == "deploy/Dockerfile"
        assert build.get("context", ".") == "."
        assert build["args"]["FLWR_VERSION"] == FLWR_VERSION
        targets.add(_flag(_command(spec), "--runtime-api-address"))
    runtime_ports = {name: _flag(_command(spec), "--port") for name, spec in supernodes.items()}
    assert targets == {f"superlink:{link_port}"} | {
        f"{name}:{port}" for name, port in runtime_ports.items()
    }

    dockerfile = (PROJECT_ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^FROM flwr/superexec:\$\{FLWR_VERSION\}", dockerfile, re.M)
    assert re.search(rf"^ARG FLWR_VERSION={re.escape(FLWR_VERSION)}$", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["flower-superexec"\]$', dockerfile, re.M)
    assert "pip install" in dockerfile


def test_dockerfile_drops_the_simulation_extra(tmp_path: Path) -> None:
    """The image installs `flwr` (already in the base image), not `flwr[simulation]` (Ray)."""
    dockerfile = (PROJECT_ROOT / "deploy" / "Dockerfile").read_text()
    match = re.search(r"sed -i '([^']+)' pyproject.toml", dockerfile)
    assert match is not None
    copy = tmp_path / "pyproject.toml"
    copy.write_text((PROJECT_ROOT / "pyproject.toml").read_text())
    subprocess.run(["sed", "-i", match.group(1), str(copy)], check=True)
    dependencies = tomllib.loads(copy.read_text())["project"]["dependencies"]
    assert f"flwr=={FLWR_VERSION}" in dependencies
    assert not any("simulation" in dep for dep in dependencies)


def test_compose_tls_override() -> None:
    compose = _compose("docker-compose.yml", "deploy/compose.tls.yml")
    services = compose["services"]
    link_args = _command(services["superlink"])
    assert "--insecure" not in link_args
    mounted = {s["target"]: s["source"] for s in services["superlink"]["secrets"]}
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"):
        assert "/app/" + _flag(link_args, flag) in mounted
    for name, spec in services.items():
        args = _command(spec)
        if name.startswith("supernode-") or name == "superexec-serverapp":
            # everything that connects to the SuperLink verifies it against the mounted CA
            assert "--insecure" not in args, name
            assert _flag(args, "--root-certificates").endswith("ca.crt")
            targets = {"/app/" + _flag(args, "--root-certificates")}
            assert targets <= {s["target"] for s in spec["secrets"]}, name
        elif name.startswith("superexec-clientapp-"):
            assert _flag(args, "--runtime-api-address").startswith("supernode-")
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./deploy/certs/")
    # The generator writes exactly the files the override mounts.
    certs = (PROJECT_ROOT / "deploy" / "certs.py").read_text()
    for secret in compose["secrets"].values():
        assert f'"{Path(secret["file"]).name}"' in certs


def _installed_parser(service: str):  # type: ignore[no-untyped-def]
    """The argument parser of the Flower binary a compose service runs (this venv's 1.42)."""
    if service == "superlink":
        from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

        return _parse_args_run_superlink()
    if service.startswith("supernode-"):
        from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

        return _parse_args_run_supernode()
    from flwr.supercore.cli.flower_superexec import _parse_args

    return _parse_args()


@pytest.mark.parametrize(
    "files", [("docker-compose.yml",), ("docker-compose.yml", "deploy/compose.tls.yml")]
)
def test_compose_commands_parse_with_installed_flower(files: tuple[str, ...]) -> None:
    """Every flag in the compose files exists in the installed Flower and is not deprecated."""
    deprecated = {
        "--fleet-api-address",
        "--control-api-address",
        "--fleet-api-type",
        "--plugin-type",
        "--appio-api-address",
        "--auth-list-public-keys",
    }
    for service, spec in _compose(*files)["services"].items():
        args = _command(spec)
        assert not deprecated & set(args), (service, deprecated & set(args))
        try:
            _installed_parser(service).parse_args(args)
        except SystemExit as error:  # argparse reports unknown flags by exiting
            pytest.fail(f"{service}: {args} rejected by the installed Flower ({error})")
