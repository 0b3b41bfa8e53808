"""``fedfleet fleet deploy/status/logs/exec/remove`` through click against an in-memory Docker."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest
import requests
from click.testing import CliRunner, Result
from fake_docker import FakeDevice, FakeImage, FakeLocal, FakeServer

from fedfleet.server.cli import fleet as fleet_cli
from fedfleet.server.fleet import session, status
from fedfleet.server.fleet.channels import ChannelError
from fedfleet.server.fleet.specs import Endpoint
from fedfleet.shared.cli import cli
from fedfleet.shared.errors import FedfleetError


def _image(ref: str, **kwargs: Any) -> FakeImage:
    return FakeImage(ref=ref, id=f"sha256:{hashlib.sha256(ref.encode()).hexdigest()}",
                     **kwargs)


V1 = _image("fedfleet-client:0.1.0")
NAMES = ("edge-1", "edge-2", "edge-3")


class Bench:
    """An inventory of three devices, each an in-memory Docker, and the fake server."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.catalog = {V1.ref: V1}
        self.server = FakeServer()
        self.devices = {name: FakeDevice(name, self.server, self.catalog) for name in NAMES}
        self.unreachable: set[str] = set()
        self.local = FakeLocal(self.catalog)
        (tmp_path / "ca.crt").write_text("CA")
        (tmp_path / "outputs").mkdir()
        devices = "".join(f'[devices.{n}]\nendpoint = "unix:///run/{n}.sock"\n' for n in NAMES)
        self.inventory = tmp_path / "fleet.toml"
        self.inventory.write_text(
            '[server]\naddress = "10.0.0.1:8000"\nca = "ca.crt"\noutputs = "outputs"\n'
            f'[defaults]\ndata = "/srv/data"\nimage = "{V1.ref}"\n{devices}')
        self.registry: Any = self.server
        for module in (session, status, fleet_cli):
            monkeypatch.setattr(module, "connect", self.connect)
        monkeypatch.setattr(session, "node_registry", lambda inventory, state_dir:
                            self.registry)

    def connect(self, endpoint: Endpoint, timeout: float = 60.0) -> Any:
        """Return the device's fake Docker, as channels.connect returns a client."""
        if endpoint.url == "local":
            return self.local
        name = endpoint.url.removeprefix("unix:///run/").removesuffix(".sock")
        if name in self.unreachable:
            raise ChannelError(f"cannot reach {endpoint.url}: connection refused")
        return self.devices[name]

    def fleet(self, command: str, *args: str, input: str | None = None) -> Result:
        """Run ``fedfleet fleet COMMAND -i fleet.toml ARGS``."""
        return CliRunner().invoke(cli, ["fleet", command, "-i", str(self.inventory), *args],
                                  input=input)


@pytest.fixture()
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bench:
    return Bench(tmp_path, monkeypatch)


def _deployed(bench: Bench, *names: str) -> None:
    """Deploy ``names`` one after another: their nodes are 101, 102... in that order."""
    result = bench.fleet("deploy", "--parallel", "1", *names)
    assert result.exit_code == 0, result.output


def test_deploy_starts_every_device(bench: Bench) -> None:
    """Each device gets the image, a node and a running client; exit 0."""
    # Execute
    result = bench.fleet("deploy")
    # Assert
    lines = result.output.splitlines()
    assert result.exit_code == 0, result.output
    nodes = {}
    for name in NAMES:
        said = [m for line in lines if (m := re.match(
            rf"{name}  OK  deployed: {V1.ref} \({V1.id[7:19]}\), healthy and online as node "
            r"(\d+) \[\d+s\]$", line))]
        assert len(said) == 1, result.output
        container = bench.devices[name].containers.get(f"fedfleet-{name}")
        assert container.status == "running"
        assert container.labels["org.fedfleet.node-id"] == said[0].group(1)
        nodes[name] = int(said[0].group(1))
    assert sorted(nodes.values()) == [101, 102, 103]  # in the order they registered
    assert all(bench.server.rows[n]["status"] == "online" for n in nodes.values())
    assert lines[-1] == "3 of 3 devices deployed (3 changed)"


