"""Whether the device is working on a message: read from the SuperNode's log, kept in a file.

Flower's SuperNode handles one message at a time and logs each step::

    [RUN 42, ROUND 3]
    Receiving: train message (ID: ...)      -> busy
    ...
    Sending: train message (ID: ...)
    Sent successfully                       -> idle (the server has the reply)

``fedfleet join`` feeds every line it passes through to :class:`Activity`, which
writes ``activity.json`` (``ACTIVITY_FILE``) in the node's home so that an operator
tool can see, through ``docker exec``, when a device can be stopped without losing a
reply. ``join`` also uses it to finish the message in progress before it stops.

Standard library only: the supervising ``fedfleet join`` process stays small.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from fedfleet.shared.constants import ACTIVITY_FILE

_ROUND = re.compile(r"\[RUN (\d+)(?:, ROUND (\S+))?\]")
_RECEIVING = re.compile(r"Receiving: (\S+) message")
_NODE_ID = re.compile(r"SuperNode ID: (\d+)")
_DONE = ("Sent successfully", "Failed to send message", "Ignoring reply message",
         "Failed to receive message", "Ignoring the message", "Ignoring message")
"""Lines after which the SuperNode holds no message any more (sent, failed or dropped)."""


class Activity:
    """Tracks idle/busy from SuperNode log lines and mirrors it to ``home/ACTIVITY_FILE``."""

    def __init__(self, home: Path) -> None:
        """Start in state ``starting`` (the SuperNode has not signed in yet)."""
        self.path = home / ACTIVITY_FILE
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._run: str | None = None
        self._round: str | None = None
        self.state: dict[str, Any] = {"state": "starting", "since": time.time(),
                                      "node_id": None, "messages": 0, "pid": os.getpid()}
        self._write()

    @property
    def busy(self) -> bool:
        """Return True while a message is being received, handled or replied to."""
        return not self._idle.is_set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until no message is in progress."""
        return self._idle.wait(timeout)

    def feed(self, line: str) -> None:
        """Update the state from one line of the SuperNode's output."""
        with self._lock:
            if (match := _NODE_ID.search(line)) is not None:
                self._set("idle", node_id=match.group(1))
            elif (match := _ROUND.search(line)) is not None:
                self._run, self._round = match.group(1), match.group(2)
            elif (match := _RECEIVING.search(line)) is not None:
                self._idle.clear()
                self._set("busy", run_id=self._run, round=self._round,
                          message_type=match.group(1))
            elif self.busy and any(marker in line for marker in _DONE):
                self._idle.set()
                self._set("idle", messages=int(self.state["messages"]) + 1,
                          last_message_at=time.time())

    def stopping(self) -> None:
        """Record that ``join`` is shutting down (no new work should be expected)."""
        with self._lock:
            self._set("stopping")

    def _set(self, state: str, **fields: Any) -> None:
        if state == "idle":
            for key in ("run_id", "round", "message_type"):
                self.state.pop(key, None)
        self.state.update(fields, state=state, since=time.time())
        self._write()

    def _write(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps(self.state), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:  # a read-only home must not stop the node
            pass
