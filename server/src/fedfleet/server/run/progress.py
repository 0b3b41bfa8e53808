"""The round in flight, for live displays: who was asked, who answered, who still works.

The ServerApp keeps ``progress.json`` in the run's folder current while a round runs
(the grid reports instructions sent and replies as they arrive, the intake which
replies it refused); ``fedfleet server`` and ``fedfleet run`` read it to show the
round live (:mod:`fedfleet.server.host.live`). It is a view, never an input: the record
(``metrics.json``) stays the account of what happened.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, TypedDict, cast

from fedfleet.shared.atomic import write_atomic

PROGRESS_JSON = "progress.json"

DeviceState = Literal["working", "replied", "failed", "rejected", "no reply"]


class RoundProgress(TypedDict):
    """One round's state as a live display reads it."""

    round: int
    num_rounds: int
    phase: str
    started_at: float
    """Unix time the phase's instructions were sent."""
    devices: dict[str, DeviceState]
    """Node ID -> what it has done so far in this phase."""


class ProgressFile:
    """Writes :class:`RoundProgress` to ``progress.json`` (nothing without a folder)."""

    def __init__(self, run_dir: Path | None, num_rounds: int) -> None:
        """Keep progress in ``run_dir``; ``num_rounds`` in the run."""
        self.path = run_dir / PROGRESS_JSON if run_dir is not None else None
        self.num_rounds = num_rounds
        self.state: RoundProgress | None = None
        self.run_round = 0

    def round(self, run_round: int) -> None:
        """Note the run round the next instructions belong to."""
        self.run_round = run_round

    def asked(self, phase: str, nodes: Iterable[str]) -> None:
        """Note that instructions for ``phase`` went to ``nodes`` (working now)."""
        self.state = {"round": self.run_round, "num_rounds": self.num_rounds,
                      "phase": phase, "started_at": time.time(),
                      "devices": dict.fromkeys(nodes, "working")}
        self._write()

    def answered(self, node: str, ok: bool) -> None:
        """``node`` sent a reply (``ok``) or an error."""
        self._set({node: "replied" if ok else "failed"})

    def rejected(self, nodes: Iterable[str]) -> None:
        """Note that the intake refused the replies of ``nodes``."""
        self._set(dict.fromkeys(nodes, "rejected"))

    def silent(self, nodes: Iterable[str]) -> None:
        """Note that the round closed before ``nodes`` answered."""
        self._set(dict.fromkeys(nodes, "no reply"))

    def _set(self, changes: dict[str, DeviceState]) -> None:
        if self.state is None or not changes:
            return
        self.state["devices"].update(changes)
        self._write()

    def _write(self) -> None:
        if self.path is not None and self.state is not None:
            try:
                write_atomic(self.path, json.dumps(self.state))
            except OSError:
                pass  # a live view must never stop a round


def read_progress(run_dir: Path) -> RoundProgress | None:
    """Return the round in flight in ``run_dir``, or None."""
    try:
        data = json.loads((run_dir / PROGRESS_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
        return None
    return cast(RoundProgress, data)
