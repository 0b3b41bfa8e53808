"""``fleet status`` parts: a device's activity, its row's details, the server's registry."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from fake_docker import FakeDevice, FakeImage, FakeServer

from fedfleet.server.fleet import session
from fedfleet.server.fleet.activity import describe, read_activity
from fedfleet.server.fleet.common import Device, Fleet
from fedfleet.server.fleet.container import NODE_LABEL
from fedfleet.server.fleet.images import LocalImages
from fedfleet.server.fleet.inventory import load_inventory
from fedfleet.server.fleet.nodes import ContainerRegistry, DirectRegistry
from fedfleet.server.fleet.specs import DeviceSpec, Endpoint, ServerSpec
from fedfleet.server.fleet.status import device_status, render

V1 = FakeImage(ref="fedfleet-client:0.1.0",
               id=f"sha256:{hashlib.sha256(b'fedfleet-client:0.1.0').hexdigest()}")


class Answer:
    """What ``exec_run`` gives back."""

    def __init__(self, exit_code: int, output: bytes) -> None:
        self.exit_code, self.output = exit_code, output


class Client:
    """A container whose ``cat activity.json`` answers as given (or fails)."""

    def __init__(self, answer: Answer | Exception) -> None:
        self.answer = answer

    def exec_run(self, cmd: list[str], **kwargs: Any) -> Answer:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize("answer", [
    docker.errors.APIError("409 Client Error: Conflict (container is not running)"),
    Answer(1, b"cat: /app/activity.json: No such file or directory\n"),
    Answer(0, b'{"state": "bu'),  # torn while the client wrote it
    Answer(0, b'["busy"]'),
])
def test_unreadable_activity_is_none(answer: Answer | Exception) -> None:
    """No file, an exec refused, torn or odd JSON: unknown, never an error."""
    # Execute / Assert
    assert read_activity(Client(answer)) is None


def test_activity_is_read_from_the_container() -> None:
    """The client's activity.json as a dict."""
    # Execute / Assert
    assert read_activity(Client(Answer(0, b'{"state": "idle"}'))) == {"state": "idle"}


def test_a_busy_device_is_described() -> None:
    """Long form for messages, short form for the table; unknown parts are left out."""
    # Prepare
    busy = {"state": "busy", "message_type": "train", "round": 3, "run_id": 7}
    # Execute / Assert
    assert describe(busy) == "its train message of round 3 in run 7"
    assert describe(busy, short=True) == "train round 3"
    assert describe({"state": "busy", "run_id": 7}) == "its a message in run 7"
    assert describe({"state": "busy"}, short=True) == "message"


def _device(tmp_path: Path, fake: FakeDevice) -> Device:
    spec = DeviceSpec(name="edge-1", endpoint=Endpoint("unix:///run/edge-1.sock"),
                      data="/srv/data", image=V1.ref)
    fleet = Fleet(server=ServerSpec(address="10.0.0.1:8000", ca=tmp_path / "ca.crt"),
                  ca_pem=b"CA", registry=fake.server,  # type: ignore[arg-type]
                  local=LocalImages(lambda timeout: fake))  # type: ignore[arg-type,return-value]
    return Device(fake, spec, fleet)  # type: ignore[arg-type]


def _running(tmp_path: Path, state: dict[str, Any]) -> tuple[Device, FakeDevice]:
    fake = FakeDevice("edge-1", FakeServer(), {V1.ref: V1})
    fake.put_image(V1)
    container = fake.add(V1.ref, "fedfleet-edge-1", {NODE_LABEL: "101"}, [], False)
    container.attrs["State"] = state
    return _device(tmp_path, fake), fake


