"""The server's start-up phase, written by ``fedfleet server``, read by its healthcheck.

``status.json`` in the state dir says what the server is doing (starting the
SuperLink, registering device keys N of M, ready, failed, stopped), which process
says so, and when it last said it, so a probe can tell a server that is still
enrolling from one that is stuck or gone.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from fedfleet.shared.atomic import write_atomic

STATUS_FILE = "status.json"

Phase = Literal["starting", "registering", "ready", "failed", "stopped"]
PHASES: tuple[Phase, ...] = ("starting", "registering", "ready", "failed", "stopped")


def process_start(pid: int) -> str | None:
    """Return when process ``pid`` started (Linux clock ticks), None if unknown.

    With the PID it names one process: a PID reused after a restart has another start.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name may hold spaces


@dataclass(frozen=True)
class ServerStatus:
    """One line of the server's start-up story."""

    phase: Phase
    detail: str = ""
    done: int = 0
    total: int = 0
    pid: int = 0
    pid_start: str | None = None
    updated: float = 0.0

    def describe(self) -> str:
        """Return what the server is doing, for a person."""
        if self.phase == "registering":
            return f"registering device keys {self.done}/{self.total}"
        return self.detail or self.phase

    def alive(self) -> bool:
        """Return True if the process that wrote this status still runs."""
        if self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, as another user
        start = process_start(self.pid)
        return self.pid_start is None or start is None or start == self.pid_start


def write_status(state_dir: Path, phase: Phase, detail: str = "", done: int = 0,
                 total: int = 0) -> None:
    """Record this process's ``phase`` in ``state_dir/status.json`` (atomically)."""
    status = ServerStatus(phase, detail, done, total, os.getpid(),
                          process_start(os.getpid()), time.time())
    write_atomic(state_dir / STATUS_FILE, json.dumps(asdict(status)) + "\n")


def read_status(path: Path) -> ServerStatus | None:
    """Return the status in ``path``; None if there is none or it cannot be read."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or raw.get("phase") not in PHASES:
        return None
    try:
        return ServerStatus(phase=raw["phase"], detail=str(raw.get("detail", "")),
                            done=int(raw.get("done", 0)), total=int(raw.get("total", 0)),
                            pid=int(raw.get("pid", 0)),
                            pid_start=(str(raw["pid_start"])
                                       if raw.get("pid_start") is not None else None),
                            updated=float(raw.get("updated", 0.0)))
    except (TypeError, ValueError):
        return None
