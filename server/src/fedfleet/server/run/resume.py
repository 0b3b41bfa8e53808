"""Continue a run that a server crash interrupted, from its last completed round.

After every round the run's folder holds the global model
(``checkpoints/round-NNN.keras``), the strategy's state (``round-NNN.state.npz``:
FedAdam's moments and the like) and ``metrics.json`` with every round so far. Resume
has three steps, all here:

1. **Decide** (``fedfleet server`` on start): :func:`find_interrupted` finds a run
   whose record still says ``running`` although its SuperLink died with the last
   server; :func:`continuation` gives the settings of the run that continues it.
2. **Continue** (the new run's ServerApp): :func:`continue_run` loads the last
   checkpoint and strategy state, carries the history over, links the two records
   (``resumed_from`` / ``continued_by``) and returns the round offset, which the
   ServerApp gives the strategy wrapper.
3. **Keep state** (after every round): :func:`save_strategy_state`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedfleet.server.results.run_files import RunFiles, checkpoint_path, state_path
from fedfleet.shared.atomic import copy_atomic, save_atomic
from fedfleet.shared.runrecord import RunRecord, read_record
from fedfleet.shared.settings import RunSettings, Scalar

if TYPE_CHECKING:  # not imported at run time: `fedfleet server` decides without it
    from fedfleet.server.run.recorder import RunRecorder

log = logging.getLogger("fedfleet")

STATE_ATTRIBUTES = ("m_t", "v_t")
"""Strategy attributes that carry state from round to round (Flower's FedOpt family)."""


def save_strategy_state(strategy: object, path: Path) -> None:
    """Write the strategy's round-to-round state (maybe empty) atomically."""
    arrays: dict[str, np.ndarray] = {}
    for name in STATE_ATTRIBUTES:
        for key, value in (getattr(strategy, name, None) or {}).items():
            arrays[f"{name}/{key}"] = np.asarray(value)
    save_atomic(path, lambda tmp: _savez(tmp, arrays))


def _savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    # numpy's stubs read **kwargs as its own keyword options; names here are "m_t/0"...
    savez: Callable[..., None] = np.savez
    with path.open("wb") as handle:
        savez(handle, **arrays)


def restore_strategy_state(strategy: object, path: Path) -> None:
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
    record: RunRecord

    @property
    def checkpoint(self) -> Path:
        """Return the global model after the last completed round."""
        return checkpoint_path(self.run_dir, self.last_round)

    @property
    def state(self) -> Path:
        """Return the strategy state after the last completed round."""
        return state_path(self.run_dir, self.last_round)

    @property
    def settings(self) -> Mapping[str, Scalar]:
        """Return the interrupted run's settings (run-config form)."""
        return dict(self.record["run"].get("settings", {}))


def resume_point(run_dir: Path) -> ResumePoint | None:
    """Return where the run in ``run_dir`` can continue, or None if it cannot.

    A run can continue if its record says ``running``, it finished at least one round
    but not all, and the checkpoint of its last round exists.
    """
    record = read_record(run_dir)
    if record is None or record.get("status") != "running" or not record.get("rounds"):
        return None
    last = int(record["rounds"][-1].get("round", 0))
    total = int(record["run"].get("num_rounds", 0))
    point = ResumePoint(run_dir, int(record["run"].get("run_id", 0)), last, record)
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


def continue_run(point: ResumePoint, run_id: int, model: Any, strategy: object,
                 recorder: RunRecorder) -> int:
    """Start the run ``run_id`` where ``point`` stopped; return its round offset.

    The model gets the last checkpoint's weights and the (Flower) strategy its state;
    the new record carries the history over, and the interrupted record is marked
    ``interrupted`` and ``continued_by`` this run. The starting checkpoint and state
    are copied into the new run's folder, so a second crash before the next round can
    resume too. The caller starts the rounds after the returned offset
    (``FedfleetStrategy.offset``).
    """
    import keras

    model.set_weights(keras.models.load_model(point.checkpoint).get_weights())
    if point.state.exists():
        restore_strategy_state(strategy, point.state)
    files = recorder.files
    if files is not None:
        copy_atomic(point.checkpoint, files.checkpoint(point.last_round))
        if point.state.exists():
            copy_atomic(point.state, files.state(point.last_round))
    recorder.record["run"]["resumed_from"] = {"run_id": point.run_id,
                                              "round": point.last_round}
    recorder.record["initial"] = point.record.get("initial")
    recorder.record["rounds"] = list(point.record["rounds"])
    if "participation" in point.record:  # older records have none: counted from here on
        recorder.record["participation"] = {
            node: {**entry} for node, entry in point.record["participation"].items()}
    recorder.save()
    previous: RunRecord = {**point.record, "status": "interrupted",
                           "continued_by": run_id}
    RunFiles(point.run_dir).write_record(previous)
    log.info("Continuing run %s after its round %d", point.run_id, point.last_round)
    return point.last_round
