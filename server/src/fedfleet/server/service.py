"""Run the server side: a SuperLink, and a training run followed to its end."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedfleet.server.control import Control
from fedfleet.server.outputs import read_metrics
from fedfleet.server.recorder import round_line
from fedfleet.shared import process
from fedfleet.shared.atomic import write_atomic
from fedfleet.shared.errors import FedfleetError

log = logging.getLogger("fedfleet")


@dataclass(frozen=True)
class ServerOptions:
    """Where the SuperLink listens and keeps its state."""

    host: str = "127.0.0.1"
    port: int = 8000
    state_dir: Path = Path("fedfleet-state")
    insecure: bool = True
    ssl_files: tuple[Path, Path, Path] | None = None  # ca.crt, server.pem, server.key
    node_auth: bool = False
    startup_timeout: float = 60.0

    @property
    def local_address(self) -> str:
        """Return the address the server's own tools use to reach the SuperLink."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{host}:{self.port}"

    def control(self) -> Control:
        """Return a Control API client for this SuperLink."""
        return Control(self.local_address, self.state_dir / "cli",
                       insecure=self.insecure,
                       root_certificates=self.ssl_files[0] if self.ssl_files else None)


def superlink_command(opts: ServerOptions) -> list[str]:
    """Return the ``flower-superlink`` command line for ``opts``."""
    cmd = [process.flower_executable("flower-superlink"),
           "--host", opts.host, "--port", str(opts.port),
           "--database", str(opts.state_dir / "superlink.db"),
           "--disable-runtime-dependency-installation"]
    if opts.insecure:
        cmd.append("--insecure")
    elif opts.ssl_files is not None:
        ca, cert, key = opts.ssl_files
        cmd += ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert),
                "--ssl-keyfile", str(key)]
    if opts.node_auth:
        cmd.append("--enable-supernode-auth")
    return cmd


def start_superlink(opts: ServerOptions) -> subprocess.Popen[bytes]:
    """Start the SuperLink (log in ``state_dir/superlink.log``) and wait until healthy."""
    opts.state_dir.mkdir(parents=True, exist_ok=True)
    log_file = opts.state_dir / "superlink.log"
    child = process.start(superlink_command(opts),
                          process.flower_env(opts.state_dir / "superlink-home"), log_file)
    try:
        process.wait_healthy(opts.local_address, not opts.insecure,
                             opts.ssl_files[0] if opts.ssl_files else None,
                             opts.startup_timeout, child)
    except FedfleetError as err:
        process.stop(child)
        tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] \
            if log_file.exists() else []
        raise FedfleetError(f"{err}{': ' + tail[0] if tail else ''}") from None
    except BaseException:  # Ctrl-C or SIGTERM while starting: don't orphan the SuperLink
        process.stop(child)
        raise
    log.info("SuperLink listening on %s:%d (log: %s)", opts.host, opts.port, log_file)
    return child


def register_authorized_keys(control: Control, keys_dir: Path, state_dir: Path
                             ) -> list[str]:
    """Register every ``*.pub`` in ``keys_dir`` the server has not registered before.

    A key is registered once: after 'fedfleet nodes revoke' it stays out even though
    its file is still there (the file lists who may be registered, the SuperLink who
    is). Returns one line per key registered now.

    Raises
    ------
    FedfleetError
        If a key cannot be registered (e.g. it is not an ECDSA OpenSSH public key).
    """
    ledger_path = state_dir / "authorized-keys.json"
    ledger: dict[str, dict[str, Any]] = (
        json.loads(ledger_path.read_text(encoding="utf-8")) if ledger_path.exists() else {})
    lines = []
    for pub in sorted(keys_dir.glob("*.pub")):
        fingerprint = hashlib.sha256(pub.read_bytes().strip()).hexdigest()
        if fingerprint in ledger:
            continue
        try:
            node_id: int | None = control.register_node(pub, pub.stem)
        except FedfleetError as err:
            if "already in use" not in str(err):
                raise FedfleetError(f"cannot register {pub}: {err}") from None
            node_id = None  # registered by hand before
        ledger[fingerprint] = {"name": pub.stem, "node_id": node_id}
        write_atomic(ledger_path, json.dumps(ledger, indent=1))
        lines.append(f"registered {pub.stem}"
                     + (f" as node {node_id}" if node_id else " (was registered already)"))
    return lines


@dataclass
class RunFollower:
    """Follows one run through its metrics file and the SuperLink's run status."""

    control: Control
    run_id: int
    output_dir: Path
    on_line: Callable[[str], None] = print
    status_every: float = 30.0  # a `flwr ls` costs ~1 s of CPU; the metrics file is primary
    seen: int = field(default=0, init=False)

    def follow(self, alive: Callable[[], bool] = lambda: True) -> dict[str, Any]:
        """Print each finished round; return the final record.

        Raises
        ------
        FedfleetError
            If the run fails, or ends without a record, or the SuperLink exits.
        """
        run_dir = self.output_dir / f"run-{self.run_id}"
        last_status = time.monotonic()
        while True:
            record = read_metrics(run_dir)
            if record is not None:
                num_rounds = record["run"].get("num_rounds")
                for row in record["rounds"][self.seen:]:
                    self.on_line(round_line(row, num_rounds))
                self.seen = len(record["rounds"])
                if record["status"] == "completed":
                    return record
                if record["status"] == "failed":
                    raise FedfleetError(f"run {self.run_id} failed: {record.get('error')}")
            if not alive():
                raise FedfleetError("the SuperLink exited during the run; see its log")
            if time.monotonic() - last_status > self.status_every:
                last_status = time.monotonic()
                row = self.control.run(self.run_id)
                if str(row["status"]).startswith("finished"):
                    time.sleep(1.0)  # let the last metrics write land
                    record = read_metrics(run_dir)
                    if record is None or record["status"] == "running":
                        raise FedfleetError(
                            f"run {self.run_id} ended as {row['status']}"
                            f"{': ' + row['status-details'] if row.get('status-details') else ''}"
                            " before it finished; see the SuperLink log")
                    continue
            time.sleep(1.0)


def summary(record: dict[str, Any], run_dir: Path) -> str:
    """Return the closing message of a completed run."""
    rounds = record["rounds"]
    last = rounds[-1] if rounds else {}
    acc = last.get("central_accuracy", last.get("eval_accuracy"))
    acc_text = f", final accuracy {acc:.2%}" if acc is not None else ""
    return (f"done: run {record['run']['run_id']} finished {len(rounds)} rounds"
            f"{acc_text}; outputs in {run_dir}")
