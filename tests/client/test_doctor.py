"""'fedfleet doctor' against a local health endpoint: passes, and each failure's fix."""

from __future__ import annotations

import email.utils
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedfleet.client.doctor import check_clock, check_node_key
from fedfleet.shared.cli import cli
from fedfleet.shared.keys import create_node_key


def _handler(offset: float) -> type[http.server.BaseHTTPRequestHandler]:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name
            self.send_response(200)
            self.send_header("Date", email.utils.formatdate(time.time() + offset,
                                                            usegmt=True))
            self.end_headers()

        def send_response(self, code: int, message: str | None = None) -> None:
            self.send_response_only(code, message)  # no automatic Date header

        def log_message(self, *args: object) -> None:
            pass

    return Health


@pytest.fixture
def server_at() -> Iterator[object]:
    """Start health servers whose clock is ``offset`` seconds off; yield a starter."""
    servers: list[http.server.HTTPServer] = []

    def start(offset: float) -> str:
        server = http.server.HTTPServer(("127.0.0.1", 0), _handler(offset))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()


def test_all_checks_pass(server_at, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A reachable server, a matching clock, a key and loadable data pass."""
    create_node_key(tmp_path / "key")
    result = CliRunner().invoke(cli, ["doctor", "--insecure", "--server", server_at(0),
                                      "--node-key", str(tmp_path / "key")])
    assert result.exit_code == 0, result.output
    assert result.output.count("PASS") == 4


def test_clock_ahead_is_caught(server_at) -> None:  # type: ignore[no-untyped-def]
    """A device clock 60 s ahead of the server fails with the NTP fix."""
    check = check_clock(server_at(-60), True, None)
    assert not check.ok and "ahead" in check.detail and "NTP" in check.fix
    assert check_clock(server_at(60), True, None).ok  # behind is accepted


def test_failures_are_listed_with_fixes(tmp_path: Path) -> None:
    """No server, a bad key and missing data: each FAIL says how to fix it."""
    (tmp_path / "key").write_text("not a key")
    result = CliRunner().invoke(cli, ["doctor", "--insecure", "--server", "127.0.0.1:9",
                                      "--node-key", str(tmp_path / "key"),
                                      "--data", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "4 check(s) failed: server, clock, node key, data" in result.output
    assert "fix: create one with 'fedfleet node-key'" in result.output
    assert not check_node_key(tmp_path / "nope").ok
