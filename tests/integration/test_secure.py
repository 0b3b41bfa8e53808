"""TLS and registered node keys, end to end on 127.0.0.1 with the real daemons."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import Fleet, cli
from ports import free_port

from fedfleet.server.host.certs import create_certificates

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


def _secure_server(fleet: Fleet, tmp_path: Path, *args: str, wrap: tuple[str, ...] = ()
                   ) -> list[str]:
    """Start a TLS + node-auth server (default certificates/), return connection args."""
    port = free_port()
    if not (tmp_path / "certificates").exists():
        assert cli(tmp_path, "certs").returncode == 0
    fleet.start("server", "server", "--port", str(port), "--state-dir", "state",
                "--output-dir", "out", *args, wrap=wrap)
    connection = ["--server", f"127.0.0.1:{port}", "--root-certificates",
                  "certificates/ca.crt"]
    for _ in range(60):
        if cli(tmp_path, "runs", *connection).returncode == 0:
            return connection
        time.sleep(1)
    raise AssertionError(fleet.log("server"))


def _join(fleet: Fleet, name: str, *args: str, wrap: tuple[str, ...] = ()
          ) -> subprocess.Popen[bytes]:
    return fleet.start(name, "join", "--runtime-port", str(free_port()), "--home",
                       f"home-{name}", "--connect-timeout", "20", *args, wrap=wrap)


def test_revoked_device_is_out_and_the_run_goes_on(fleet: Fleet, tmp_path: Path) -> None:
    """Revoking a device mid-run: it is refused at its next heartbeat, the run finishes."""
    keys = tmp_path / "devices"
    keys.mkdir()
    for name in ("edge-1", "edge-2"):
        assert cli(tmp_path, "node-key", "--out", f"{name}.key").returncode == 0
        shutil.copy(tmp_path / f"{name}.key.pub", keys / f"{name}.pub")
    connection = _secure_server(fleet, tmp_path, "--authorized-keys", "devices", "--no-run")
    deadline = time.monotonic() + 60  # the SuperLink answers before the keys are in
    while (time.monotonic() < deadline
           and fleet.log("server").count(" as node ") < 2):
        time.sleep(0.5)
    ids = {line.split()[1]: int(line.split("as node ")[1])
           for line in fleet.log("server").splitlines() if " as node " in line}
    assert set(ids) == {"edge-1", "edge-2"}, fleet.log("server")
    edge1 = _join(fleet, "edge-1", *connection, "--node-key", "edge-1.key")
    edge2 = _join(fleet, "edge-2", *connection, "--node-key", "edge-2.key")
    deadline = time.monotonic() + 120
    while sorted(n["status"] for n in json.loads(cli(
            tmp_path, "nodes", "list", *connection, "--format", "json").stdout)) \
            != ["online", "online"]:
        assert time.monotonic() < deadline, fleet.log("edge-2")[-2000:]
        time.sleep(2)
    run = fleet.start("run", "run", *connection, "--rounds", "4", "--min-clients", "1",
                      "--local-epochs", "1", "--round-timeout", "90", "--output-dir", "out")
    deadline = time.monotonic() + 300
    while not _rounds(tmp_path):
        assert time.monotonic() < deadline and run.poll() is None, fleet.log("run")
        time.sleep(1)
    revoked = cli(tmp_path, "nodes", "revoke", str(ids["edge-2"]), *connection)
    assert revoked.returncode == 0, revoked.stderr
    assert edge2.wait(timeout=120) != 0  # out at its next heartbeat (every 30 s)
    assert "it was revoked ('fedfleet nodes revoke')" in fleet.log("edge-2")
    assert run.wait(timeout=600) == 0, fleet.log("run")[-3000:]
    rounds = _rounds(tmp_path)
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert rounds[0]["train_replies"] == 2 and rounds[-1]["train_replies"] == 1
    assert edge1.poll() is None
    status = {int(n["node-id"]): n["status"] for n in json.loads(cli(
        tmp_path, "nodes", "list", *connection, "--format", "json").stdout)}
    assert status[ids["edge-1"]] == "online"
    assert status.get(ids["edge-2"], "unregistered") == "unregistered", status


def _rounds(tmp_path: Path) -> list[dict[str, Any]]:
    found = list(tmp_path.glob("out/run-*/metrics.json"))
    return list(json.loads(found[0].read_text())["rounds"]) if found else []


def test_wrong_ca_and_name_mismatch_are_refused(fleet: Fleet,
                                                          tmp_path: Path) -> None:
    """Real SuperNodes that cannot get in each leave with their one-line reason."""
    create_certificates(tmp_path / "other", [])
    # The server's own tools use 127.0.0.1; devices here use "localhost", not in the cert.
    create_certificates(tmp_path / "certificates", ["127.0.0.1"], defaults=False)
    connection = _secure_server(fleet, tmp_path, "--no-run")
    port = connection[1].rsplit(":", 1)[1]
    assert cli(tmp_path, "node-key", "--out", "edge.key").returncode == 0
    wrong_ca = _join(fleet, "wrong-ca", "--server", f"127.0.0.1:{port}",
                     "--root-certificates", "other/ca.crt", "--node-key", "edge.key")
    mismatch = _join(fleet, "mismatch", "--server", f"localhost:{port}",
                     "--root-certificates", "certificates/ca.crt", "--node-key", "edge.key")
    assert wrong_ca.wait(timeout=120) != 0
    assert "failed TLS verification" in fleet.log("wrong-ca")
    assert "give the CA that signed the server's certificate with --root-certificates" \
        in fleet.log("wrong-ca")
    assert mismatch.wait(timeout=120) != 0
    assert "the address must be one of the certificate's names" in fleet.log("mismatch")


def test_a_clock_ahead_of_the_server_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    """A device clock 60 s ahead of the server's gets the NTP explanation.

    The server runs under libfaketime 60 s behind (faking the device's whole process
    tree instead trips libfaketime's sleep handling).
    """
    if shutil.which("faketime") is None:
        pytest.skip("faketime not installed (dev/setup.sh installs it)")
    connection = _secure_server(fleet, tmp_path, "--no-run",
                                wrap=("faketime", "-f", "-60s"))
    assert cli(tmp_path, "node-key", "--out", "edge.key").returncode == 0
    assert cli(tmp_path, "nodes", "register", "edge.key.pub", *connection).returncode == 0
    doctor = cli(tmp_path, "doctor", *connection, "--node-key", "edge.key")
    assert doctor.returncode == 1 and "s ahead of the server's" in doctor.stdout
    ahead = _join(fleet, "ahead", *connection, "--node-key", "edge.key")
    assert ahead.wait(timeout=120) != 0
    assert "clock is probably ahead of the server's" in fleet.log("ahead"), \
        fleet.log("ahead")[-2000:]
