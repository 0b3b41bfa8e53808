"""The engine's steps against an in-memory Docker: deploy, update, rollback, rollout, remove."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_docker import FakeDevice, FakeImage, FakeLocal, FakeServer

from fedfleet.server.fleet.common import DeviceError, Fleet, Outcome
from fedfleet.server.fleet.engine import DeviceEngine
from fedfleet.server.fleet.images import LocalImages
from fedfleet.server.fleet.nodes import RegistryError
from fedfleet.server.fleet.parallel import Board
from fedfleet.server.fleet.removal import remove
from fedfleet.server.fleet.rollout import rollout, summary
from fedfleet.server.fleet.specs import DeviceSpec, Endpoint, ServerSpec
from fedfleet.server.fleet.status import device_status, render


def _image(ref: str, **kwargs: object) -> FakeImage:
    digest = hashlib.sha256(ref.encode()).hexdigest()
    return FakeImage(ref=ref, id=f"sha256:{digest}", **kwargs)  # type: ignore[arg-type]


V1 = _image("fedfleet-client:0.1.0")
V2 = _image("fedfleet-client:0.2.0", version="0.2.0")
BROKEN = _image("fedfleet-client:0.3.0", version="0.3.0", healthy=False)


class Site:
    """A fake server, this machine's images and devices that share them."""

    def __init__(self, tmp_path: Path) -> None:
        self.catalog = {image.ref: image for image in (V1, V2, BROKEN)}
        self.server = FakeServer()
        self.devices: dict[str, FakeDevice] = {}
        local = FakeLocal(self.catalog)
        self.fleet = Fleet(server=ServerSpec(address="10.0.0.1:8000", ca=tmp_path / "ca.crt"),
                           ca_pem=b"CA", registry=self.server,
                           local=LocalImages(lambda timeout: local),  # type: ignore[arg-type]
                           ready_timeout=5, idle_timeout=0)
        self.said: list[str] = []

    def spec(self, name: str, image: FakeImage) -> DeviceSpec:
        return DeviceSpec(name=name, endpoint=Endpoint(f"unix:///run/{name}.sock"),
                          data="/srv/data", image=image.ref)

    def engine(self, name: str, image: FakeImage) -> DeviceEngine:
        device = self.devices.setdefault(name, FakeDevice(name, self.server, self.catalog))
        return DeviceEngine(device, self.spec(name, image), self.fleet, self.said.append)


@pytest.fixture()
def site(tmp_path: Path) -> Site:
    return Site(tmp_path)


def test_deploy_makes_the_key_on_the_device_registers_it_and_starts_the_client(
        site: Site) -> None:
    """The image is streamed, the key stays on the device, the node comes online."""
    # Execute
    outcome = site.engine("edge-1", V1).apply()
    # Assert
    device = site.devices["edge-1"]
    assert outcome.ok and outcome.changed
    assert outcome.summary == (f"deployed: {V1.ref} ({V1.id[7:19]}), healthy and online as "
                               "node 101")
    assert device.loaded == [V1.ref]
    assert site.server.rows[101]["status"] == "online"
    keys = device.volume_files["fedfleet-edge-1-key"]
    assert keys["ca.crt"] == b"CA" and keys["node-id"] == b"101\n"
    assert "/keys/node-key" not in device.read_files  # only the public key is read back
    client = device.containers.get("fedfleet-edge-1")
    assert client.status == "running" and client.image.id == V1.id
    assert client.labels["org.fedfleet.node-id"] == "101"
    assert [c.name for c in device.store.values()] == ["fedfleet-edge-1"]  # setup is gone


def test_a_second_deploy_changes_nothing(site: Site) -> None:
    """Same image, same entry, running and online: left alone."""
    # Prepare
    site.engine("edge-1", V1).apply()
    started = list(site.devices["edge-1"].started)
    # Execute
    outcome = site.engine("edge-1", V1).apply()
    # Assert
    assert outcome.ok and not outcome.changed
    assert outcome.summary == (f"up to date: {V1.ref} ({V1.id[7:19]}), node 101 online; "
                               "nothing changed")
    assert site.devices["edge-1"].started == started
    assert site.devices["edge-1"].loaded == [V1.ref]