def test_deploy_goes_on_past_an_unreachable_device(bench: Bench) -> None:
    """edge-2 does not answer: the others are deployed, exit 1 names edge-2 in one line."""
    # Prepare
    bench.unreachable.add("edge-2")
    # Execute
    result = bench.fleet("deploy")
    # Assert
    lines = result.output.splitlines()
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert any(line.startswith("edge-2  FAILED  cannot reach unix:///run/edge-2.sock: "
                               "connection refused") for line in lines)
    assert lines[-2:] == ["2 of 3 devices deployed (2 changed)",
                          "Error: 1 of 3 devices failed: edge-2 (reasons above)"]
    assert bench.devices["edge-2"].store == {} and bench.devices["edge-2"].loaded == []
    assert bench.devices["edge-3"].containers.get("fedfleet-edge-3").status == "running"


def test_deploy_only_the_named_devices(bench: Bench) -> None:
    """'deploy edge-3' leaves the other devices untouched."""
    # Execute
    result = bench.fleet("deploy", "edge-3")
    # Assert
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "1 of 1 devices deployed (1 changed)"
    assert bench.devices["edge-1"].loaded == [] and bench.devices["edge-2"].loaded == []
    assert bench.devices["edge-3"].loaded == [V1.ref]


def test_deploy_refuses_a_revoked_node(bench: Bench) -> None:
    """The server revoked edge-1's node: deploy fails there and says what to run."""
    # Prepare
    _deployed(bench)
    bench.server.revoke(101)
    started = list(bench.devices["edge-1"].started)
    # Execute
    result = bench.fleet("deploy")
    # Assert
    assert result.exit_code == 1
    assert any(line.startswith("edge-1  FAILED  node 101 of device edge-1 was revoked on the "
                               "server; run 'fedfleet fleet remove edge-1' and deploy again")
               for line in result.output.splitlines())
    assert result.output.splitlines()[-2:] == [
        "2 of 3 devices deployed (0 changed)",
        "Error: 1 of 3 devices failed: edge-1 (reasons above)"]
    assert bench.devices["edge-1"].started == started


@pytest.mark.parametrize("command", ["deploy", "status", "remove edge-1 --yes",
                                     "logs edge-1", "exec edge-1 -- doctor"])
def test_a_missing_inventory_is_one_line(bench: Bench, command: str) -> None:
    """No fleet.toml: every command says so in one line and exits 1."""
    # Prepare
    bench.inventory.unlink()
    # Execute
    name, *args = command.split()
    result = bench.fleet(name, *args)
    # Assert
    assert result.exit_code == 1
    assert result.output == (f"Error: {bench.inventory}: no such inventory; write one (see "
                             "README: Deploy to your devices) or pass --inventory\n")


@pytest.mark.parametrize("command", ["deploy edge-9", "status edge-9", "remove edge-9 --yes",
                                     "logs edge-9", "exec edge-9 -- doctor"])
def test_an_unknown_device_is_one_line(bench: Bench, command: str) -> None:
    """A name not in the inventory is refused before anything is touched."""
    # Execute
    name, *args = command.split()
    result = bench.fleet(name, *args)
    # Assert
    assert result.exit_code == 1
    assert result.output == (f"Error: {bench.inventory}: no device named edge-9 (devices: "
                             "edge-1, edge-2, edge-3)\n")
    assert all(device.started == [] for device in bench.devices.values())


