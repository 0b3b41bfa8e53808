"""Continue a run that a server crash interrupted, from its last completed round.

After every round the run directory holds the global model
(``checkpoints/round-NNN.keras``), the strategy's state (``round-NNN.state.npz``:
FedAdam's moments and the like) and ``metrics.json`` with every round so far. A
restarted ``fedfleet server`` finds a run whose record still says ``running`` but
which the SuperLink has ended, and submits a continuation that starts from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedfleet.server.outputs import read_metrics
from fedfleet.shared.atomic import save_atomic
from fedfleet.shared.constants import CHECKPOINT_DIR
from fedfleet.shared.settings import RunSettings

STATE_ATTRIBUTES = ("m_t", "v_t")
"""Strategy attributes that carry state from round to round (Flower's FedOpt family)."""


def state_path(run_dir: Path, server_round: int) -> Path:
    """Return where the strategy state after ``server_round`` is kept."""
    return run_dir / CHECKPOINT_DIR / f"round-{server_round:03d}.state.npz"


def save_strategy_state(strategy: Any, path: Path) -> None:
    """Write the strategy's round-to-round state (maybe empty) atomically."""
    arrays: dict[str, np.ndarray] = {}
    for name in STATE_ATTRIBUTES:
        for key, value in (getattr(strategy, name, None) or {}).items():
            arrays[f"{name}/{key}"] = np.asarray(value)
    save_atomic(path, lambda tmp: np.savez(tmp, **arrays))  # type: ignore[arg-type]


def restore_strategy_state(strategy: Any, path: Path) -> None:
    """Put saved state back into a freshly built strategy."""
    with np.load(path) as saved:
        for name in STATE_ATTRIBUTES:
            values = {key.split("/", 1)[1]: saved[key] for key in saved.files
                      if key.startswith(f"{name}/")}
            if values:
                setattr(strategy, name, values)


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted run stopped."""

    run_dir: Path
    run_id: int
    last_round: int
    record: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        """Return the global model after the last completed round."""
        return self.run_dir / CHECKPOINT_DIR / f"round-{self.last_round:03d}.keras"

    @property
    def settings(self) -> Mapping[str, Any]:
        """Return the interrupted run's settings (run-config form)."""
        return dict(self.record["run"].get("settings", {}))


def resume_point(run_dir: Path) -> ResumePoint | None:
    """Return where the run in ``run_dir`` can continue, or None if it cannot.

    A run can continue if its record says ``running``, it finished at least one round
    but not all, and the checkpoint of its last round exists.
    """
    record = read_metrics(run_dir)
    if record is None or record.get("status") != "running" or not record.get("rounds"):
        return None
    last = int(record["rounds"][-1]["round"])
    total = int(record["run"].get("num_rounds", 0))
    point = ResumePoint(run_dir, int(record["run"]["run_id"]), last, record)
    if last >= total or not point.checkpoint.exists():
        return None
    return point


def interrupted_runs(output_dir: Path) -> list[ResumePoint]:
    """Return the runs under ``output_dir`` that can continue, newest first."""
    points = [p for d in output_dir.glob("run-*") if (p := resume_point(d)) is not None]
    return sorted(points, key=lambda p: p.record["run"].get("started_at", 0),
                  reverse=True)


def find_interrupted(output_dir: Path) -> ResumePoint | None:
    """Return the newest run in ``output_dir`` that a crash interrupted.

    Its ServerApp ran under the SuperLink that ``fedfleet server`` started last time,
    so a record still marked running, seen from a freshly started server, belongs to
    a dead run.
    """
    points = interrupted_runs(output_dir)
    return points[0] if points else None


def continuation(point: ResumePoint) -> RunSettings:
    """Return the settings that continue ``point``: its own, pointed at its directory."""
    return RunSettings.from_run_config(point.settings).replace(
        resume_from=str(point.run_dir.resolve()))
