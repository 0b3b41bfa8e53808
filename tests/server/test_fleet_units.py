"""fleet pieces without a daemon: ssh command, errors, image names, run records, the board."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest

from fedfleet.server.fleet.channels import ChannelError, connect, ssh_command
from fedfleet.server.fleet.common import Fleet, Outcome
from fedfleet.server.fleet.engine import DeviceEngine
from fedfleet.server.fleet.images import LocalImages, goarch, is_registry_ref, split_ref
from fedfleet.server.fleet.keys import Setup
from fedfleet.server.fleet.parallel import Board, run_all
from fedfleet.server.fleet.records import last_rounds
from fedfleet.server.fleet.specs import DeviceSpec, Endpoint, ServerSpec, SshOptions, TlsFiles
from fedfleet.server.host.certs import create_certificates
from fedfleet.shared.errors import FedfleetError


def test_ssh_command_never_prompts_and_uses_the_inventory_files(tmp_path: Path) -> None:
    """Batch mode, a connect timeout, identity and known_hosts from the inventory."""
    options = SshOptions(identity=tmp_path / "id", known_hosts=tmp_path / "kh",
                         options=("ProxyJump=bastion",))
    cmd = ssh_command("ssh://pi@10.0.0.3:2222", options)
    assert cmd[:3] == ["ssh", "-o", "BatchMode=yes"]
    assert ["-i", str(tmp_path / "id")] == cmd[cmd.index("-i"):cmd.index("-i") + 2]
    assert f"UserKnownHostsFile={tmp_path / 'kh'}" in cmd and "StrictHostKeyChecking=yes" in cmd
    assert "ProxyJump=bastion" in cmd
    assert cmd[-7:] == ["-p", "2222", "--", "10.0.0.3", "docker", "system", "dial-stdio"]
    assert cmd[cmd.index("-l") + 1] == "pi"


def test_a_missing_socket_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ChannelError, match="no such socket"):
        connect(Endpoint(f"unix://{tmp_path}/docker.sock"), timeout=5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_closed_tls_port_is_refused_in_one_line(tmp_path: Path) -> None:
    paths = create_certificates(tmp_path, [])
    tls = TlsFiles(ca=paths.ca_cert, cert=paths.server_cert, key=paths.server_key)
    port = _free_port()
    with pytest.raises(ChannelError, match=f"tcp://127.0.0.1:{port} \\(connection refused\\)"):
        connect(Endpoint(f"tcp://127.0.0.1:{port}", tls=tls), timeout=5)


def test_an_ssh_endpoint_that_does_not_answer_says_what_ssh_said() -> None:
    """The reason ssh gives comes through (here: nothing listens on the port)."""
    port = _free_port()
    with pytest.raises(ChannelError) as caught:
        connect(Endpoint(f"ssh://nobody@127.0.0.1:{port}", ssh=SshOptions()), timeout=10)
    assert "over ssh" in str(caught.value) and "refused" in str(caught.value).lower()


def test_image_names_and_architectures() -> None:
    assert goarch("x86_64") == "amd64" and goarch("aarch64") == "arm64"
    assert goarch("armv7l") == "arm" and goarch("arm64") == "arm64"
    assert is_registry_ref("registry.example.org/fedfleet-client:0.1.0")
    assert is_registry_ref("localhost:5000/c") and is_registry_ref("localhost/c")
    assert not is_registry_ref("fedfleet-client:0.1.0") and not is_registry_ref("me/c:1")
    assert split_ref("host:5000/a/b") == ("host:5000/a/b", "latest")
    assert split_ref("host:5000/a/b:2") == ("host:5000/a/b", "2")


def test_a_save_that_stalls_blames_this_machine_and_uses_its_own_long_timeout() -> None:
    """A stalled ``docker save`` is this machine's fault, not the device's disk.

    The save is silent while it exports, so its stream gets its own long timeout.
    """
    import requests

    timeouts: list[float] = []

    class Api:
        def get_image(self, ref: str, chunk_size: int) -> object:
            yield b"x" * 10
            raise requests.exceptions.ConnectionError("read timed out")

    class Client:
        api = Api()
        closed = False

        def close(self) -> None:
            Client.closed = True

    def connect(timeout: float) -> Client:
        timeouts.append(timeout)
        return Client()

    stream = LocalImages(connect).save("fedfleet-client:0.1.0")  # type: ignore[arg-type]
    assert next(stream) == b"x" * 10
    with pytest.raises(FedfleetError, match="this machine's Docker stopped sending"):
        next(stream)
    assert timeouts == [1800.0] and Client.closed


def test_last_round_per_node_from_the_run_records(tmp_path: Path) -> None:
    """The newest round each node sent a training reply for, across runs."""
    def record(run_id: int, started: float, rounds: list[list[str]]) -> None:
        folder = tmp_path / f"run-{run_id}"
        folder.mkdir()
        rows = [{"round": i + 1, "clients": [
                    {"node_id": n, "weight": 10.0, "device": {"train_time_s": 1.0}}
                    for n in nodes] + [{"node_id": "9", "device": {"eval_accuracy": 0.5}}]}
                for i, nodes in enumerate(rounds)]
        (folder / "metrics.json").write_text(json.dumps(
            {"run": {"run_id": run_id, "started_at": started}, "rounds": rows}))

    record(1, 100.0, [["1", "2"], ["1", "2"], ["1"]])
    record(2, 200.0, [["2"], ["2"]])
    assert last_rounds(tmp_path) == {"1": (1, 3), "2": (2, 2)}  # "9" only evaluated
    assert last_rounds(None) == {} and last_rounds(tmp_path / "none") == {}


def test_the_board_prints_plain_lines_off_a_terminal_and_one_failure_stays_alone() -> None:
    """A failing device is reported with its reason; the others finish."""
    stream = io.StringIO()
    board = Board(["a", "bb"], stream, live=False)

    def job(name: str, say: object) -> Outcome:
        if name == "bb":
            raise FedfleetError("the device is on fire")
        return Outcome(name, True, True, "deployed")

    outcomes = run_all(["a", "bb"], job, 2, board)  # type: ignore[arg-type]
    assert [(o.device, o.ok) for o in outcomes] == [("a", True), ("bb", False)]
    text = stream.getvalue()
    assert "a   OK  deployed" in text and "bb  FAILED  the device is on fire" in text


def test_the_live_board_redraws_in_place() -> None:
    stream = io.StringIO()
    board = Board(["a", "b"], stream, live=True)
    board.say("a", "one")
    board.say("b", "two")
    assert stream.getvalue().count("\x1b[2F") == 1 and stream.getvalue().endswith("b  two\n")


def _engine(tmp_path: Path, **spec: object) -> DeviceEngine:
    device = DeviceSpec(name="edge-1", endpoint=Endpoint("local"), data="/srv/d",
                        image="fedfleet-client:0.1.0", **spec)  # type: ignore[arg-type]
    fleet = Fleet(server=ServerSpec(address="10.0.0.1:8000", ca=tmp_path / "ca.crt"),
                  ca_pem=b"CA", registry=None,  # type: ignore[arg-type]
                  local=LocalImages(lambda timeout: None))
    return DeviceEngine(None, device, fleet)


def test_the_inventory_hash_changes_with_what_the_device_runs(tmp_path: Path) -> None:
    """Same inputs, same hash; another image, CA or limit, another hash."""
    base = _engine(tmp_path).inventory_hash("sha256:aa")
    assert base == _engine(tmp_path).inventory_hash("sha256:aa")
    assert base != _engine(tmp_path).inventory_hash("sha256:bb")
    assert base != _engine(tmp_path, cpus=0.5).inventory_hash("sha256:aa")
    other_ca = _engine(tmp_path)
    object.__setattr__(other_ca.fleet, "ca_pem", b"other CA")
    assert base != other_ca.inventory_hash("sha256:aa")


def test_the_client_container_is_read_only_limited_and_labelled(tmp_path: Path) -> None:
    """Data and key read-only, the image by ID, limits, healthcheck on the runtime port."""
    engine = _engine(tmp_path, cpus=1.5, memory=2**30, partition="0/2", runtime_port=9300,
                     labels={"site": "lab"}, join_options=("--label-column", "y"))
    setup = Setup(public_key="ecdsa-sha2-nistp384 AAA", node_id=42, key_created=True,
                  data_kind="file", version="0.1.0")
    config = engine.container_config("sha256:abc", setup, "hash1")
    mounts = {m["Target"]: m for m in config["mounts"]}
    assert mounts["/run/secrets/fedfleet"]["ReadOnly"] and mounts["/data/d"]["ReadOnly"]
    assert mounts["/data/d"]["Source"] == "/srv/d" and mounts["/data/d"]["Type"] == "bind"
    assert config["image"] == "sha256:abc" and config["command"] == \
        ["join", "--label-column", "y"]
    env = config["environment"]
    assert env["FEDFLEET_JOIN_DATA"] == env["FEDFLEET_DOCTOR_DATA"] == "/data/d"
    assert env["FEDFLEET_JOIN_SERVER"] == "10.0.0.1:8000"
    assert env["FEDFLEET_JOIN_PARTITION"] == "0/2" and env["FEDFLEET_JOIN_RUNTIME_PORT"] == "9300"
    assert config["nano_cpus"] == 1_500_000_000 and config["mem_limit"] == 2**30
    assert config["healthcheck"]["test"][-2:] == ["client", "9300"]
    assert config["restart_policy"] == {"Name": "unless-stopped"}
    labels = config["labels"]
    assert labels["org.fedfleet.device"] == "edge-1" and labels["org.fedfleet.node-id"] == "42"
    assert labels["org.fedfleet.inventory-hash"] == "hash1"
    assert labels["org.fedfleet.version"] == "0.1.0" and labels["org.fedfleet.label.site"] == "lab"


class _ExecResult:
    def __init__(self, code: int, out: bytes, err: bytes = b"") -> None:
        self.exit_code, self.output = code, (out, err)


class _ServerContainer:
    """Stands in for a compose server container: records what fedfleet ran in it."""

    status = "running"

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.commands: list[list[str]] = []

    def put_archive(self, path: str, data: bytes) -> bool:
        import tarfile

        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar:
                handle = tar.extractfile(member)
                assert handle is not None and member.uid == 49999
                self.files[f"{path}/{member.name}"] = handle.read()
        return True

    def exec_run(self, cmd: list[str], demux: bool = False) -> _ExecResult:
        self.commands.append(cmd)
        if cmd[2] == "register":
            return _ExecResult(0, b"registered node 77\n")
        if cmd[2] == "list":
            return _ExecResult(0, json.dumps([{"node-id": "77", "status": "online"}]).encode())
        return _ExecResult(1, b"", b"Error: no such node 5\n")


def test_the_control_api_in_a_server_container_is_reached_with_docker_exec() -> None:
    """Compose: the key is copied in, 'fedfleet nodes' runs there, errors come back."""
    from fedfleet.server.fleet.nodes import ContainerRegistry, RegistryError

    container = _ServerContainer()

    class Containers:
        def get(self, name: str) -> _ServerContainer:
            assert name == "fedfleet-server-1"
            return container

    class Client:
        containers = Containers()

    registry = ContainerRegistry(Client(), "fedfleet-server-1")
    assert registry.register("ecdsa-sha2-nistp384 AAAA", "edge-1") == 77
    assert container.files["/tmp/fleet-edge-1.pub"] == b"ecdsa-sha2-nistp384 AAAA\n"
    assert container.commands[0] == ["fedfleet", "nodes", "register", "/tmp/fleet-edge-1.pub",
                                     "--name", "edge-1"]
    assert registry.nodes() == {77: {"node-id": "77", "status": "online"}}
    with pytest.raises(RegistryError, match="in the server container fedfleet-server-1: "
                                            "Error: no such node 5"):
        registry.revoke(5)