def test_update_switches_to_the_new_image_as_the_same_node(site: Site) -> None:
    """The key volume is kept: same node, new container, the old one removed."""
    # Prepare
    site.engine("edge-1", V1).apply()
    # Execute
    outcome = site.engine("edge-1", V2).apply()
    # Assert
    device = site.devices["edge-1"]
    assert outcome.summary == (f"updated: {V2.ref} ({V2.id[7:19]}) (was {V1.id[7:19]}), "
                               "healthy and online as node 101")
    assert site.server.registered == ["ecdsa-sha2-nistp384 KEY-edge-1"]  # registered once
    assert [(c.name, c.image.id) for c in device.store.values()] == \
        [("fedfleet-edge-1", V2.id)]
    assert device.images["fedfleet-client:fedfleet-previous"] == V1
    assert device.containers.get("fedfleet-edge-1").labels["org.fedfleet.version"] == "0.2.0"


def test_a_switch_that_fails_its_gate_puts_the_old_container_back(site: Site) -> None:
    """The new client dies: it is removed, the old one runs again under its name."""
    # Prepare
    site.engine("edge-1", V1).apply()
    # Execute
    with pytest.raises(DeviceError) as caught:
        site.engine("edge-1", BROKEN).apply()
    # Assert
    device = site.devices["edge-1"]
    assert str(caught.value) == ("the client container stopped: last log line: Error: broken "
                                 "on purpose; rolled back to the previous container "
                                 f"({V1.id[7:19]})")
    assert [(c.name, c.image.id, c.status) for c in device.store.values()] == \
        [("fedfleet-edge-1", V1.id, "running")]
    assert site.server.rows[101]["status"] == "online"


def test_a_first_deploy_that_fails_its_gate_leaves_no_container(site: Site) -> None:
    """Nothing to roll back to: the error names the cause only."""
    # Execute
    with pytest.raises(DeviceError) as caught:
        site.engine("edge-1", BROKEN).apply()
    # Assert
    assert str(caught.value) == "the client container stopped: last log line: Error: " \
                                "broken on purpose"
    assert site.devices["edge-1"].store == {}


def test_a_busy_device_is_not_switched(site: Site) -> None:
    """A device answering a message past the idle timeout keeps its container."""
    # Prepare
    site.engine("edge-1", V1).apply()
    site.devices["edge-1"].activity = {"state": "busy", "message_type": "train", "round": 3,
                                       "run_id": 7}
    # Execute
    with pytest.raises(DeviceError, match="still answering its train message of round 3 in "
                                          "run 7 after 0s; not switched"):
        site.engine("edge-1", V2).apply()
    # Assert
    client = site.devices["edge-1"].containers.get("fedfleet-edge-1")
    assert client.image.id == V1.id and client.status == "running"


def test_a_revoked_node_is_not_deployed_again(site: Site) -> None:
    """The server revoked the node: the device must be removed and deployed anew."""
    # Prepare
    site.engine("edge-1", V1).apply()
    site.server.revoke(101)
    # Execute
    with pytest.raises(DeviceError) as caught:
        site.engine("edge-1", V1).apply()
    # Assert
    assert str(caught.value) == ("node 101 of device edge-1 was revoked on the server; run "
                                 "'fedfleet fleet remove edge-1' and deploy again to give it "
                                 "a new key")


def _job(site: Site, image: FakeImage) -> Callable[[str, Callable[[str], None]], Outcome]:
    def job(name: str, say: Callable[[str], None]) -> Outcome:
        engine = site.engine(name, BROKEN if name == "edge-2" else image)
        engine.say = say
        return engine.apply()
    return job


def test_a_rollout_stops_at_the_first_device_that_fails(site: Site) -> None:
    """edge-2 is rolled back; edge-3 is not touched and reported as not updated."""
    # Prepare
    names = ["edge-1", "edge-2", "edge-3"]
    for name in names:
        site.engine(name, V1).apply()
    stream = io.StringIO()
    # Execute
    outcomes = rollout(names, _job(site, V2), 1, Board(names, stream, live=False))
    # Assert
    assert [(o.device, o.ok, o.changed) for o in outcomes] == \
        [("edge-1", True, True), ("edge-2", False, False), ("edge-3", False, False)]
    assert "rolled back to the previous container" in outcomes[1].summary
    assert outcomes[2].summary == "not updated: the rollout stopped at a failed device"
    assert "edge-3  not updated: the rollout stopped" in stream.getvalue()
    assert site.devices["edge-3"].containers.get("fedfleet-edge-3").image.id == V1.id
    assert summary(outcomes, "up to date") == (
        "1 of 3 devices up to date (1 changed)",
        "2 of 3 devices failed: edge-2, edge-3 (reasons above)")


