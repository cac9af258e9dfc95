"""fedkd.cli.launch: ports, Flower home, run status, cleanup of every process a launch starts.

The fast tests run real processes and real sockets but no Flower run; the two slow ones run
``flwr run`` for real: one that fails (its cause must come back on one line), one stopped with
SIGINT mid-run (no process may survive).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from fedkd.cli.flower_status import RunStatus, cli_error, exception_line, failure_cause
from fedkd.cli.launch import (
    LAUNCH_TAG,
    Interrupted,
    LocalSuperLink,
    flwr_command,
    flwr_run,
    free_ports,
    signals_as_interrupt,
)
from fedkd.cli.processes import alive, command_line, process_table, tagged_processes, terminate
from fedkd.cli.run_config import CHECKOUT, absolute_paths, check_run_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent

TINY = {"num-rounds": 2, "local-epochs": 1, "warmup-epochs": 0, "distill-epochs": 1}


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(4)
    assert len(set(ports)) == 4
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # raises if it was not free


def test_two_launches_get_their_own_ports_home_and_tag() -> None:
    first, second = LocalSuperLink.create(), LocalSuperLink.create()
    try:
        assert {first.http_port, first.control_port}.isdisjoint(
            {second.http_port, second.control_port}
        )
        assert first.flwr_home != second.flwr_home and first.tag != second.tag
        env = first.env()
        assert env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"] == str(first.http_port)
        assert env["FLWR_LOCAL_CONTROL_API_PORT"] == str(first.control_port)
        assert env["FLWR_HOME"] == str(first.flwr_home) and env[LAUNCH_TAG] == first.tag
        assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
        with_deps = first.env(install_dependencies=True)
        assert "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION" not in with_deps
    finally:
        for link in (first, second):
            link.flwr_home.rmdir()


def test_flwr_command_passes_size_and_toml_overrides() -> None:
    command = flwr_command(
        {"dataset": "digits", "num-rounds": 2, "secagg": False, "lr": 0.01},
        4,
        ["client-resources-num-cpus=1"],
    )
    assert CHECKOUT == PROJECT_ROOT  # the default app: the checkout this package runs from
    assert command[1:4] == ["run", str(PROJECT_ROOT), "--stream"]
    fed = command[command.index("--federation-config") + 1]
    assert fed == "num-supernodes=4 client-resources-num-cpus=1"
    run_config = command[command.index("--run-config") + 1]
    assert run_config == 'dataset="digits" num-rounds=2 secagg=false lr=0.01'


def test_failure_cause_reads_the_log_then_the_status_then_the_superlink_log(
    tmp_path: Path,
) -> None:
    log = ["INFO : starting", "Traceback (most recent call last):", "  File x", ""]
    log += ["FileNotFoundError: IDX folder not found: /nowhere", "ERROR : Exit Code: 700"]
    failed = RunStatus("finished:failed", "Simulation failed with exception: boom\nmore")
    assert exception_line(log) == "FileNotFoundError: IDX folder not found: /nowhere"
    missing = tmp_path / "absent.log"
    assert failure_cause(failed, log, missing) == exception_line(log)
    assert failure_cause(failed, ["no exception here"], missing) == (
        "Simulation failed with exception: boom"
    )
    boxed = ["╭─ Error ───╮", "│ The provided configuration │", "│ string is invalid. │", "╰──╯"]
    assert cli_error(boxed) == "The provided configuration string is invalid."
    superlink_log = tmp_path / "superlink.log"
    superlink_log.write_text("INFO x\nERROR : Invalid run configuration: unknown key 'zz'\n")
    assert failure_cause(RunStatus("not started"), [], superlink_log) == (
        "Invalid run configuration: unknown key 'zz'"
    )
    assert "not started" in failure_cause(RunStatus("not started"), [], missing)


def test_tagged_processes_are_found_and_stopped_even_when_orphaned() -> None:
    tag = uuid.uuid4().hex
    env = {**os.environ, LAUNCH_TAG: tag}
    # a child, and a grandchild whose parent exits at once (reparented, like Ray's daemons)
    child = subprocess.Popen(["sleep", "60"], env=env)
    subprocess.run(["sh", "-c", "sleep 61 & exit 0"], env=env, check=True)
    bystander = subprocess.Popen(["sleep", "62"])  # same user, not tagged: must survive
    try:
        deadline = time.monotonic() + 5
        while len(found := tagged_processes(LAUNCH_TAG, tag)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(command_line(pid).strip() for pid in found) == ["sleep 60", "sleep 61"]
        orphan = next(pid for pid in found if pid != child.pid)
        assert process_table()[orphan].parent != os.getpid()
        terminate(found, timeout=5)
        child.wait(timeout=5)
        assert alive(found) == [] and tagged_processes(LAUNCH_TAG, tag) == []
        assert alive([bystander.pid]) == [bystander.pid]
    finally:
        bystander.kill()
        bystander.wait()
        child.kill()
        child.wait()


def test_run_config_is_checked_against_the_app_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown run config key 'num-round'"):
        check_run_config({"num-round": 3}, num_clients=4)
    fixed = absolute_paths({"out-dir": "runs", "data-root": "", "seed": 1})
    assert fixed["out-dir"] == str(Path("runs").resolve()) and fixed["data-root"] == ""


def test_a_signal_stops_a_launch_past_any_except_exception_and_ray_keeps_its_name() -> None:
    caught: list[BaseException] = []
    before = signal.getsignal(signal.SIGTERM)  # Ray's, where an earlier test started Ray here
    with pytest.raises(Interrupted) as stop, signals_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
        except Exception as error:  # a round's "one bad client" handler must not swallow it
            caught.append(error)
    assert caught == [] and stop.value.signum == signal.SIGTERM
    # Ray's ray.get re-raises a handler's KeyboardInterrupt as a bare one: the signal survives
    assert Interrupted.caught(KeyboardInterrupt()).signum == signal.SIGTERM
    try:  # a signal landing in an import comes back wrapped (matplotlib's __set_name__)
        raise RuntimeError("Error calling __set_name__") from stop.value
    except RuntimeError as wrapped:
        found = Interrupted.within(wrapped)
        assert found is not None and found.signum == signal.SIGTERM
    assert Interrupted.within(RuntimeError("a real failure")) is None
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


def test_a_ray_run_past_its_timeout_exits_124_and_keeps_its_results(tmp_path: Path) -> None:
    # the deadline is a SIGALRM, most likely to land while the driver waits in ray.get
    settings = [f"{key}={value}" for key, value in {**TINY, "num-rounds": 50}.items()]
    done = subprocess.run(
        [sys.executable, "-m", "fedkd.cli", "run", "--clients", "2", "--engine", "ray"]
        + ["--timeout", "25", "--out", str(tmp_path), "--set", *settings],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 124, done.stdout + done.stderr
    assert "timed out after 25 s" in done.stderr
    assert [path for path in tmp_path.iterdir() if path.is_dir()]


@pytest.mark.slow
def test_a_failed_run_exits_non_zero_with_its_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = uuid.uuid4().hex
    monkeypatch.setenv("FEDKD_TEST_MARK", mark)  # inherited by everything the launch starts
    nowhere = tmp_path / "nowhere"
    result = flwr_run(
        {**TINY, "dataset": "idx", "data-root": str(nowhere), "out-dir": str(tmp_path)},
        num_supernodes=2,
        echo=False,
        timeout=300,
        flwr_home=tmp_path / "flwr-home",
    )
    assert result.returncode == 1 and result.status == "finished:failed"
    assert str(nowhere) in result.cause and "\n" not in result.cause
    assert result.flwr_home == tmp_path / "flwr-home"
    assert (result.flwr_home / "local-superlink" / "superlink.log").exists()  # logs kept
    assert _marked(mark) == [], [command_line(pid) for pid in _marked(mark)]


def _marked(mark: str) -> list[int]:
    needle = f"FEDKD_TEST_MARK={mark}".encode()
    mine = {os.getpid()}
    found = []
    for pid in process_table():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ and pid not in mine:
            found.append(pid)
    return found


@pytest.mark.slow
@pytest.mark.parametrize(
    ("engine", "said"), [("flower", "interrupted by SIGINT"), ("ray", "run stopped: SIGINT")]
)
def test_sigint_mid_run_stops_every_process_and_keeps_the_results(
    tmp_path: Path, engine: str, said: str
) -> None:
    mark = uuid.uuid4().hex
    settings = [f"{key}={value}" for key, value in {**TINY, "num-rounds": 20}.items()]
    fedkd = subprocess.Popen(
        [sys.executable, "-m", "fedkd.cli", "run", "--clients", "2", "--engine", engine]
        + ["--out", str(tmp_path), "--set", *settings],
        cwd=PROJECT_ROOT,
        env={**os.environ, "FEDKD_TEST_MARK": mark},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    assert fedkd.stdout is not None
    reader = threading.Thread(target=lambda: output.extend(fedkd.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any("raylet" in command_line(pid) for pid in _marked(mark)):
            assert fedkd.poll() is None, "".join(output)
            assert time.monotonic() < deadline, "Ray never started"
            time.sleep(0.5)
        time.sleep(3)  # mid-round
        assert len(_marked(mark)) > 3  # (SuperLink, SuperExec, simulation,) Ray daemons ...
        fedkd.send_signal(signal.SIGINT)
        returncode = fedkd.wait(timeout=120)
    finally:
        if fedkd.poll() is None:
            os.killpg(fedkd.pid, signal.SIGKILL)
            fedkd.wait()
    reader.join(timeout=10)
    text = "".join(output)
    assert returncode == 130, text
    assert "stopped" in text and said in text
    time.sleep(1)
    assert _marked(mark) == [], [command_line(pid) for pid in _marked(mark)]
    assert [path for path in tmp_path.iterdir() if path.is_dir()]  # the results folder stays


def test_one_cpu_per_simulated_client_unless_told_otherwise() -> None:
    default = flwr_command({}, 4)
    assert default[default.index("--federation-config") + 1] == (
        "num-supernodes=4 client-resources-num-cpus=1"
    )
    chosen = flwr_command({}, 4, ["client-resources-num-cpus=2"])
    assert chosen[chosen.index("--federation-config") + 1] == (
        "num-supernodes=4 client-resources-num-cpus=2"
    )
