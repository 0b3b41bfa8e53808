"""The server healthcheck: one line that tells starting from broken, exit 0 only if ready."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from ports import free_port

from fedfleet.shared import health
from fedfleet.shared.serverstatus import (
    STATUS_FILE,
    ServerStatus,
    process_start,
    read_status,
    write_status,
)


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server's name
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def superlink() -> Iterator[int]:
    """Serve ``GET /health`` on 127.0.0.1 (plain HTTP); yield the port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _state(tmp_path: Path, status: ServerStatus | None) -> Path:
    if status is not None:
        (tmp_path / STATUS_FILE).write_text(json.dumps(asdict(status)))
    return tmp_path / "ready"


def _mine(phase: str, **fields: object) -> ServerStatus:
    base = ServerStatus(phase, pid=os.getpid(), pid_start=process_start(os.getpid()),  # type: ignore[arg-type]
                        updated=time.time())
    return replace(base, **fields)  # type: ignore[arg-type]


def test_registering_is_starting_with_the_progress(tmp_path: Path, superlink: int) -> None:
    ready = _state(tmp_path, _mine("registering", done=340, total=1000))
    assert health.server_state(superlink, ready) == (
        False, "starting: registering device keys 340/1000")


def test_no_progress_for_long_is_broken(tmp_path: Path, superlink: int) -> None:
    ready = _state(tmp_path, _mine("registering", done=340, total=1000,
                                   updated=time.time() - 400))
    healthy, reason = health.server_state(superlink, ready)
    assert not healthy
    assert reason.startswith("broken: no progress for 4")
    assert reason.endswith("s while registering device keys 340/1000")


def test_ready_needs_the_superlink_to_answer(tmp_path: Path, superlink: int) -> None:
    ready = _state(tmp_path, _mine("ready", detail="ready"))
    ready.touch()
    assert health.server_state(superlink, ready) == (True, "ready")
    silent = free_port()
    assert health.server_state(silent, ready) == (
        False, f"broken: the SuperLink does not answer on {silent}")


def test_failed_and_gone_are_broken(tmp_path: Path, superlink: int) -> None:
    ready = _state(tmp_path, _mine("failed", detail="cannot register keys/b.pub: empty"))
    assert health.server_state(superlink, ready) == (
        False, "broken: cannot register keys/b.pub: empty")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _state(tmp_path, _mine("registering", done=1, total=2, pid=dead.pid))
    assert health.server_state(superlink, ready) == (
        False, f"broken: fedfleet server (pid {dead.pid}) is not running; it last "
               "said: registering device keys 1/2")


def test_a_reused_pid_is_not_the_server(tmp_path: Path, superlink: int) -> None:
    """Same PID, another start time (a restarted container): not the writer."""
    if process_start(os.getpid()) is None:
        pytest.skip("no /proc")
    ready = _state(tmp_path, _mine("ready", pid_start="1"))
    ready.touch()
    assert health.server_state(superlink, ready)[1].startswith("broken: fedfleet server")


def test_an_older_server_without_status_uses_the_ready_file(tmp_path: Path,
                                                            superlink: int) -> None:
    ready = _state(tmp_path, None)
    assert health.server_state(superlink, ready) == (False, f"starting: no {ready} yet")
    ready.touch()
    assert health.server_state(superlink, ready) == (True, "ready")
    assert health.server_state(superlink, None) == (True, "ready")


def test_write_and_read_status(tmp_path: Path) -> None:
    write_status(tmp_path, "registering", done=3, total=9)
    status = read_status(tmp_path / STATUS_FILE)
    assert status is not None and status.alive()
    assert (status.phase, status.done, status.total, status.pid) == (
        "registering", 3, 9, os.getpid())
    (tmp_path / STATUS_FILE).write_text('{"phase": "dancing"}')
    assert read_status(tmp_path / STATUS_FILE) is None


def test_the_command_line_prints_one_line(tmp_path: Path, superlink: int) -> None:
    """As compose calls it: python -m fedfleet.shared.health server 8000 .../ready."""
    ready = _state(tmp_path, _mine("registering", done=5, total=10))
    run = [sys.executable, "-m", "fedfleet.shared.health", "server", str(superlink),
           str(ready)]
    starting = subprocess.run(run, capture_output=True, text=True, check=False)
    write_status(tmp_path, "ready", "ready")
    ready.touch()
    done = subprocess.run(run, capture_output=True, text=True, check=False)
    assert (starting.returncode, starting.stdout) == (
        1, "starting: registering device keys 5/10\n")
    assert (done.returncode, done.stdout) == (0, "ready\n")