def test_a_rollout_in_batches_finishes_the_failing_batch(site: Site) -> None:
    """With --batch 2 the batch that fails finishes; the next batch is not started."""
    # Prepare
    names = ["edge-1", "edge-2", "edge-3"]
    stream = io.StringIO()
    # Execute
    outcomes = rollout(names, _job(site, V1), 2, Board(names, stream, live=False))
    # Assert
    assert [(o.device, o.ok) for o in outcomes] == \
        [("edge-1", True), ("edge-2", False), ("edge-3", False)]
    assert "edge-3" not in site.devices


def test_remove_revokes_the_node_and_leaves_nothing(site: Site) -> None:
    """Container, key and home volumes gone, node revoked; a second remove is a no-op."""
    # Prepare
    engine = site.engine("edge-1", V1)
    engine.apply()
    # Execute
    first = remove(engine)
    second = remove(engine)
    # Assert
    device = site.devices["edge-1"]
    assert first.summary == ("container removed; node 101 revoked; key volume removed; home "
                             "volume removed (with the models the device received)")
    assert device.store == {} and device.volume_files == {}
    assert site.server.rows[101]["status"] == "unregistered"
    assert (second.changed, second.summary) == (False, "nothing to remove")


def test_remove_finds_the_node_in_the_key_volume_when_the_container_is_gone(
        site: Site) -> None:
    """The node ID stored beside the key is revoked even without a container."""
    # Prepare
    engine = site.engine("edge-1", V1)
    engine.apply()
    engine.current().remove(force=True)
    # Execute
    outcome = remove(engine)
    # Assert
    assert outcome.summary.startswith("node 101 revoked; key volume removed")
    assert site.server.rows[101]["status"] == "unregistered"


def test_status_shows_the_running_client_and_its_node(site: Site) -> None:
    """One row per device, as a table whose columns fit the values."""
    # Prepare
    engine = site.engine("edge-1", V1)
    engine.apply()
    absent = site.engine("edge-2", V1)
    # Execute
    rows = [device_status(engine, site.server.nodes(), {"101": (7, 3)}, {"101": (7, 2, 4)}),
            device_status(absent, site.server.nodes(), {})]
    table = render(rows).splitlines()
    # Assert
    assert rows[0]["container"] == "running" and rows[0]["health"] == "healthy"
    assert rows[0]["online"] == "online" and rows[0]["activity"] == "idle"
    assert rows[0]["last_round"] == "3 (run 7)" and rows[0]["rounds"] == "2/4"
    assert rows[1] == {"device": "edge-2", "endpoint": "unix:///run/edge-2.sock",
                       "reachable": True, "container": "absent"}
    assert table[0].split() == ["DEVICE", "CONTAINER", "HEALTH", "IMAGE", "VERSION", "NODE",
                                "ONLINE", "LAST", "ROUND", "ROUNDS", "ACTIVITY", "UPTIME",
                                "RESTARTS"]
    assert table[1].split()[:7] == ["edge-1", "running", "healthy", V1.id[7:19], "0.1.0",
                                    "101", "online"]
    assert table[2].split() == ["edge-2", "absent"] + ["-"] * 10


def test_an_image_for_another_architecture_is_not_sent(site: Site) -> None:
    """An arm64 device refuses this machine's amd64 image before any byte moves."""
    # Prepare
    engine = site.engine("pi-1", V1)
    site.devices["pi-1"].arch = "aarch64"
    # Execute
    with pytest.raises(DeviceError, match="the local image fedfleet-client:0.1.0 is "
                                          "linux/amd64 but the device is linux/arm64"):
        engine.apply()
    # Assert
    assert site.devices["pi-1"].loaded == []


