"""The pinned patch of Flower 1.42.0's SuperNode: idle poll and heartbeat intervals.

These tests fail loudly when Flower changes: a new version, or a source that no
longer has exactly the spots :mod:`fedfleet.client.flower_patch` changes.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import flwr
import flwr.supercore.heartbeat as heartbeat
import flwr.supernode.fleet_http_connection as connection
import flwr.supernode.start_client_internal as loop
import pytest
from flwr.proto.fleet_pb2 import (
    ActivateNodeRequest,
    ActivateNodeResponse,
    DeactivateNodeResponse,
    RegisterNodeFleetResponse,
    UnregisterNodeFleetResponse,
)
from flwr.proto.heartbeat_pb2 import (
    SendNodeHeartbeatRequest,
    SendNodeHeartbeatResponse,
)

from fedfleet.client import flower_patch, supernode_main
from fedfleet.client.flower_patch import IdleSleepTime, PatchError
from fedfleet.client.node import JoinOptions, supernode_command
from fedfleet.client.nodedata import NodeData

PIN_HELP = ("fedfleet's --poll-interval/--heartbeat-interval patch Flower 1.42.0's "
            "SuperNode (client/src/fedfleet/client/flower_patch.py); Flower changed: "
            "check the new source, move the patch, and update the pin")


@pytest.fixture
def restore_flower(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo whatever :func:`flower_patch.apply` changes, after the test."""
    monkeypatch.setattr(loop, "time", time)
    monkeypatch.setattr(connection, "HEARTBEAT_DEFAULT_INTERVAL",
                        connection.HEARTBEAT_DEFAULT_INTERVAL)
    monkeypatch.setattr(connection, "HeartbeatSender", connection.HeartbeatSender)


class Sleeps:
    """Records sleeps instead of sleeping; raises :class:`StopLoop` after ``limit``."""

    def __init__(self, limit: int = 1000) -> None:
        self.calls: list[float] = []
        self.limit = limit

    def sleep(self, seconds: float) -> None:
        self.calls.append(seconds)
        if len(self.calls) >= self.limit:
            raise StopLoop


class StopLoop(Exception):
    """Ends Flower's endless SuperNode loop in a test."""


# --- the pin ---------------------------------------------------------------------------

def test_flower_is_the_pinned_version() -> None:
    """The patch was written against, and checked on, Flower 1.42.0 only."""
    # Assert
    assert flwr.__version__ == flower_patch.FLOWER_VERSION, (
        f"flwr {flwr.__version__} is installed. {PIN_HELP}")


def test_flower_has_exactly_the_patched_spots() -> None:
    """One idle time.sleep(3) in the loop; HEARTBEAT_DEFAULT_INTERVAL where expected."""
    # Execute
    try:
        flower_patch.check_flower()
    except PatchError as err:
        pytest.fail(f"{err}. {PIN_HELP}")
    # Assert: the same facts, spelled out against the source
    source = inspect.getsource(loop)
    assert source.count("time.sleep(3)") == 1, PIN_HELP
    assert "if run_id is None:" in inspect.getsource(loop.start_client_internal), PIN_HELP
    assert connection.HEARTBEAT_DEFAULT_INTERVAL == 30, PIN_HELP
    assert inspect.getsource(connection).count("HEARTBEAT_DEFAULT_INTERVAL") == 3, PIN_HELP


def _load_altered_copy(module: ModuleType, old: str, new: str, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> str:
    """Import a copy of ``module`` with ``old`` replaced by ``new``; return its name."""
    source = inspect.getsource(module)
    assert old in source
    source = source.replace(old, new).replace("from .", "from flwr.supernode.")
    name = f"altered_{module.__name__.rsplit('.', 1)[1]}"
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    altered = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, altered)
    spec.loader.exec_module(altered)
    return name


