"""Keep the warm trainer (:mod:`fedfleet.client.worker`) running beside the SuperNode.

Standard library only: the supervising ``fedfleet join`` process stays small.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from fedfleet.shared.tether import tethered

log = logging.getLogger("fedfleet")


class WorkerSupervisor:
    """Runs the worker as a child process and restarts it when it exits."""

    def __init__(self, socket_path: Path, env: dict[str, str]) -> None:
        """Remember where the worker listens; call :meth:`start` to run it."""
        self.socket_path = socket_path
        self.env = env
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        """Start the worker and a thread that restarts it (with backoff) if it dies."""
        self._spawn()
        self._thread.start()

    def _spawn(self) -> None:
        self._started_at = time.monotonic()
        self._proc = subprocess.Popen(
            tethered([sys.executable, "-m", "fedfleet.client.worker", "--socket",
                      str(self.socket_path), "--parent-pid", str(os.getpid())]),
            env=self.env, start_new_session=True)

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.wait(0.5):
            if self._proc is not None and self._proc.poll() is not None:
                # A worker that ran a while before dying restarts at once; one that
                # keeps dying right after start is retried ever more slowly (<= 30 s).
                lived = time.monotonic() - self._started_at
                backoff = 1.0 if lived > 60 else min(backoff * 2, 30.0)
                log.warning("Trainer exited with code %s; restarting in %.0fs",
                            self._proc.returncode, backoff)
                if self._stopping.wait(backoff):
                    return
                self.restarts += 1
                self._spawn()

    @property
    def pid(self) -> int | None:
        """Return the current worker's process ID."""
        return self._proc.pid if self._proc is not None else None

    def stop(self) -> None:
        """Stop watching and end the worker."""
        self._stopping.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self.socket_path.unlink(missing_ok=True)
