"""Time enrolment: ``fedfleet server --authorized-keys`` and ``nodes register`` with N keys.

Starts a real TLS + node-auth ``fedfleet server --no-run`` on 127.0.0.1 with N
generated device keys and reports how long the SuperLink took to answer and how long
the keys took after that (until the server marked itself ready); then registers N
more keys with ``fedfleet nodes register DIR`` against it and times that command.

Example:
    .venv/bin/python benchmarks/enrol.py --keys 1000
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedfleet.server.host.certs import create_certificates
from fedfleet.shared.keys import create_node_key
from fedfleet.shared.process import probe

FEDFLEET = str(Path(sys.executable).with_name("fedfleet"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    """Run the measurement and print one line of results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fedfleet-enrol-"))
    try:
        create_certificates(work / "certificates", [])
        keys = work / "devices"
        keys.mkdir()
        made = work / "made"
        made.mkdir()
        later = work / "later"
        later.mkdir()
        for i in range(args.keys):
            create_node_key(made / f"edge-{i:04d}")
            shutil.copy(made / f"edge-{i:04d}.pub", keys / f"edge-{i:04d}.pub")
            create_node_key(made / f"late-{i:04d}")
            shutil.copy(made / f"late-{i:04d}.pub", later / f"late-{i:04d}.pub")
        port = _free_port()
        log = (work / "server.log").open("wb")
        started = time.monotonic()
        proc = subprocess.Popen(
            [FEDFLEET, "server", "--port", str(port), "--no-run", "--state-dir", "state",
             "--output-dir", "out", "--authorized-keys", "devices"],
            cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
        address = f"127.0.0.1:{port}"
        ca = work / "certificates" / "ca.crt"
        link_up = None
        try:
            while time.monotonic() - started < args.timeout:
                if proc.poll() is not None:
                    print((work / "server.log").read_text()[-3000:])
                    return 1
                if link_up is None and probe(address, True, ca, 1.0) is None:
                    link_up = time.monotonic()
                if (work / "state" / "ready").exists():
                    break
                time.sleep(0.1)
            else:
                print("timed out")
                return 1
            ready = time.monotonic()
            cli_start = time.monotonic()
            done = subprocess.run([FEDFLEET, "nodes", "register", "later", "--server",
                                   address, "--root-certificates", str(ca),
                                   "--state-dir", "cli-state"], cwd=work,
                                  capture_output=True, text=True, check=False)
            cli_took = time.monotonic() - cli_start
            summary = done.stdout.strip().splitlines()[-1:] or [done.stderr.strip()]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        up = (link_up or ready) - started
        print(f"{args.keys} keys: SuperLink answered after {up:.1f}s, keys registered "
              f"{ready - (link_up or ready):.1f}s later "
              f"({(ready - (link_up or ready)) / args.keys * 1000:.0f} ms/key), "
              f"ready after {ready - started:.1f}s; 'fedfleet nodes register' of "
              f"{args.keys} more: {cli_took:.1f}s ({summary[0]})")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