@pytest.mark.parametrize(("old", "new"), [
    ("time.sleep(3)\n                continue", "time.sleep(5)\n                continue"),
    ("time.sleep(0.5)", "time.sleep(3)"),
    ("if run_id is None:", "if not run_id:"),
])
def test_the_check_refuses_a_changed_idle_wait(
        old: str, new: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Flower whose idle wait is elsewhere, or not 3 s, is refused by name."""
    # Prepare
    name = _load_altered_copy(loop, old, new, tmp_path, monkeypatch)
    monkeypatch.setattr(flower_patch, "LOOP_MODULE", name)
    # Execute / Assert
    with pytest.raises(PatchError, match="install flwr==1.42.0"):
        flower_patch.check_flower()


@pytest.mark.parametrize(("old", "new"), [
    ("public_key=node_pk,\n                    heartbeat_interval=HEARTBEAT_DEFAULT_INTERVAL",
     "public_key=node_pk,\n                    heartbeat_interval=60"),
    ("HeartbeatSender(send_node_heartbeat)",
     "HeartbeatSender(send_node_heartbeat, interval=HEARTBEAT_DEFAULT_INTERVAL)"),
])
def test_the_check_refuses_a_changed_heartbeat(
        old: str, new: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Flower that announces or sends its heartbeat differently is refused."""
    # Prepare
    name = _load_altered_copy(connection, old, new, tmp_path, monkeypatch)
    monkeypatch.setattr(flower_patch, "CONNECTION_MODULE", name)
    # Execute / Assert
    with pytest.raises(PatchError, match="HEARTBEAT_DEFAULT_INTERVAL"):
        flower_patch.check_flower()


def test_the_check_refuses_another_flower_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another version is refused before any source is read, with one line."""
    # Prepare
    monkeypatch.setattr(flwr, "__version__", "1.43.0")
    # Execute / Assert
    with pytest.raises(PatchError, match=r"flwr 1\.43\.0 is installed; install "
                                         r"flwr==1\.42\.0 or use the defaults"):
        flower_patch.check_flower()


# --- the idle wait ---------------------------------------------------------------------

def test_the_proxy_changes_only_the_idle_sleep() -> None:
    """sleep(3) sleeps the poll interval; other sleeps and attributes pass through."""
    # Prepare
    sleeps = Sleeps()
    proxy = IdleSleepTime(12.5, real=sleeps)
    # Execute
    proxy.sleep(3)
    proxy.sleep(0.5)
    proxy.sleep(3.0)
    # Assert
    assert sleeps.calls == [12.5, 0.5, 12.5]
    assert IdleSleepTime(1).monotonic is time.monotonic


class _State:
    def set_node_id(self, node_id: int) -> None:
        self.node_id = node_id


class _StateFactory:
    class objectstore_factory:  # Flower's attribute name
        @staticmethod
        def store() -> object:
            return object()

    @staticmethod
    def state() -> _State:
        return _State()


def _drive_flower_loop(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Run Flower's own start_client_internal against a server that never has work."""
    polls: list[float] = []

    def receive() -> None:
        polls.append(time.monotonic())

    @contextmanager
    def connect(**_kwargs: Any) -> Iterator[tuple[Any, ...]]:
        yield (7, receive, None, None, None, None, None, None)

    monkeypatch.setattr(loop, "_init_connection", connect)
    monkeypatch.setattr(loop, "register_signal_handlers", lambda **_kwargs: None)
    with pytest.raises(StopLoop):
        loop.start_client_internal(state_factory=_StateFactory(),
                                   server_address="127.0.0.1:1", node_config={},
                                   insecure=True, isolation="process")
    return polls


@pytest.mark.usefixtures("restore_flower")
def test_the_patched_loop_waits_the_poll_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's real loop, patched for 7 s, waits 7 s after each empty poll."""
    # Prepare
    flower_patch.apply(7, flower_patch.FLOWER_HEARTBEAT_INTERVAL)
    assert isinstance(loop.time, IdleSleepTime)
    sleeps = Sleeps(limit=3)
    monkeypatch.setattr(loop.time, "_real", sleeps)  # record instead of sleeping
    # Execute
    polls = _drive_flower_loop(monkeypatch)
    # Assert
    assert len(polls) == 3
    assert sleeps.calls == [7, 7, 7]


@pytest.mark.usefixtures("restore_flower")
def test_flowers_defaults_leave_flower_alone() -> None:
    """At 3 s and 30 s nothing is patched (and Flower is not even checked)."""
    # Execute
    flower_patch.apply(3, 30)
    # Assert
    assert loop.time is time
    assert connection.HEARTBEAT_DEFAULT_INTERVAL == 30
    assert connection.HeartbeatSender is heartbeat.HeartbeatSender


def test_out_of_range_intervals_are_refused() -> None:
    """The SuperLink refuses heartbeats outside 10..1800 s; polls are kept sane."""
    # Execute / Assert
    with pytest.raises(ValueError, match="heartbeat interval 5s is outside 10..1800s"):
        flower_patch.apply(3, 5)
    with pytest.raises(ValueError, match="poll interval 0.1s is outside 0.5..300s"):
        flower_patch.apply(0.1, 30)


# --- the heartbeat ---------------------------------------------------------------------

class _FakeFleet(BaseHTTPRequestHandler):
    """The Fleet API routes the SuperNode calls to join and leave, answering success."""

    activations: list[float] = []
    heartbeats: list[float] = []

    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        route = self.path.rsplit("/", 1)[1]
        reply: Any
        if route == "register-node":
            reply = RegisterNodeFleetResponse(node_id=7)
        elif route == "activate-node":
            self.activations.append(ActivateNodeRequest.FromString(body).heartbeat_interval)
            reply = ActivateNodeResponse(node_id=7)
        elif route == "send-node-heartbeat":
            self.heartbeats.append(SendNodeHeartbeatRequest.FromString(body)
                                   .heartbeat_interval)
            reply = SendNodeHeartbeatResponse(success=True)
        elif route == "deactivate-node":
            reply = DeactivateNodeResponse()
        else:
            reply = UnregisterNodeFleetResponse()
        payload = reply.SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/protobuf")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.mark.usefixtures("restore_flower")
def test_the_node_announces_and_sends_the_heartbeat_interval() -> None:
    """Flower's own connection tells a (fake) SuperLink the configured interval."""
    # Prepare
    flower_patch.apply(flower_patch.FLOWER_POLL_INTERVAL, 120)
    _FakeFleet.activations, _FakeFleet.heartbeats = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeFleet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # Execute
        with connection.http_request_response(
                f"127.0.0.1:{server.server_address[1]}", insecure=True,
                max_retries=0) as conn:
            assert conn[0] == 7
            deadline = time.monotonic() + 30
            while not _FakeFleet.heartbeats and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
    # Assert
    assert _FakeFleet.activations == [120]
    assert _FakeFleet.heartbeats == [120]


class _OneWait:
    """A stop event that records the first wait and then stops the sender."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return bool(self.waits)

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return True


@pytest.mark.parametrize("interval", [10, 120, 1800])
@pytest.mark.usefixtures("restore_flower")
def test_heartbeats_are_sent_at_the_interval(interval: float) -> None:
    """The node's heartbeat loop (Flower's, jitter and all) waits (interval - 5) * 0.7..0.9."""
    # Prepare
    flower_patch.apply(flower_patch.FLOWER_POLL_INTERVAL, interval)
    sent: list[bool] = []

    def beat() -> bool:
        sent.append(True)
        return True

    sender = connection.HeartbeatSender(beat)
    event = _OneWait()
    sender._stop_event = event
    # Execute
    sender._run()
    # Assert
    (wait,) = event.waits
    assert sent == [True]
    assert (interval - 5) * 0.7 <= wait <= (interval - 5) * 0.9


# --- the command line ------------------------------------------------------------------

def test_join_starts_flower_supernode_through_the_patch(tmp_path: Path) -> None:
    """The SuperNode command runs supernode_main and still names flower-supernode."""
    # Prepare
    opts = JoinOptions(server="127.0.0.1:8000", node=NodeData(), home=tmp_path,
                       insecure=True, poll_interval=15, heartbeat_interval=120)
    # Execute
    cmd = supernode_command(opts)
    # Assert
    split = cmd.index("--")
    assert cmd[:split] == [sys.executable, "-m", "fedfleet.client.supernode_main",
                           "--poll-interval", "15", "--heartbeat-interval", "120"]
    assert Path(cmd[split + 1]).name == "flower-supernode"
    assert cmd[split + 2:split + 4] == ["--superlink", "127.0.0.1:8000"]
    options, command = supernode_main.parse(cmd[3:])
    assert (options.poll_interval, options.heartbeat_interval) == (15, 120)
    assert command == cmd[split + 1:]


def test_the_entry_point_is_flowers_supernode() -> None:
    """supernode_main runs what the flower-supernode console script runs."""
    # Execute
    entry = supernode_main.flower_entry_point()
    # Assert
    assert f"{entry.__module__}.{entry.__name__}" == \
        "flwr.supernode.cli.flower_supernode.flower_supernode"


def test_join_reads_the_intervals_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """FEDFLEET_JOIN_POLL_INTERVAL / _HEARTBEAT_INTERVAL reach the SuperNode's options."""
    # Prepare
    from click.testing import CliRunner

    from fedfleet.client import cli
    from fedfleet.shared.cli import cli as fedfleet

    seen: list[JoinOptions] = []
    monkeypatch.setattr(cli, "run_join", lambda opts: seen.append(opts) or 0)
    # Execute
    result = CliRunner().invoke(fedfleet, ["join", "--insecure"], env={
        "FEDFLEET_JOIN_POLL_INTERVAL": "15", "FEDFLEET_JOIN_HEARTBEAT_INTERVAL": "120"})
    # Assert
    assert result.exit_code == 0, result.output
    assert (seen[0].poll_interval, seen[0].heartbeat_interval) == (15, 120)


def test_join_refuses_non_default_intervals_on_another_flower(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With another Flower installed, join says so in one line before doing anything."""
    # Prepare
    from fedfleet.client import node
    from fedfleet.shared.errors import FedfleetError

    monkeypatch.setattr(flower_patch.importlib.metadata, "version", lambda _name: "1.43.0")
    monkeypatch.setattr(node, "wait_for_data", lambda *_args: pytest.fail("data checked"))
    opts = JoinOptions(server="127.0.0.1:1", node=NodeData(), home=tmp_path,
                       insecure=True, poll_interval=15)
    # Execute / Assert
    with pytest.raises(FedfleetError, match=r"^--poll-interval/--heartbeat-interval "
                                            r"patch Flower 1\.42\.0's SuperNode, but "
                                            r"flwr 1\.43\.0 is installed"):
        node.join(opts)