@pytest.mark.parametrize(("args", "message"), [
    (["deploy", "--parallel", "0"], "Invalid value for '--parallel'"),
    (["status", "--format", "yaml"], "Invalid value for '--format'"),
    (["logs", "edge-1", "--tail", "-1"], "Invalid value for '--tail'"),
    (["exec", "edge-1"], "Missing argument 'ARGS...'"),
    (["remove"], "Missing argument 'NAMES...'"),
])
def test_bad_options_are_a_usage_error(bench: Bench, args: list[str], message: str) -> None:
    """The input is refused by click: exit 2, no traceback."""
    # Execute
    result = bench.fleet(*args)
    # Assert
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_status_shows_a_row_per_device_and_the_errors_below(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deployed, unreachable and failing devices in one table; each error on its own line."""
    # Prepare
    _deployed(bench, "edge-1", "edge-3")
    bench.unreachable.add("edge-2")
    bench.devices["edge-1"].activity = {"state": "busy", "message_type": "train",
                                        "round": 3, "run_id": 7}

    def fails(key: str) -> Any:
        raise docker.errors.APIError("500 Server Error: Internal Server Error")

    monkeypatch.setattr(bench.devices["edge-3"].containers, "get", fails)
    # Execute
    result = bench.fleet("status")
    # Assert
    lines = result.output.splitlines()
    assert result.exit_code == 0, result.output
    assert lines[0].split()[:3] == ["DEVICE", "CONTAINER", "HEALTH"]
    row = lines[1].split()
    assert row[:7] == ["edge-1", "running", "healthy", V1.id[7:19], "0.1.0", "101", "online"]
    assert "busy (train round 3)" in lines[1]
    assert re.search(r"\b\d+h\d\dm\b", lines[1])  # uptime since the fake's StartedAt
    assert lines[2].split() == ["edge-2", "unreachable"] + ["-"] * 10
    assert lines[3].split() == ["edge-3", "-"] + ["-"] * 10
    assert lines[4:] == ["edge-2: cannot reach unix:///run/edge-2.sock: connection refused",
                         "edge-3: APIError: 500 Server Error: Internal Server Error"]


def test_status_as_json_marks_a_revoked_node(bench: Bench) -> None:
    """--format json: one object per device; the revoked node is 'unregistered'."""
    # Prepare
    _deployed(bench, "edge-1", "edge-2")
    bench.server.revoke(102)
    # Execute
    result = bench.fleet("status", "edge-1", "edge-2", "--format", "json")
    # Assert
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["device"], r["node_id"], r["online"]) for r in rows] == \
        [("edge-1", "101", "online"), ("edge-2", "102", "unregistered")]
    assert rows[0]["activity"] == "idle" and rows[0]["digest"] is None
    assert isinstance(rows[0]["uptime_s"], int) and rows[0]["uptime_s"] > 0


def test_status_without_the_server_still_shows_the_devices(bench: Bench) -> None:
    """The Control API fails: devices shown with online 'unknown' and a (server) row."""
    # Prepare
    _deployed(bench, "edge-1")

    class Down(FakeServer):
        def nodes(self, fresh: bool = False) -> dict[int, dict[str, Any]]:
            raise FedfleetError("no fedfleet server answers at 127.0.0.1:8000")

    bench.registry = Down()
    # Execute
    result = bench.fleet("status", "edge-1")
    # Assert
    lines = result.output.splitlines()
    assert result.exit_code == 0, result.output
    assert lines[1].split()[5:7] == ["101", "unknown"]
    assert lines[2].split() == ["(server)", "unreachable"] + ["-"] * 10
    assert lines[3] == "(server): no fedfleet server answers at 127.0.0.1:8000"


def test_status_watch_refreshes_until_interrupted(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """--watch prints a time and the table each round; Ctrl-C during the wait ends it."""
    # Prepare
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(fleet_cli.time, "sleep", sleep)
    # Execute
    result = bench.fleet("status", "edge-1", "--watch", "--interval", "3")
    # Assert
    lines = result.output.splitlines()
    assert result.exit_code == 0, result.output
    assert naps == [3.0, 3.0]
    assert [bool(re.fullmatch(r"\d\d:\d\d:\d\d", line)) for line in lines] == \
        [True, False, False] * 2
    assert lines[2].split() == ["edge-1", "absent"] + ["-"] * 10


def test_logs_prints_the_last_lines(bench: Bench) -> None:
    """--tail N gives the container's last N lines, byte for byte."""
    # Prepare
    _deployed(bench, "edge-1")
    bench.devices["edge-1"].containers.get("fedfleet-edge-1").output = b"one\ntwo\nthree\n"
    # Execute
    result = bench.fleet("logs", "edge-1", "--tail", "2")
    # Assert
    assert result.exit_code == 0, result.output
    assert result.output == "two\nthree\n"


def test_logs_follow_streams_until_interrupted(bench: Bench) -> None:
    """--follow prints the chunks as they come; Ctrl-C ends it with exit 0."""
    # Prepare
    _deployed(bench, "edge-1")
    container = bench.devices["edge-1"].containers.get("fedfleet-edge-1")

    def stream(**kwargs: Any) -> Any:
        assert kwargs == {"stream": True, "follow": True, "tail": 100}
        yield b"round 1\n"
        yield b"round 2\n"
        raise KeyboardInterrupt

    container.logs = stream
    # Execute
    result = bench.fleet("logs", "edge-1", "--follow")
    # Assert
    assert result.exit_code == 0, result.output
    assert result.output == "round 1\nround 2\n"


def test_logs_of_a_device_without_a_client(bench: Bench) -> None:
    """Not deployed: one line saying what to run."""
    # Execute
    result = bench.fleet("logs", "edge-2")
    # Assert
    assert result.exit_code == 1
    assert result.output == ("Error: device edge-2 has no client container (fedfleet-edge-2); "
                             "run 'fedfleet fleet deploy edge-2'\n")


def test_logs_of_an_unreachable_device(bench: Bench) -> None:
    """The channel's reason, in one line."""
    # Prepare
    bench.unreachable.add("edge-1")
    # Execute
    result = bench.fleet("logs", "edge-1")
    # Assert
    assert result.exit_code == 1
    assert result.output == "Error: cannot reach unix:///run/edge-1.sock: connection refused\n"


def test_exec_runs_fedfleet_in_the_container_and_keeps_its_exit_code(bench: Bench) -> None:
    """The command's stdout and stderr come through; its exit code is the command's."""
    # Prepare
    _deployed(bench, "edge-1")
    device = bench.devices["edge-1"]
    device.replies[("fedfleet", "doctor")] = (3, b"server: unreachable\n", b"1 problem\n")
    device.replies[("fedfleet", "data", "/data")] = (0, b"1797 samples\n", b"")
    # Execute
    doctor = bench.fleet("exec", "edge-1", "--", "doctor")
    data = bench.fleet("exec", "edge-1", "--", "data", "/data")
    # Assert
    assert (doctor.exit_code, doctor.stdout, doctor.stderr) == \
        (3, "server: unreachable\n", "1 problem\n")
    assert (data.exit_code, data.output) == (0, "1797 samples\n")
    assert device.executed[-2:] == [["fedfleet", "doctor"], ["fedfleet", "data", "/data"]]


def test_exec_in_a_stopped_container_is_refused(bench: Bench) -> None:
    """A stopped client is not exec'd into; the message points at the logs."""
    # Prepare
    _deployed(bench, "edge-1")
    device = bench.devices["edge-1"]
    device.containers.get("fedfleet-edge-1").stop()
    executed = list(device.executed)
    # Execute
    result = bench.fleet("exec", "edge-1", "--", "doctor")
    # Assert
    assert result.exit_code == 1
    assert result.output == ("Error: the client container on edge-1 is exited; see "
                             "'fedfleet fleet logs edge-1'\n")
    assert device.executed == executed


def test_remove_asks_first_and_does_nothing_when_declined(bench: Bench) -> None:
    """Answering no aborts with exit 1: container, key and node stay."""
    # Prepare
    _deployed(bench, "edge-1")
    # Execute
    result = bench.fleet("remove", "edge-1", input="n\n")
    # Assert
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Remove edge-1 (container, node key, registration)? [y/N]: n", "Aborted!"]
    assert bench.devices["edge-1"].containers.get("fedfleet-edge-1").status == "running"
    assert bench.server.rows[101]["status"] == "online"


def test_remove_takes_the_devices_out(bench: Bench) -> None:
    """Confirmed: containers and volumes gone, nodes revoked; a never-deployed one is a no-op."""
    # Prepare
    _deployed(bench, "edge-1", "edge-2")
    # Execute
    result = bench.fleet("remove", "edge-1", "edge-2", "edge-3", input="y\n")
    # Assert
    lines = result.output.splitlines()
    assert result.exit_code == 0, result.output
    assert lines[0] == ("Remove edge-1, edge-2, edge-3 (container, node key, registration)? "
                        "[y/N]: y")
    assert any(line.startswith("edge-1  OK  container removed; node 101 revoked")
               for line in lines)
    assert any(line.startswith("edge-3  OK  nothing to remove") for line in lines)
    assert lines[-1] == "3 of 3 devices removed (2 changed)"
    assert [bench.server.rows[n]["status"] for n in (101, 102)] == ["unregistered"] * 2
    assert all(bench.devices[n].store == {} and bench.devices[n].volume_files == {}
               for n in NAMES)


def test_remove_goes_on_past_an_unreachable_device(bench: Bench) -> None:
    """--yes: edge-1 is removed though edge-2 cannot be reached; exit 1 names edge-2."""
    # Prepare
    _deployed(bench, "edge-1", "edge-2")
    bench.unreachable.add("edge-2")
    # Execute
    result = bench.fleet("remove", "edge-1", "edge-2", "--yes")
    # Assert
    assert result.exit_code == 1
    assert result.output.splitlines()[-2:] == [
        "1 of 2 devices removed (1 changed)",
        "Error: 1 of 2 devices failed: edge-2 (reasons above)"]
    assert bench.server.rows[101]["status"] == "unregistered"
    assert bench.server.rows[102]["status"] == "online"


def test_status_watch_on_a_terminal_redraws_in_place(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal each refresh first clears the screen."""
    # Prepare
    class Terminal:
        stdout = SimpleNamespace(isatty=lambda: True)

    def sleep(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fleet_cli, "sys", Terminal)
    monkeypatch.setattr(fleet_cli.time, "sleep", sleep)
    # Execute
    result = CliRunner().invoke(cli, ["fleet", "status", "-i", str(bench.inventory), "--watch"],
                                color=True)  # a terminal: click keeps the escapes
    # Assert
    assert result.exit_code == 0, result.output
    assert result.output.startswith("\x1b[H\x1b[2J")
    assert result.output.count("\x1b[H\x1b[2J") == 1


def test_a_docker_error_during_logs_or_exec_is_one_line(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device's daemon fails mid-command: one line naming the device, exit 1."""
    # Prepare
    _deployed(bench, "edge-1")
    container = bench.devices["edge-1"].containers.get("fedfleet-edge-1")

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise docker.errors.APIError("500 Server Error", explanation="error from daemon "
                                                                     "in stream: EOF")

    monkeypatch.setattr(container, "logs", fails)
    monkeypatch.setattr(container, "exec_run", fails)
    # Execute
    logs = bench.fleet("logs", "edge-1")
    executed = bench.fleet("exec", "edge-1", "--", "doctor")
    # Assert
    for result in (logs, executed):
        assert result.exit_code == 1
        assert result.output == ("Error: device edge-1: its Docker failed (APIError): "
                                 "error from daemon in stream: EOF\n")


def test_a_connection_lost_while_following_logs_is_one_line(bench: Bench) -> None:
    """The device drops off mid --follow: what was printed stays, then one line, exit 1."""
    # Prepare
    _deployed(bench, "edge-1")
    container = bench.devices["edge-1"].containers.get("fedfleet-edge-1")

    def stream(**kwargs: Any) -> Any:
        yield b"round 1\n"
        raise requests.exceptions.ConnectionError("Connection reset by peer")

    container.logs = stream
    # Execute
    result = bench.fleet("logs", "edge-1", "--follow")
    # Assert
    assert result.exit_code == 1
    assert result.output == ("round 1\nError: device edge-1: its Docker failed "
                             "(ConnectionError): Connection reset by peer\n")
