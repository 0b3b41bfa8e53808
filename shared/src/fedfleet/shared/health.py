"""Container health probes: ``python -m fedfleet.shared.health server|client``.

``server [PORT [READY_FILE]]`` asks the local SuperLink's ``/health`` (HTTP or HTTPS; a
liveness probe on loopback, so the certificate is not verified) and, if READY_FILE is
given, reads ``fedfleet server``'s start-up status next to it (``status.json``).
``client [PORT]`` checks that the local SuperNode's Runtime API port accepts
connections.

Each prints one line, ``ready`` or ``starting: <what>`` or ``broken: <why>``, and exits
0 only when ready. A healthcheck cannot return "starting" to Docker, so compose gives
the server a long ``start_period`` (failures then do not count) and reads the line to
tell a server that is still enrolling from one that is stuck or gone.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
import urllib.request
from pathlib import Path

from fedfleet.shared.constants import SUPERLINK_PORT, SUPERNODE_PORT
from fedfleet.shared.serverstatus import STATUS_FILE, read_status

STALL_AFTER = 300.0
"""Seconds without progress after which registering keys counts as stuck."""


def server_healthy(port: int = SUPERLINK_PORT) -> bool:
    """Return True if the SuperLink on 127.0.0.1:``port`` answers ``/health``."""
    unverified = ssl._create_unverified_context()  # loopback liveness only
    for scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/health", timeout=3,
                                        context=unverified if scheme == "https" else None
                                        ) as response:
                if response.status == 200:
                    return True
        except OSError:
            continue
    return False


def client_healthy(port: int = SUPERNODE_PORT) -> bool:
    """Return True if the SuperNode's Runtime API on 127.0.0.1:``port`` accepts."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3):
            return True
    except OSError:
        return False


def server_state(port: int, ready_file: Path | None, now: float | None = None
                 ) -> tuple[bool, str]:
    """Return (healthy, one-line reason) for the server on 127.0.0.1:``port``."""
    silent = f"broken: the SuperLink does not answer on {port}"
    if ready_file is None:
        return (True, "ready") if server_healthy(port) else (False, silent)
    status = read_status(ready_file.parent / STATUS_FILE)
    if status is None:  # a server older than status.json: only the ready file
        if not ready_file.exists():
            return False, f"starting: no {ready_file} yet"
        return (True, "ready") if server_healthy(port) else (False, silent)
    if status.phase == "failed":
        return False, f"broken: {status.describe()}"
    if not status.alive():
        return False, (f"broken: fedfleet server (pid {status.pid}) is not running; "
                       f"it last said: {status.describe()}")
    if status.phase == "stopped":
        return False, "broken: fedfleet server is stopping"
    if status.phase != "ready":
        quiet = (time.time() if now is None else now) - status.updated
        if quiet > STALL_AFTER:
            return False, (f"broken: no progress for {quiet:.0f}s while "
                           f"{status.describe()}")
        return False, f"starting: {status.describe()}"
    if not server_healthy(port):
        return False, silent
    if not ready_file.exists():
        return False, f"broken: status says ready but {ready_file} is missing"
    return True, "ready"


def main(argv: list[str]) -> int:
    """Print one line and exit 0 when the named side is healthy, 1 otherwise."""
    role = argv[1] if len(argv) > 1 else "server"
    port = int(argv[2]) if len(argv) > 2 else None
    if role == "server":
        healthy, reason = server_state(port or SUPERLINK_PORT,
                                       Path(argv[3]) if len(argv) > 3 else None)
    else:
        port = port or SUPERNODE_PORT
        healthy = client_healthy(port)
        reason = "ready" if healthy else \
            f"not ready: the SuperNode's Runtime API does not accept on {port}"
    print(reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
