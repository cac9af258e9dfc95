"""The Docker Compose deployment: the files' structure, the loopback rewrite, and the real stack.

The static tests read ``docker-compose.yml``, ``deploy/compose.tls.yml`` and
``deploy/Dockerfile`` and parse every service's command with the installed Flower. The
``docker`` tests build nothing themselves: ``deploy/compose_test.sh`` installs and starts a
Docker engine, builds the images offline (``deploy/build_images.sh``) and then runs them with
``FEDKD_COMPOSE_TEST=1``: the stack comes up on loopback, a 2-round secure FedKD runs across
three SuperNode containers through ``flwr run``, and the results volume's history is checked.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FLWR_VERSION = "1.42.0"


def _load_e2e() -> ModuleType:
    path = PROJECT_ROOT / "deploy" / "compose_e2e.py"
    spec = importlib.util.spec_from_file_location("fedkd_compose_e2e", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


e2e = _load_e2e()


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


# --------------------------------------------------------------------------- static checks


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
    assert re.search(
        rf"^ARG BASE_IMAGE=flwr/superexec:{re.escape(FLWR_VERSION)}$", dockerfile, re.M
    )
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["flower-superexec"\]$', dockerfile, re.M)
    assert "pip install" in dockerfile


def _dockerfile_dependencies(tmp_path: Path, torch_requirements: str) -> list[str]:
    """The dependencies the Dockerfile's sed commands leave in pyproject.toml."""
    dockerfile = (PROJECT_ROOT / "deploy" / "Dockerfile").read_text()
    edits = re.findall(r"sed (?:-i )?(?:-E )?'([^']+)' pyproject.(?:in|toml)", dockerfile)
    assert len(edits) == 2, edits
    copy = tmp_path / "pyproject.toml"
    copy.write_text((PROJECT_ROOT / "pyproject.toml").read_text())
    subprocess.run(["sed", "-i", edits[0], str(copy)], check=True)
    if torch_requirements:
        subprocess.run(["sed", "-i", "-E", edits[1], str(copy)], check=True)
    return tomllib.loads(copy.read_text())["project"]["dependencies"]


def test_dockerfile_drops_the_simulation_extra_and_optionally_the_torch_pins(
    tmp_path: Path,
) -> None:
    """The image installs `flwr` (in the base image already), not `flwr[simulation]` (Ray)."""
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    default = _dockerfile_dependencies(tmp_path, "")
    assert f"flwr=={FLWR_VERSION}" in default
    assert not any("simulation" in dep for dep in default)
    torch_pins = [dep for dep in project["dependencies"] if dep.startswith("torch")]
    assert torch_pins and set(torch_pins) <= set(default)  # the project's pins by default
    replaced = _dockerfile_dependencies(tmp_path, "torch==2.13.0")
    assert not any(dep.startswith("torch") for dep in replaced)
    assert len(replaced) == len(default) - len(torch_pins)


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
    # deploy/certs by default; FEDKD_CERTS points the files elsewhere
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("${FEDKD_CERTS:-./deploy/certs}/")
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


@pytest.mark.parametrize("tls", [False, True])
def test_loopback_config_keeps_every_service_on_127_0_0_1(tls: bool) -> None:
    """The test's rewrite changes addresses only, and nothing listens beyond loopback."""
    compose = _compose(*e2e.compose_files(tls))
    images = {"superlink": "local/superlink:x", "supernode": "local/supernode:x"}
    loopback = e2e.loopback_config(compose, images)
    assert set(loopback["services"]) == set(compose["services"])
    for name, spec in loopback["services"].items():
        original = _command(compose["services"][name])
        args = _command(spec)
        assert spec["network_mode"] == "host" and "ports" not in spec, name
        assert len(args) == len(original), name
        changed = {(a, b) for a, b in zip(original, args, strict=True) if a != b}
        for before, after in changed:  # only addresses, hosts and ports differ
            assert re.fullmatch(r"(127\.0\.0\.1:)?\d+(\.\d+){0,3}", after), (name, before, after)
        if "--host" in args:
            assert _flag(args, "--host") == "127.0.0.1"
        for flag in ("--superlink", "--runtime-api-address"):
            if flag in args:
                assert _flag(args, flag).startswith("127.0.0.1:18"), (name, args)
        if name in ("superlink",) or name.startswith("supernode-"):
            assert spec["image"] == images[name.split("-")[0]]
        else:
            assert spec["image"] == compose["services"][name]["image"]
        assert spec.get("secrets") == compose["services"][name].get("secrets"), name
    ports = {
        _flag(_command(spec), "--port")
        for spec in loopback["services"].values()
        if "--port" in _command(spec)
    }
    assert ports == {"18000", "18094", "18095", "18096"}
    assert compose["services"]["superlink"]["ports"]  # the input was not modified


def test_loopback_config_rejects_an_address_it_cannot_map() -> None:
    compose = _compose("docker-compose.yml")
    compose["services"]["superexec-serverapp"]["command"] = [
        "--insecure",
        "--runtime-api-address",
        "elsewhere:8000",
    ]
    with pytest.raises(ValueError, match="elsewhere:8000"):
        e2e.loopback_config(compose)
    with pytest.raises(ValueError, match="no services"):
        e2e.loopback_config({"services": {}})


# --------------------------------------------------------------------------- the real stack

DOCKER = pytest.mark.skipif(
    os.environ.get("FEDKD_COMPOSE_TEST") != "1",
    reason="needs Docker and the images: run deploy/compose_test.sh (sets FEDKD_COMPOSE_TEST=1)",
)