def test_a_full_disk_is_refused_before_streaming(site: Site) -> None:
    """Measured in the previous image, too little space stops the next update."""
    # Prepare
    site.engine("edge-1", V1).apply()
    site.engine("edge-1", V2).apply()
    site.devices["edge-1"].free_kb = 0
    # Execute
    with pytest.raises(DeviceError, match="not enough disk space on the device: 0 MB free"):
        site.engine("edge-1", BROKEN).apply()
    # Assert
    assert site.devices["edge-1"].loaded == [V1.ref, V2.ref]


def test_the_spec_change_alone_reconfigures(site: Site) -> None:
    """Same image, new limits: the container is replaced, the verb says reconfigured."""
    # Prepare
    site.engine("edge-1", V1).apply()
    engine = site.engine("edge-1", V1)
    engine.spec = dataclasses.replace(engine.spec, cpus=0.5)
    # Execute
    outcome = engine.apply()
    # Assert
    assert outcome.summary.startswith(f"reconfigured: {V1.ref} ({V1.id[7:19]}), healthy")


def test_fleet_update_prints_each_device_and_fails_with_the_stopped_ones(
        site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command: a line per device, the count, exit 1 naming the failed devices."""
    from click.testing import CliRunner

    from fedfleet.server.cli.fleet import fleet
    from fedfleet.server.fleet import session

    # Prepare
    (tmp_path / "ca.crt").write_text("CA")
    devices = "".join(f'[devices.edge-{i}]\nendpoint = "unix:///run/edge-{i}.sock"\n'
                      f'image = "{BROKEN.ref if i == 2 else V2.ref}"\n' for i in (1, 2, 3))
    (tmp_path / "fleet.toml").write_text(
        '[server]\naddress = "10.0.0.1:8000"\nca = "ca.crt"\n'
        f'[defaults]\ndata = "/srv/data"\n{devices}')
    for name in ("edge-1", "edge-2", "edge-3"):
        site.engine(name, V1).apply()
    local = FakeLocal(site.catalog)

    def connect(endpoint: Endpoint, timeout: float = 60.0) -> object:
        if endpoint.url == "local":
            return local
        return site.devices[endpoint.url.removeprefix("unix:///run/").removesuffix(".sock")]

    monkeypatch.setattr(session, "connect", connect)
    monkeypatch.setattr(session, "node_registry", lambda inventory, state_dir: site.server)
    # Execute
    result = CliRunner().invoke(fleet, ["update", "-i", str(tmp_path / "fleet.toml"),
                                        "--ready-timeout", "5"])
    # Assert
    lines = result.output.splitlines()
    assert result.exit_code == 1
    assert any(line.startswith("edge-1  OK  updated: fedfleet-client:0.2.0") for line in lines)
    assert any(line.startswith("edge-2  FAILED  the client container stopped") for line in lines)
    assert "edge-3  not updated: the rollout stopped" in lines
    assert lines[-2:] == ["1 of 3 devices up to date (1 changed)",
                          "Error: 2 of 3 devices failed: edge-2, edge-3 (reasons above)"]



class _FailingServer(FakeServer):
    """A registry that stops answering once ``failing()`` says so."""

    def __init__(self) -> None:
        super().__init__()
        self.failing: Callable[[], bool] = lambda: False

    def nodes(self, fresh: bool = False) -> dict[int, dict[str, Any]]:
        if self.failing():
            raise RegistryError("the server's Control API did not answer")
        return super().nodes(fresh)


def test_a_switch_whose_server_stops_answering_is_rolled_back(tmp_path: Path) -> None:
    """The registry fails while the new container is checked: the old one runs again."""
    # Prepare: the server fails once the new client (V2) has started
    site = Site(tmp_path)
    site.server = server = _FailingServer()
    site.fleet = dataclasses.replace(site.fleet, registry=server)
    site.engine("edge-1", V1).apply()
    device = site.devices["edge-1"]
    server.failing = lambda: any(c.image.id == V2.id and c.status == "running"
                                 for c in device.store.values())
    # Execute
    with pytest.raises(DeviceError) as caught:
        site.engine("edge-1", V2).apply()
    # Assert
    assert str(caught.value) == ("the server's Control API did not answer; rolled back to "
                                 f"the previous container ({V1.id[7:19]})")
    assert [(c.name, c.image.id, c.status) for c in device.store.values()] == \
        [("fedfleet-edge-1", V1.id, "running")]