def test_a_row_shows_the_registry_digest_and_a_short_uptime(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pulled image's digest; 75 s of uptime shows as 1m15s; a node the server lacks."""
    # Prepare
    device, fake = _running(tmp_path, {"Status": "running", "Running": True,
                                       "StartedAt": "2026-12-04T15:00:00.5Z"})
    inspect = fake.api.inspect_image
    monkeypatch.setattr(fake.api, "inspect_image", lambda ref: {
        **inspect(ref), "RepoDigests": ["reg.example.org/fc@sha256:0123456789abcdef0123"]})
    monkeypatch.setattr("fedfleet.server.fleet.status.time.time", lambda: 1796396475.0)
    # Execute
    row = device_status(device, {}, {})
    # Assert
    assert row["digest"] == "sha256:0123456789ab"
    assert row["uptime_s"] == 75 and row["health"] == "none"
    assert (row["node_id"], row["online"], row["last_round"]) == ("101", "not registered",
                                                                 None)
    assert "rounds" not in row
    assert render([row]).splitlines()[1].split()[-3:] == ["idle", "1m15s", "0"]


def test_a_row_survives_a_deleted_image_and_a_zero_start_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image is gone (inspect fails): no digest; Docker's zero time: no uptime."""
    # Prepare
    device, fake = _running(tmp_path, {"Status": "running", "Running": True,
                                       "StartedAt": "0001-01-01T00:00:00Z"})

    def gone(ref: str) -> Any:
        raise docker.errors.ImageNotFound(f"No such image: {ref}")

    monkeypatch.setattr(fake.api, "inspect_image", gone)
    # Execute
    row = device_status(device, {}, {})
    # Assert
    assert row["digest"] is None and row["uptime_s"] is None
    assert row["image_id"] == V1.id[7:19]


def test_a_stopped_client_has_no_activity_or_uptime(tmp_path: Path) -> None:
    """Exited: the container state only; exec is not tried on it."""
    # Prepare
    device, fake = _running(tmp_path, {"Status": "exited", "ExitCode": 1})
    # Execute
    row = device_status(device, {}, {})
    # Assert
    assert row["container"] == "exited"
    assert "uptime_s" not in row and "activity" not in row
    assert fake.executed == []


def _inventory(tmp_path: Path, server: str) -> Path:
    (tmp_path / "ca.crt").write_text("CA")
    path = tmp_path / "fleet.toml"
    path.write_text(f'[server]\naddress = "10.0.0.1:8000"\nca = "ca.crt"\n{server}'
                    '[devices.edge-1]\nendpoint = "unix:///run/edge-1.sock"\n'
                    'data = "/srv/data"\nimage = "fc:1"\n')
    return path


def test_the_registry_is_the_control_api_by_default(tmp_path: Path) -> None:
    """No control_container: the Control API on the server's port, trusting its CA."""
    # Prepare
    inventory = load_inventory(_inventory(tmp_path, ""))
    # Execute
    registry = session.node_registry(inventory, tmp_path / "state")
    # Assert
    assert isinstance(registry, DirectRegistry)
    assert registry.control.address == "127.0.0.1:8000"
    assert registry.control.root_certificates == tmp_path / "ca.crt"
    assert registry.control.home == tmp_path / "state" / "cli"


@pytest.mark.parametrize(("server", "reached"), [
    ('control_container = "fedfleet-server"\n', "local"),
    ('control_container = "fedfleet-server"\ncontrol_docker = "unix:///run/hub.sock"\n',
     "unix:///run/hub.sock"),
])
def test_the_registry_can_be_a_server_container(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                server: str, reached: str) -> None:
    """control_container: exec into it, on this machine's Docker or control_docker's."""
    # Prepare
    inventory = load_inventory(_inventory(tmp_path, server))
    asked: list[str] = []

    def connect(endpoint: Endpoint, timeout: float = 60.0) -> str:
        asked.append(endpoint.url)
        return f"client of {endpoint.url}"

    monkeypatch.setattr(session, "connect", connect)
    # Execute
    registry = session.node_registry(inventory, tmp_path / "state")
    # Assert
    assert isinstance(registry, ContainerRegistry)
    assert (registry.client, registry.name) == (f"client of {reached}", "fedfleet-server")
    assert asked == [reached]
