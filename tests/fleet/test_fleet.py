"""``fedfleet fleet`` against real daemons: a second dockerd in its own network namespace.

The "remote device" (tests/fleet/remote.py) is reached over tcp:// with mutual TLS and
over ssh://; a second device runs on this machine's Docker. The server listens on the
host side of the veth with TLS and node auth. One module-wide set-up: the ~2 GB client
image is streamed to the remote daemon once (by the first deploy), then the tests
train, update during a run, fail in the ways a fleet fails, and remove.

Needs root (network namespaces), dockerd, sshd (dev/setup.sh installs them). Skipped
without them unless FEDFLEET_REQUIRE_DOCKER=1 (CI), where it fails instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from remote import RemoteDevice, client_certificate

from fedfleet.server.host.certs import create_certificates

pytestmark = pytest.mark.fleet

ROOT = Path(__file__).parents[2]
FEDFLEET = str(Path(sys.executable).parent / "fedfleet")
IMAGE = "fedfleet-client:0.1.0"
FAKE_ARM64 = "fedfleet-fake-arm64:fleet-test"


def _problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("dockerd", "ip", "nsenter", "ssh", "/usr/sbin/sshd"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (run dev/setup.sh)"
    try:
        docker.from_env().ping()
    except Exception as err:
        return f"no Docker engine: {err}"
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Site:
    """Everything the module shares: the workdir, the remote device, the server."""

    work: Path
    device: RemoteDevice
    server_address: str
    local_name: str
    server: subprocess.Popen[bytes] | None = None
    runtime_port: int = field(default_factory=_free_port)
    timings: dict[str, float] = field(default_factory=dict)

    def fleet(self, *args: str, inventory: str = "fleet.toml", timeout: float = 900
              ) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        done = subprocess.run([FEDFLEET, "fleet", args[0], "--inventory", inventory,
                               *args[1:]],
                              cwd=self.work, capture_output=True, text=True,
                              timeout=timeout, check=False)
        self.timings[" ".join(args[:2])] = time.monotonic() - started
        print(f"$ fedfleet fleet {' '.join(args)}  [{time.monotonic() - started:.1f}s]\n"
              f"{done.stdout}{done.stderr}")
        return done

    def admin(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FEDFLEET, *args, "--server", self.server_address,
                               "--root-certificates", "certs/ca.crt",
                               "--state-dir", "admin-state"], cwd=self.work,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def nodes(self) -> dict[str, str]:
        done = self.admin("nodes", "list", "--format", "json")
        assert done.returncode == 0, done.stderr
        return {row["node-id"]: row["status"] for row in json.loads(done.stdout)}

    def inventory(self, name: str = "fleet.toml", remote: dict[str, Any] | None = None,
                  extra: str = "") -> None:
        """Write an inventory: edge-tls (remote over TLS) and the local device."""
        ca, cert, key = self.device.operator_tls or (None, None, None)
        remote = {"endpoint": f'"{self.device.endpoint}"',
                  "tls": f'{{ ca = "{ca}", cert = "{cert}", key = "{key}" }}',
                  **(remote or {})}
        lines = "\n".join(f"{k} = {v}" for k, v in remote.items() if v is not None)
        (self.work / name).write_text(f"""
[server]
address = "{self.server_address}"
ca = "certs/ca.crt"
control = "{self.server_address}"
outputs = "out"

[defaults]
image = "{IMAGE}"
data = "builtin:digits"
network = "host"
drain_timeout = 60

[devices.edge-tls]
partition = "0/2"
{lines}

