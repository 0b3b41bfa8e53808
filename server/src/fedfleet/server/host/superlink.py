"""The SuperLink process: its command line, start-up and health wait."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fedfleet.server.host.control import Control, connect
from fedfleet.shared import process
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
    simulation: bool = False
    """Run each submitted run on Flower's simulation engine (``flwr-simulation``,
    Ray) with virtual devices instead of serving real ones: no Fleet API."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for the SuperLink and what it starts (``flwr-simulation``
    and, through it, a local Ray's workers inherit it)."""

    @property
    def local_address(self) -> str:
        """Return the address the server's own tools use to reach the SuperLink."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{host}:{self.port}"

    def control(self) -> Control:
        """Return a Control API client for this SuperLink."""
        return connect(self.local_address, self.state_dir, insecure=self.insecure,
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
    if opts.simulation:
        cmd.append("--simulation")
    return cmd


def start_superlink(opts: ServerOptions) -> subprocess.Popen[bytes]:
    """Start the SuperLink (log in ``state_dir/superlink.log``) and wait until healthy."""
    opts.state_dir.mkdir(parents=True, exist_ok=True)
    log_file = opts.state_dir / "superlink.log"
    child = process.start(superlink_command(opts),
                          process.flower_env(opts.state_dir / "superlink-home", opts.env),
                          log_file)
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
