"""A two-device fleet, end to end: one device over tcp+TLS, one over ssh.

Each device is a Docker daemon of its own in its own network namespace (the same
stand-in for a remote machine as ``tests/fleet``); the server runs on this machine.
Prints every ``fedfleet fleet`` command with its real output and wall time:
deploy, status during a run, update during the run (a new image, one device at a
time), status, remove. Needs root, Docker, sshd and the client image::

    docker build -f Dockerfile.client -t fedfleet-client:0.1.0 .
    .venv/bin/python benchmarks/fleet_demo.py            # ~10 min on 2 vCPUs

Everything it starts (daemons, namespaces, containers, the demo image) is removed
at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "fleet"))
from remote import RemoteDevice, sh  # the tests' remote-device stand-in

from fedfleet.server.host.certs import create_certificates

FEDFLEET = str(Path(sys.executable).parent / "fedfleet")
IMAGE = "fedfleet-client:0.1.0"
NEW_IMAGE = "fedfleet-client:demo-v2"
ROUNDS = 8


def free_port() -> int:
    """Return a free TCP port on this machine."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def show(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``fedfleet fleet ARGS`` in ``work``; print the command, its output and time."""
    started = time.monotonic()
    done = subprocess.run([FEDFLEET, "fleet", *args], cwd=work, capture_output=True,
                          text=True, timeout=1800, check=False)
    took = time.monotonic() - started
    # Keep the last progress line of an image transfer, not every 2-second update.
    lines, last_progress = [], {}
    for line in done.stdout.splitlines():
        if re.search(r"sending \S+: [\d,]+ of", line):
            last_progress[line.split()[0]] = line
            continue
        device = line.split()[0] if line.split() else ""
        if device in last_progress:
            lines.append(last_progress.pop(device))
        lines.append(line)
    print(f"$ fedfleet fleet {' '.join(args)}        # {took:.0f}s, exit {done.returncode}")
    print("\n".join(lines + [done.stderr.strip()]).strip() + "\n", flush=True)
    return done


def inventory(work: Path, tls_device: RemoteDevice, ssh_device: RemoteDevice, server: str,
              image: str) -> None:
    """Write fleet.toml: edge-tls over tcp+TLS, edge-ssh over ssh."""
    ca, cert, key = tls_device.operator_tls or (None, None, None)
    (work / "fleet.toml").write_text(f"""
[server]
address = "{server}"
ca = "certs/ca.crt"
control = "{server}"
outputs = "out"

[defaults]
image = "{image}"
data = "builtin:digits"
network = "host"
drain_timeout = 60

[devices.edge-tls]
endpoint = "{tls_device.endpoint}"
tls = {{ ca = "{ca}", cert = "{cert}", key = "{key}" }}
partition = "0/2"

[devices.edge-ssh]
endpoint = "ssh://root@{ssh_device.ip}"
ssh = {{ identity = "{ssh_device.ssh_key}", known_hosts = "{ssh_device.known_hosts}" }}
partition = "1/2"
""")


def records(work: Path) -> list[dict]:
    """Return the run records written so far."""
    found = []
    for path in (work / "out").glob("run-*/metrics.json"):
        try:
            found.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            pass
    return found


def main() -> None:
    """Set up, run the demo, tear down."""
    if os.geteuid() != 0:
        sys.exit("Error: needs root (network namespaces and extra Docker daemons)")
    local = docker.from_env()
    local.images.get(IMAGE)  # fails early when the client image is missing
    work = Path(tempfile.mkdtemp(prefix="fleet-demo-"))
    tls_device, ssh_device = RemoteDevice(), RemoteDevice(tcp=False)
    server = None
    try:
        tls_device.start()
        ssh_device.start()
        ssh_device.start_sshd()
        # The server listens on the TLS device's link; the ssh device reaches it by route.
        sh("ip", "-n", ssh_device.netns, "route", "add", "default", "via", ssh_device.host_ip)
        port = free_port()
        address = f"{tls_device.host_ip}:{port}"
        create_certificates(work / "certs", [tls_device.host_ip])
        server = subprocess.Popen(
            [FEDFLEET, "server", "--host", tls_device.host_ip, "--port", str(port),
             "--tls-dir", "certs", "--no-run", "--state-dir", "state", "--output-dir", "out"],
            cwd=work, stdout=(work / "server.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        time.sleep(8)
        inventory(work, tls_device, ssh_device, address, IMAGE)
        print(f"# work dir {work}; server {address}\n", flush=True)

        show(work, "deploy")
        show(work, "deploy")

        run = subprocess.Popen(
            [FEDFLEET, "run", "--server", address, "--root-certificates", "certs/ca.crt",
             "--state-dir", "admin-state", "--output-dir", "out", "--rounds", str(ROUNDS),
             "--min-clients", "2", "--round-quorum", "1"],
            cwd=work, stdout=(work / "run.log").open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        while not any(r["rounds"] for r in records(work)):
            if run.poll() is not None:
                sys.exit((work / "run.log").read_text()[-3000:])
            time.sleep(1)
        show(work, "status")

        subprocess.run(["docker", "build", "-q", "-t", NEW_IMAGE, "-"], check=True,
                       input=f"FROM {IMAGE}\nLABEL org.fedfleet.demo=v2\n", text=True,
                       capture_output=True)
        inventory(work, tls_device, ssh_device, address, NEW_IMAGE)
        rounds_before = len(records(work)[0]["rounds"])
        show(work, "update")
        rounds_after = len(records(work)[0]["rounds"])
        run.wait(timeout=1800)
        print(f"# the update ran from round {rounds_before} to round {rounds_after} "
              f"of {ROUNDS}; the run:")
        print((work / "run.log").read_text().strip() + "\n")
        record = records(work)[0]
        print("# replies per round:", [r["train_replies"] for r in record["rounds"]],
              "errors:", [r["errors"] for r in record["rounds"] if r["errors"]], "\n")
        show(work, "status")
        show(work, "remove", "edge-tls", "edge-ssh", "--yes")
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
        for device in (tls_device, ssh_device):
            device.close()
        try:
            local.images.remove(NEW_IMAGE, force=True)
        except docker.errors.ImageNotFound:
            pass


if __name__ == "__main__":
    main()