[devices.{self.local_name}]
endpoint = "local"
partition = "1/2"
runtime_port = {self.runtime_port}
{extra}
""")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Build the client image, start the remote device and the server; tear all down."""
    problem = _problem()
    if problem and os.environ.get("FEDFLEET_REQUIRE_DOCKER") == "1":
        pytest.fail(f"fleet tests required but {problem}")
    if problem:
        pytest.skip(problem)
    built = subprocess.run(["docker", "build", "-q", "-f", "Dockerfile.client", "-t", IMAGE,
                            "."], cwd=ROOT, capture_output=True, text=True, timeout=2400,
                           check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    work = tmp_path_factory.mktemp("fleet")
    device = RemoteDevice()
    site = Site(work=work, device=device, server_address="",
                local_name=f"local-{uuid.uuid4().hex[:6]}")
    try:
        device.start()
        device.start_sshd()
        port = _free_port()
        site.server_address = f"{device.host_ip}:{port}"
        create_certificates(work / "certs", [device.host_ip])
        site.server = subprocess.Popen(
            [FEDFLEET, "server", "--host", device.host_ip, "--port", str(port),
             "--tls-dir", "certs", "--no-run", "--state-dir", "state", "--output-dir", "out"],
            cwd=work, stdout=(work / "server.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 120
        while site.admin("runs").returncode != 0:
            assert time.monotonic() < deadline, (work / "server.log").read_text()[-3000:]
            time.sleep(1)
        yield site
    finally:
        if site.server is not None:
            os.killpg(site.server.pid, signal.SIGTERM)
            try:
                site.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(site.server.pid, signal.SIGKILL)
        local = docker.from_env()
        for name in (f"fedfleet-{site.local_name}", f"fedfleet-{site.local_name}-previous",
                     f"fedfleet-{site.local_name}-setup"):
            try:
                local.containers.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass
        for volume in local.volumes.list(filters={"name": f"fedfleet-{site.local_name}"}):
            volume.remove(force=True)
        try:
            local.images.remove(FAKE_ARM64, force=True)
        except docker.errors.ImageNotFound:
            pass
        device.close()
        print("timings:", json.dumps({k: round(v, 1) for k, v in site.timings.items()}))


def _containers(site: Site) -> dict[str, str]:
    """Return the fedfleet client containers' IDs on the remote device and locally."""
    found = {}
    for client in (site.device.client(), docker.from_env()):
        for c in client.containers.list(all=True, filters={"label": "org.fedfleet.role=client"}):
            found[c.name] = c.id
    return {k: v for k, v in found.items() if k in ("fedfleet-edge-tls",
                                                      f"fedfleet-{site.local_name}")}


def test_deploy_puts_both_devices_online_and_a_second_deploy_changes_nothing(
        site: Site) -> None:
    """Image streamed to the remote (TLS), keys made on the devices, both nodes online."""
    site.inventory()
    first = site.fleet("deploy")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "sent fedfleet-client:0.1.0" in first.stdout  # streamed to the remote daemon
    assert first.stdout.count("OK  deployed: fedfleet-client:0.1.0") == 2
    assert "2 of 2 devices deployed (2 changed)" in first.stdout
    online = site.nodes()
    assert sorted(online.values()) == ["online", "online"], online
    before = _containers(site)
    assert len(before) == 2

    again = site.fleet("deploy")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("nothing changed") == 2
    assert "2 of 2 devices deployed (0 changed)" in again.stdout
    assert _containers(site) == before  # the very same containers
    # The private key was made on the device and stays there: only public keys here.
    assert not [p for p in site.work.rglob("*") if p.is_file()
                and b"PRIVATE KEY" in p.read_bytes()[:200] and "certs" not in p.parts
                and "tls" not in p.parts and "operator" not in p.parts]
    remote = site.device.client().containers.get("fedfleet-edge-tls")
    assert remote.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    # Data and keys are read-only; only the device's fedfleet home (received models) is not.
    writable = [m for m in remote.attrs["Mounts"] if m["RW"]]
    assert [(m["Name"], m["Destination"]) for m in writable] == [
        ("fedfleet-edge-tls-home", "/app/.fedfleet")]
    assert remote.labels["org.fedfleet.device"] == "edge-tls"
    assert remote.image.id == docker.from_env().images.get(IMAGE).id


def test_the_same_device_over_ssh_is_the_same_state(site: Site) -> None:
    """Over ssh:// the remote device is up to date; status, exec doctor and logs work."""
    site.inventory("ssh.toml", remote={
        "endpoint": f'"ssh://root@{site.device.ip}"',
        "tls": None,
        "ssh": f'{{ identity = "{site.device.ssh_key}", '
               f'known_hosts = "{site.device.known_hosts}" }}'})
    deploy = site.fleet("deploy", "edge-tls", inventory="ssh.toml")
    assert deploy.returncode == 0 and "nothing changed" in deploy.stdout, deploy.stdout
    status = site.fleet("status", "--format", "json", inventory="ssh.toml")
    rows = {r["device"]: r for r in json.loads(status.stdout)}
    assert rows["edge-tls"]["online"] == "online" and rows["edge-tls"]["health"] == "healthy"
    doctor = site.fleet("exec", "edge-tls", "--", "doctor", inventory="ssh.toml")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.count("PASS") >= 4 and "FAIL" not in doctor.stdout
    logs = site.fleet("logs", "edge-tls", "--tail", "200", inventory="ssh.toml")
    assert logs.returncode == 0 and "SuperNode ID" in logs.stdout + logs.stderr
    # Remove and deploy again, all over ssh: a new key, a new node, online again.
    old_node = rows["edge-tls"]["node_id"]
    removed = site.fleet("remove", "edge-tls", "--yes", inventory="ssh.toml")
    assert removed.returncode == 0 and f"node {old_node} revoked" in removed.stdout
    deployed = site.fleet("deploy", "edge-tls", inventory="ssh.toml")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "node key created on the device" in deployed.stdout
    assert "OK  deployed: fedfleet-client:0.1.0" in deployed.stdout
    nodes = site.nodes()
    assert nodes[old_node] == "unregistered" and list(nodes.values()).count("online") == 2


def _fake_arm64_image() -> None:
    """Load an image into this machine's Docker whose config says linux/arm64."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    layer_bytes = layer.getvalue()
    config = json.dumps({"architecture": "arm64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [
                             "sha256:" + hashlib.sha256(layer_bytes).hexdigest()]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [FAKE_ARM64],
                            "Layers": ["layer/layer.tar"]}]).encode()
    outer = io.BytesIO()
    with tarfile.open(fileobj=outer, mode="w") as tar:
        for name, data in ((config_name, config), ("layer/layer.tar", layer_bytes),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    docker.from_env().images.load(outer.getvalue())


def test_each_failure_is_one_line_and_the_other_devices_go_on(site: Site) -> None:
    """Unreachable, wrong TLS, wrong architecture (pinned or image), no data, full disk."""
    other = create_certificates(site.work / "other-ca", [])
    cert, key = client_certificate(other.ca_cert, other.ca_key, site.work / "other-client")
    ca, good_cert, good_key = site.device.operator_tls  # type: ignore[misc]
    _fake_arm64_image()
    full = RemoteDevice(tmpfs_size="300m", tcp=False)
    try:
        full.start()
        tls = f'tls = {{ ca = "{ca}", cert = "{good_cert}", key = "{good_key}" }}'
        (site.work / "bad.toml").write_text(f"""
[server]
address = "{site.server_address}"
ca = "certs/ca.crt"
control = "{site.server_address}"

[defaults]
image = "{IMAGE}"
data = "builtin:digits"
network = "host"

[devices.unreachable]
endpoint = "tcp://{site.device.ip}:2399"
{tls}

[devices.wrong-tls]
endpoint = "{site.device.endpoint}"
tls = {{ ca = "{other.ca_cert}", cert = "{cert}", key = "{key}" }}

[devices.pinned-arm64]
endpoint = "{site.device.endpoint}"
{tls}
platform = "linux/arm64"

[devices.arm64-image]
endpoint = "{site.device.endpoint}"
{tls}
image = "{FAKE_ARM64}"

[devices.no-data]
endpoint = "{site.device.endpoint}"
{tls}
data = "/no/such/data"

[devices.full-disk]
endpoint = "{full.unix}"

[devices.edge-tls]
endpoint = "{site.device.endpoint}"
{tls}
partition = "0/2"
drain_timeout = 60
""")
        done = site.fleet("deploy", inventory="bad.toml")
    finally:
        full.close()
    out = done.stdout
    assert done.returncode == 1, out
    expected = {
        "unreachable": f"cannot reach the Docker API at tcp://{site.device.ip}:2399 "
                       "(connection refused)",
        "wrong-tls": f"TLS with the Docker API at {site.device.endpoint} failed",
        "pinned-arm64": "the inventory pins linux/arm64 but the device is linux/amd64",
        "arm64-image": f"the local image {FAKE_ARM64} is linux/arm64 but the device is "
                       "linux/amd64 (x86_64): build it there with --build-on-device",
        "no-data": "the data path /no/such/data does not exist on the device",
        "full-disk": "the device ran out of disk space while storing fedfleet-client:0.1.0",
    }
    for device, message in expected.items():
        line = next(line for line in out.splitlines()
                    if line.startswith(device) and "FAILED" in line)
        assert message in line, (device, line)
    assert "edge-tls" in out and "nothing changed" in out  # the good device went on
    assert "1 of 7 devices deployed (0 changed)" in out
    assert "Traceback" not in out + done.stderr
    assert not [c for c in site.device.client().containers.list(all=True)
                if c.name.startswith("fedfleet-no-data")]


def _records(site: Site) -> list[dict[str, Any]]:
    found = []
    for path in (site.work / "out").glob("run-*/metrics.json"):
        try:
            found.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            continue
    return found


def _context(site: Site, name: str, extra: str) -> Path:
    """Return a build context whose Dockerfile.client derives from the client image."""
    folder = site.work / name
    folder.mkdir(exist_ok=True)
    (folder / "Dockerfile.client").write_text(f"FROM {IMAGE}\n{extra}\n")
    return folder


def _serverapp_log(site: Site) -> str:
    """Return what the ServerApps logged (the SuperLink keeps it in its database)."""
    with sqlite3.connect(site.work / "state" / "superlink.db") as db:
        return "".join(row[0] for row in db.execute(
            "SELECT log FROM task_logs ORDER BY timestamp"))


def test_update_during_a_run_loses_no_round_and_no_reply(site: Site) -> None:
    """edge-tls switches to a new image mid-run; every round gets both replies.

    The run waits for every reply (``--round-quorum 1``): with the default quorum a round
    may close during the ~20 s switch and count the device as "no reply by the deadline".

    The new image is built on the device (--build-on-device path); the container is
    switched between messages and keeps its key volume: the same node ID trains before
    and after, and the old image stays on the device, tagged fedfleet-previous.
    """
    context = _context(site, "v2", "LABEL org.fedfleet.test=v2")
    site.inventory(remote={"image": '"fedfleet-client:fleet-test-v2"',
                           "source": '"build"', "build_context": f'"{context}"'})
    node = {r["device"]: r for r in json.loads(site.fleet(
        "status", "--format", "json").stdout)}["edge-tls"]["node_id"]
    run = subprocess.Popen(
        [FEDFLEET, "run", "--server", site.server_address, "--root-certificates",
         "certs/ca.crt", "--state-dir", "admin-state", "--output-dir", "out",
         "--rounds", "8", "--min-clients", "2", "--local-epochs", "1",
         "--round-timeout", "300", "--round-quorum", "1"],
        cwd=site.work, stdout=(site.work / "run.log").open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not any(r["rounds"] for r in _records(site)):
            assert time.monotonic() < deadline and run.poll() is None, \
                (site.work / "run.log").read_text()[-3000:]
            time.sleep(1)
        status = site.fleet("status")
        assert status.returncode == 0
        row = json.loads(site.fleet("status", "--format", "json").stdout)
        remote = next(r for r in row if r["device"] == "edge-tls")
        assert remote["online"] == "online" and remote["last_round"] is not None, remote

        update = site.fleet("update", "edge-tls")
        rounds_when_switched = len(_records(site)[0]["rounds"])
        assert update.returncode == 0, update.stdout + update.stderr
        assert "OK  updated: fedfleet-client:fleet-test-v2" in update.stdout
        assert f"online as node {node}" in update.stdout
        assert run.wait(timeout=900) == 0, (site.work / "run.log").read_text()[-3000:]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    record = _records(site)[0]
    rounds = record["rounds"]
    assert rounds_when_switched < 8, "the update finished after the run: nothing proven"
    assert record["status"] == "completed"
    assert [r["round"] for r in rounds] == list(range(1, 9))
    assert all(r["train_replies"] == 2 and r["train_failures"] == 0 for r in rounds), \
        [(r["round"], r["train_replies"], r["train_failures"]) for r in rounds]
    assert all(node in [c["node_id"] for c in r["clients"] if c.get("weight") is not None]
               for r in rounds)  # the same node trained, every round, before and after
    # When the switch caught a message not yet fetched, the ServerApp asked again.
    said = [line for line in _serverapp_log(site).splitlines() if f"Node {node} " in line]
    print("\n".join(said) or "no message was waiting for the device during the switch")
    if any("went offline" in line for line in said):
        assert any("is back online; sent its" in line for line in said), said
    remote_docker = site.device.client()
    container = remote_docker.containers.get("fedfleet-edge-tls")
    assert container.image.id == remote_docker.images.get("fedfleet-client:fleet-test-v2").id
    previous = remote_docker.images.get("fedfleet-client:fedfleet-previous")
    assert previous.id == docker.from_env().images.get(IMAGE).id
    final = site.fleet("status")
    assert "edge-tls" in final.stdout and "8 (run" in final.stdout


def test_an_update_that_fails_its_gate_goes_back_and_stops_the_rollout(site: Site) -> None:
    """A new image whose client dies: rolled back to the previous container, rollout ends."""
    context = _context(site, "broken", 'ENTRYPOINT ["sh", "-c", "echo Error: broken on '
                                       'purpose; exit 3"]')
    site.inventory(remote={"image": '"fedfleet-client:fleet-test-broken"',
                           "source": '"build"', "build_context": f'"{context}"'},
                   extra='image = "fedfleet-client:fleet-test-broken"\nsource = "build"\n'
                         f'build_context = "{context}"')
    before = site.device.client().containers.get("fedfleet-edge-tls").image.id
    local_before = docker.from_env().containers.get(f"fedfleet-{site.local_name}").id
    done = site.fleet("update", "--ready-timeout", "60")
    assert done.returncode == 1, done.stdout
    line = next(line for line in done.stdout.splitlines()
                if line.split()[:2] == ["edge-tls", "FAILED"])
    assert "Error: broken on purpose" in line and "rolled back to the previous container" \
        in line, line
    assert "not updated: the rollout stopped" in done.stdout
    container = site.device.client().containers.get("fedfleet-edge-tls")
    assert container.image.id == before and container.status == "running"
    assert docker.from_env().containers.get(f"fedfleet-{site.local_name}").id == local_before
    deadline = time.monotonic() + 120
    while site.nodes().get(container.labels["org.fedfleet.node-id"]) != "online":
        assert time.monotonic() < deadline, site.nodes()
        time.sleep(2)


def test_remove_revokes_the_node_and_leaves_nothing(site: Site) -> None:
    """Container and key volume gone on both devices; the server has revoked both nodes."""
    site.inventory()
    nodes = {r["device"]: r["node_id"] for r in json.loads(site.fleet(
        "status", "--format", "json").stdout)}
    done = site.fleet("remove", "edge-tls", site.local_name, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("revoked") == 2
    status = site.nodes()
    assert status[nodes["edge-tls"]] == "unregistered"
    assert status[nodes[site.local_name]] == "unregistered"
    remote = site.device.client()
    assert not remote.containers.list(all=True, filters={"label": "org.fedfleet.device"})
    assert not remote.volumes.list(filters={"name": "fedfleet-edge-tls"})
    again = site.fleet("remove", "edge-tls", "--yes")
    assert again.returncode == 0 and "nothing to remove" in again.stdout
