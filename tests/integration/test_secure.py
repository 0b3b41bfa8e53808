"""TLS and registered node keys, end to end on 127.0.0.1 with the real daemons."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fleet_helpers import Fleet, cli, free_port

pytestmark = pytest.mark.integration


def test_registered_device_trains_over_tls_and_strangers_are_refused(
        fleet: Fleet, tmp_path: Path) -> None:
    """Only the registered key gets in; a run over TLS completes with it."""
    port = free_port()
    assert cli(tmp_path, "certs", "--out", "certs").returncode == 0
    assert cli(tmp_path, "node-key", "--out", "edge-1").returncode == 0
    assert cli(tmp_path, "node-key", "--out", "stranger").returncode == 0
    tls = ["--ssl-ca-certfile", "certs/ca.crt", "--ssl-certfile", "certs/server.pem",
           "--ssl-keyfile", "certs/server.key"]
    fleet.start("server", "server", "--port", str(port), *tls, "--node-auth", "--no-run",
                "--state-dir", "state", "--output-dir", "out")
    connection = ["--server", f"127.0.0.1:{port}", "--root-certificates", "certs/ca.crt"]
    for _ in range(60):  # the server needs a few seconds to come up
        registered = cli(tmp_path, "nodes", "register", "edge-1.pub", "--name", "edge-1",
                         *connection)
        if registered.returncode == 0:
            break
        time.sleep(1)
    assert registered.returncode == 0, registered.stderr + fleet.log("server")

    stranger = fleet.start("stranger", "join", *connection, "--node-key", "stranger",
                           "--runtime-port", str(free_port()), "--home", "s")
    assert stranger.wait(timeout=120) != 0
    assert "key is not registered on the server" in fleet.log("stranger")
    fleet.start("edge", "join", *connection, "--node-key", "edge-1",
                "--runtime-port", str(free_port()), "--home", "e")
    run = cli(tmp_path, "run", *connection, "--rounds", "1", "--min-clients", "1",
               "--output-dir", "out", "--client-wait-timeout", "120", timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr + fleet.log("edge")[-2000:]
    assert "done: run" in run.stdout

    nodes = json.loads(cli(tmp_path, "nodes", "list", *connection, "--format",
                            "json").stdout)
    assert [n["status"] for n in nodes] == ["online"]

    insecure = fleet.start("plaintext", "join", "--server", f"127.0.0.1:{port}",
                           "--insecure", "--connect-timeout", "5", "--home", "p")
    assert insecure.wait(timeout=60) != 0
    assert "the server may require TLS" in fleet.log("plaintext")
