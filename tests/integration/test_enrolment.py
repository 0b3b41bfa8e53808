"""Enrolment at fleet size, on a real TLS + node-auth SuperLink on 127.0.0.1.

300 device keys in ``--authorized-keys`` at start, 24 more with ``fedfleet nodes
register DIR`` (four with odd file names); the SuperLink's own node list must hold
all of them. Prints the time taken (not asserted: the machine is shared).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fleet_helpers import Fleet, cli
from ports import free_port

from fedfleet.shared.serverstatus import STATUS_FILE, read_status

pytestmark = pytest.mark.integration


def _write_keys(folder: Path, prefix: str, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        public = ec.generate_private_key(ec.SECP384R1()).public_key()
        (folder / f"{prefix}-{i:04d}.pub").write_bytes(public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")


def _start(fleet: Fleet, tmp_path: Path, keys: str) -> tuple[list[str], float]:
    """Start a TLS + node-auth server with ``--authorized-keys keys``.

    Returns the connection options and when the server was started.
    """
    if not (tmp_path / "certificates").exists():
        assert cli(tmp_path, "certs").returncode == 0
    port = free_port()
    started = time.monotonic()
    fleet.start("server", "server", "--port", str(port), "--state-dir", "state",
                "--output-dir", "out", "--no-run", "--authorized-keys", keys)
    return (["--server", f"127.0.0.1:{port}", "--root-certificates",
             "certificates/ca.crt"], started)


def test_300_keys_at_start_and_20_more_from_the_cli(fleet: Fleet, tmp_path: Path) -> None:
    """All 324 are in the SuperLink's node list; the server said ready, then healthy."""
    # Prepare
    _write_keys(tmp_path / "devices", "edge", 300)
    _write_keys(tmp_path / "more", "late", 20)
    odd = ["edge 1 (lab)", "gerät-ü", "--name=x", "a'b\"c;$(id)"]
    for name in odd:  # device names from odd file names, stored as they are
        _write_keys(tmp_path / "odd", "x", 1)
        (tmp_path / "odd" / "x-0000.pub").rename(tmp_path / "more" / f"{name}.pub")

    # Execute
    connection, started = _start(fleet, tmp_path, "devices")
    port = connection[1].rsplit(":", 1)[1]
    phases: set[str] = set()
    deadline = time.monotonic() + 300
    while True:
        status = read_status(tmp_path / "state" / STATUS_FILE)
        if status is not None:
            phases.add(status.phase)
            if status.phase == "ready":
                break
        assert time.monotonic() < deadline, fleet.log("server")[-3000:]
        assert fleet.procs[0].poll() is None, fleet.log("server")[-3000:]
        time.sleep(0.05)
    ready_after = time.monotonic() - started
    probe = subprocess.run([sys.executable, "-m", "fedfleet.shared.health", "server",
                            port, str(tmp_path / "state" / "ready")],
                           capture_output=True, text=True, check=False)
    t0 = time.monotonic()
    more = cli(tmp_path, "nodes", "register", "more", *connection)
    cli_took = time.monotonic() - t0
    listed = cli(tmp_path, "nodes", "list", "--format", "json", *connection)

    # Assert
    assert (probe.returncode, probe.stdout) == (0, "ready\n"), probe.stdout
    assert "registering" in phases or "starting" in phases, phases
    assert more.returncode == 0, more.stdout + more.stderr
    assert "24 registered, 0 already registered, 0 refused, of 24 key(s)" in more.stdout
    nodes = json.loads(listed.stdout)
    names = sorted(node["name"] for node in nodes)
    assert names == sorted([f"edge-{i:04d}" for i in range(300)]
                           + [f"late-{i:04d}" for i in range(20)] + odd)
    assert {node["status"] for node in nodes} == {"registered"}
    log = fleet.log("server")
    assert log.count(" as node ") == 300
    ledger = json.loads((tmp_path / "state" / "authorized-keys.json").read_text())
    assert len(ledger) == 300 and all(entry["node_id"] for entry in ledger.values())
    print(f"\n300 keys at start: ready {ready_after:.1f}s after 'fedfleet server' "
          f"started; 24 keys with 'fedfleet nodes register': {cli_took:.1f}s "
          "(both including process start-up)")


def test_a_bad_key_stops_the_start_with_one_line_and_the_rest_recorded(
        fleet: Fleet, tmp_path: Path) -> None:
    """50 good keys and an Ed25519 one: the 50 are registered and in the ledger."""
    _write_keys(tmp_path / "devices", "edge", 50)
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    (tmp_path / "devices" / "edge-0025b.pub").write_bytes(ed.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))

    _start(fleet, tmp_path, "devices")
    code = fleet.procs[0].wait(timeout=300)

    log = fleet.log("server")
    errors = [line for line in log.splitlines() if line.startswith("Error: ")]
    assert code != 0
    assert errors == ["Error: cannot register devices/edge-0025b.pub: a ssh-ed25519 key; "
                      "Flower accepts only ECDSA keys on NIST curves (make one with "
                      "'fedfleet node-key')"], log[-2000:]
    ledger = json.loads((tmp_path / "state" / "authorized-keys.json").read_text())
    assert sorted(entry["name"] for entry in ledger.values()) == [
        f"edge-{i:04d}" for i in range(50)]
    status = read_status(tmp_path / "state" / STATUS_FILE)
    assert status is not None and status.phase == "failed"
    assert "edge-0025b.pub" in status.detail