def _load(name: str) -> ModuleType:
    path = PROJECT_ROOT / "deploy" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"fedkd_deploy_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _history_is_complete(history: list[dict], rounds: int) -> None:
    assert [row["round"] for row in history] == list(range(1, rounds + 1))
    for row in history:
        assert row["status"] == "ok", row
        assert row["survivors"] == 3 and row["dropped"] == [], row
        for key in ("student_accuracy", "teacher_accuracy", "client_accuracy_mean"):
            value = row[key]
            assert isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0
        assert row["bytes_up"] > 0 and row["bytes_down"] > 0


def test_scaling_the_compose_file_gives_each_client_its_partition_and_port() -> None:
    stack = _load("compose_stack")
    scaled = stack.scale_config(_compose("docker-compose.yml"), 5)
    nodes = {n: s for n, s in scaled["services"].items() if n.startswith("supernode-")}
    runners = {n: s for n, s in scaled["services"].items() if n.startswith("superexec-clientapp-")}
    assert len(nodes) == len(runners) == 5
    ports = set()
    for index in range(5):
        args = _command(nodes[f"supernode-{index}"])
        assert _flag(args, "--node-config") == f"partition-id={index} num-partitions=5"
        ports.add(_flag(args, "--port"))
        target = _flag(_command(runners[f"superexec-clientapp-{index}"]), "--runtime-api-address")
        assert target == f"supernode-{index}:{_flag(args, '--port')}"
    assert ports == {str(9094 + i) for i in range(5)}
    e2e.loopback_config(scaled)  # every address still maps to loopback
    plan = _load("compose_soak").fault_plan(50, every=4, seed=0)
    assert plan == _load("compose_soak").fault_plan(50, every=4, seed=0)  # seeded
    assert [f.round for f in plan] == list(range(2, 51, 4))


@pytest.mark.docker
@pytest.mark.slow
@DOCKER
def test_compose_stack_runs_secure_fedkd(tmp_path: Path) -> None:
    result = e2e.run_stack(tls=False, work_dir=tmp_path, rounds=2, timeout=1200)
    logs = (result.log_dir / "flwr-run.log").read_text()
    compose_log = (result.log_dir / "compose.log").read_text()
    assert result.run_status == "finished:completed", logs[-3000:] + compose_log[-3000:]
    _history_is_complete(result.history, rounds=2)
    # The SuperLink served what it was asked to, on loopback only.
    assert "running on http://127.0.0.1:18000" in compose_log.lower(), compose_log[-2000:]
    for index in range(3):  # every client container ran ClientApps, once or more per round
        started = re.findall(
            rf"^superexec-clientapp-{index}_1 .*Start `flwr-clientapp` process", compose_log, re.M
        )
        assert len(started) >= 2, compose_log[-3000:]
        assert re.search(rf"^supernode-{index}_1 .*Starting insecure channel", compose_log, re.M)
    print(
        f"compose (plain): up {result.up_seconds:.1f} s, "
        f"run {result.run_seconds:.1f} s, total {result.total_seconds:.1f} s"
    )
    _no_containers_left()


@pytest.mark.docker
@pytest.mark.slow
@DOCKER
def test_compose_stack_with_tls_survives_killed_containers_a_killed_server_and_flaky_clients(
    tmp_path: Path,
) -> None:
    """The soak's short version: 4 SuperNode containers over HTTPS, 4 rounds. Round 1: a
    SuperNode container `docker kill`ed at share keys (started again 5 s later). Round 2: the
    SuperLink and ServerApp containers killed after the masked inputs were asked for: the
    resumed run records round 2 abandoned and never asks for it again. Round 3: a client's
    CPUs capped at 5% (`docker update --cpus`) from train on, and another client's link cut
    for 10 s in share keys, returning within the deadline."""
    soak = _load("compose_soak")
    plan = [
        "1:share_keys:kill-node:1:5",
        "2:masked_input:kill-server",
        "3:train:slow-cpu:2:400",
        "3:share_keys:cut-link:3:10",
    ]
    args = soak.parse_args(
        [
            *("--supernodes", "4", "--rounds", "4", "--tls", "--check"),
            *("--work-dir", str(tmp_path), "--sample-every", "5"),
            *[arg for fault in plan for arg in ("--fault", fault)],
            *("--run-config", "secagg-threshold=0.5 stage-timeout=120 secagg-timeout=45"),
        ]
    )
    report = soak.soak(args)
    assert report["status"] == "finished:completed", report
    assert report["rounds_recorded"] == 4 and report["rounds_in_order"], report
    history = json.loads((tmp_path / "runs" / "history.json").read_text())
    assert [r["status"] for r in history] == ["ok", "abandoned", "ok", "ok"], history
    assert "interrupted at stage masked_input" in history[1]["reason"]
    assert history[0]["survivors"] == 3  # the container killed at share keys is not in the sum
    assert report["check"]["ok"], report["check"]  # exact survivors' sums, no double release
    assert report["teachers_complete"] and report["checkpoint_is_last_ok_round"], report
    assert len(report["flower_runs"]) == 2
    # The slowed client missed the train deadline of round 3 without holding the round.
    assert history[2]["seconds_train"] < 120 + 30 and 2 in history[2]["dropped"], history[2]
    log = (tmp_path / "logs" / "flwr-run.log").read_text()
    assert re.search(r"fault: round 1, stage share_keys: node \d+ \(partition 1\)", log)
    assert report["processes"] == [] or report["max_rss_growth_pct"] is not None
    _no_containers_left()


def _no_containers_left() -> None:
    leftovers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={e2e.PROJECT_NAME}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert leftovers == [], "containers left after down -v"
