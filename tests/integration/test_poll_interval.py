"""A real device polls the real server as often as --poll-interval says.

Flower's SuperNode polls every 3 s when idle; ``fedfleet join --poll-interval``
patches that (and ``--heartbeat-interval`` the 30 s heartbeat). The SuperLink runs
with ``FLWR_LOG_LEVEL=DEBUG`` so its access log has a line per request, and the
test counts the device's ``pull-messages`` and ``send-node-heartbeat`` requests.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fleet_helpers import Fleet
from ports import free_port

pytestmark = pytest.mark.integration

PULL = "/v1/fleet/pull-messages"
HEARTBEAT = "/v1/fleet/send-node-heartbeat"


def _count(log: Path, route: str) -> int:
    return log.read_text(errors="replace").count(route) if log.exists() else 0


def _requests_while_idle(fleet: Fleet, tmp_path: Path, seconds: float,
                         *join_options: str) -> tuple[int, int]:
    """Start a server and one device; count its pulls and heartbeats over ``seconds``."""
    port = free_port()
    fleet.start("server", "server", "--insecure", "--port", str(port), "--no-run",
                "--state-dir", "state", env={"FLWR_LOG_LEVEL": "DEBUG"})
    fleet.start("client", "join", "--insecure", "--server", f"127.0.0.1:{port}",
                "--runtime-port", str(free_port()), "--home", "client",
                "--no-warm-trainer", "--connect-timeout", "120", *join_options)
    log = tmp_path / "state" / "superlink.log"
    deadline = time.monotonic() + 180
    while _count(log, PULL) == 0:  # the device has joined and polls
        assert time.monotonic() < deadline, fleet.log("server") + fleet.log("client")
        time.sleep(0.2)
    pulls, beats = _count(log, PULL), _count(log, HEARTBEAT)
    time.sleep(seconds)
    return _count(log, PULL) - pulls, _count(log, HEARTBEAT) - beats


def test_poll_interval_1_polls_about_every_second(fleet: Fleet, tmp_path: Path) -> None:
    """--poll-interval 1: ~12 pulls in 12 s, where Flower's 3 s gives at most 5."""
    # Execute
    pulls, _ = _requests_while_idle(fleet, tmp_path, 12, "--poll-interval", "1")
    # Assert
    assert pulls >= 8, (pulls, fleet.log("client")[-2000:])
    assert "Traceback" not in fleet.log("client")


def test_poll_interval_6_polls_less_and_heartbeats_follow_their_option(
        fleet: Fleet, tmp_path: Path) -> None:
    """--poll-interval 6 and --heartbeat-interval 10 change what an idle device sends.

    Pulls: at most 4 in 18 s (Flower's 3 s: at least 6). Heartbeats: one every
    3.5-4.5 s (Flower's 30 s: one every 17.5-22.5 s).
    """
    # Execute
    pulls, beats = _requests_while_idle(fleet, tmp_path, 18, "--poll-interval", "6",
                                        "--heartbeat-interval", "10")
    # Assert
    assert 1 <= pulls <= 4, (pulls, fleet.log("client")[-2000:])
    assert beats >= 3, (beats, fleet.log("client")[-2000:])
    assert "Traceback" not in fleet.log("client")
