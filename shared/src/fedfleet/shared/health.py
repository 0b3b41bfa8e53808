"""Container health probes: ``python -m fedfleet.shared.health server|client``.

``server [PORT [READY_FILE]]`` asks the local SuperLink's ``/health`` (HTTP or HTTPS; a
liveness probe on loopback, so the certificate is not verified) and, if given, checks
that ``fedfleet server`` has written READY_FILE (authorized keys registered).
``client`` checks that the local SuperNode's Runtime API port accepts connections.
"""

from __future__ import annotations

import socket
import ssl
import sys
import urllib.request
from pathlib import Path

from fedfleet.shared.constants import SUPERLINK_PORT, SUPERNODE_PORT


def server_healthy(port: int = SUPERLINK_PORT) -> bool:
    """Return True if the SuperLink on 127.0.0.1:``port`` answers ``/health``."""
    unverified = ssl._create_unverified_context()  # noqa: S323 - loopback liveness only
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


def main(argv: list[str]) -> int:
    """Exit 0 when the named side is healthy, 1 otherwise."""
    role = argv[1] if len(argv) > 1 else "server"
    port = int(argv[2]) if len(argv) > 2 else None
    if role == "server":
        ready = len(argv) <= 3 or Path(argv[3]).exists()
        return 0 if ready and server_healthy(port or SUPERLINK_PORT) else 1
    return 0 if client_healthy(port or SUPERNODE_PORT) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
