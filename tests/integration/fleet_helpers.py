"""Start fedfleet processes for integration tests, and make sure they all stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

FEDFLEET = str(Path(sys.executable).parent / "fedfleet")


def cli(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a short fedfleet command and return its result."""
    return subprocess.run([FEDFLEET, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)




class Fleet:
    """Starts fedfleet processes and guarantees they are gone afterwards."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str, wrap: tuple[str, ...] = ()
              ) -> subprocess.Popen[bytes]:
        """Start ``fedfleet ARGS`` (behind ``wrap``, e.g. faketime), logging to NAME.log."""
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen([*wrap, FEDFLEET, *args], cwd=self.workdir, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.procs:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue




