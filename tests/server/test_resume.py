"""Resume: which runs can continue, from where, with which settings and state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedfleet.server.results.run_files import RunFiles, state_path
from fedfleet.server.run.recorder import RunRecorder
from fedfleet.server.run.resume import (
    continuation,
    continue_run,
    find_interrupted,
    interrupted_runs,
    restore_strategy_state,
    resume_point,
    save_strategy_state,
)
from fedfleet.shared.settings import RunSettings


def _run(out: Path, run_id: int, status: str, rounds: int, total: int = 5,
         started: float = 0.0, checkpoint: bool = True) -> Path:
    run_dir = out / f"run-{run_id}"
    (run_dir / "checkpoints").mkdir(parents=True)
    settings = RunSettings(num_rounds=total, strategy="fedadam").to_run_config()
    record: dict[str, Any] = {
        "run": {"run_id": run_id, "num_rounds": total, "started_at": started,
                "settings": settings},
        "status": status, "rounds": [{"round": n} for n in range(1, rounds + 1)]}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    if checkpoint and rounds:
        (run_dir / "checkpoints" / f"round-{rounds:03d}.keras").write_bytes(b"model")
    return run_dir


def test_an_interrupted_run_resumes_after_its_last_round(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, 11, "running", 2)
    point = resume_point(run_dir)
    assert point is not None
    assert (point.run_id, point.last_round) == (11, 2)
    assert point.checkpoint == run_dir / "checkpoints" / "round-002.keras"
    settings = continuation(point)
    assert settings.resume_from == str(run_dir.resolve())
    assert (settings.num_rounds, settings.strategy) == (5, "fedadam")


@pytest.mark.parametrize(("status", "rounds", "checkpoint"), [
    ("completed", 5, True),   # finished
    ("failed", 2, True),      # ended with a reason: not a crash
    ("running", 0, True),     # nothing to continue from: a fresh run is the same
    ("running", 5, True),     # all rounds done, only the final write was lost
    ("running", 2, False),    # the checkpoint is gone
])
def test_runs_that_cannot_continue(tmp_path: Path, status: str, rounds: int,
                                   checkpoint: bool) -> None:
    assert resume_point(_run(tmp_path, 1, status, rounds, checkpoint=checkpoint)) is None


def test_no_record_or_a_torn_one_is_not_resumed(tmp_path: Path) -> None:
    assert resume_point(tmp_path / "run-1") is None
    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "metrics.json").write_text('{"status": "runn')
    assert resume_point(tmp_path / "run-2") is None


def test_the_newest_interrupted_run_is_picked(tmp_path: Path) -> None:
    _run(tmp_path, 1, "running", 2, started=100.0)
    _run(tmp_path, 2, "running", 1, started=300.0)
    _run(tmp_path, 3, "completed", 5, started=400.0)
    assert [p.run_id for p in interrupted_runs(tmp_path)] == [2, 1]
    found = find_interrupted(tmp_path)
    assert found is not None and found.run_id == 2
    assert find_interrupted(tmp_path / "nothing-here") is None


class Adam:
    """Has FedAdam's state attributes."""

    def __init__(self) -> None:
        self.m_t: dict[str, np.ndarray] | None = None
        self.v_t: dict[str, np.ndarray] | None = None


def test_strategy_state_round_trips(tmp_path: Path) -> None:
    """FedAdam's moments come back exactly; a stateless strategy saves an empty file."""
    before = Adam()
    before.m_t = {"0": np.arange(6, dtype=np.float64).reshape(2, 3)}
    before.v_t = {"0": np.full((2, 3), 0.25), "1": np.ones(4)}
    (tmp_path / "checkpoints").mkdir()
    path = state_path(tmp_path, 3)
    assert path.name == "round-003.state.npz"
    save_strategy_state(before, path)
    after = Adam()
    restore_strategy_state(after, path)
    assert after.m_t is not None and after.v_t is not None
    np.testing.assert_array_equal(after.m_t["0"], before.m_t["0"])
    assert set(after.v_t) == {"0", "1"}
    np.testing.assert_array_equal(after.v_t["1"], np.ones(4))

    stateless = object()
    save_strategy_state(stateless, state_path(tmp_path, 4))
    fresh = Adam()
    restore_strategy_state(fresh, state_path(tmp_path, 4))
    assert fresh.m_t is None and fresh.v_t is None


def _tiny_model(seed: int) -> Any:
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def _interrupted(tmp_path: Path, with_state: bool) -> tuple[Path, Any]:
    """Run 11 stopped after round 2 of 5, its real checkpoint (and FedAdam state) on disk."""
    run_dir = _run(tmp_path / "outputs", 11, "running", 2)
    saved = _tiny_model(1)
    saved.save(run_dir / "checkpoints" / "round-002.keras")
    if with_state:
        adam = Adam()
        adam.m_t, adam.v_t = {"0": np.full(3, 0.5)}, {"0": np.full(3, 0.25)}
        save_strategy_state(adam, state_path(run_dir, 2))
    record = json.loads((run_dir / "metrics.json").read_text())
    record["initial"] = {"central_loss": 2.3, "central_accuracy": 0.1}
    record["participation"] = {"101": {"asked": 2, "contributed": 1}}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    return run_dir, saved


def test_continue_run_starts_from_the_last_checkpoint_and_links_the_records(
        tmp_path: Path) -> None:
    """Weights, FedAdam state and history carry over; both records point at each other."""
    # Prepare
    run_dir, saved = _interrupted(tmp_path, with_state=True)
    point = resume_point(run_dir)
    assert point is not None
    model, strategy = _tiny_model(2), Adam()
    files = RunFiles(tmp_path / "outputs" / "run-12")
    recorder = RunRecorder(files, {"run_id": 12, "num_rounds": 5})
    # Execute
    offset = continue_run(point, 12, model, strategy, recorder)
    # Assert
    assert offset == 2
    for got, want in zip(model.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_almost_equal(got, want)
    assert strategy.m_t is not None and strategy.v_t is not None
    np.testing.assert_almost_equal(strategy.v_t["0"], np.full(3, 0.25))
    assert files.checkpoint(2).read_bytes() == point.checkpoint.read_bytes()
    assert files.state(2).read_bytes() == point.state.read_bytes()
    new = json.loads(files.metrics_json.read_text())
    assert new["run"]["resumed_from"] == {"run_id": 11, "round": 2}
    assert [row["round"] for row in new["rounds"]] == [1, 2]
    assert new["initial"] == {"central_loss": 2.3, "central_accuracy": 0.1}
    assert new["participation"] == {"101": {"asked": 2, "contributed": 1}}
    old = json.loads((run_dir / "metrics.json").read_text())
    assert (old["status"], old["continued_by"]) == ("interrupted", 12)
    assert resume_point(run_dir) is None  # not picked up a second time


def test_continue_run_without_state_or_a_folder(tmp_path: Path) -> None:
    """A stateless strategy and a run without files: weights only, the old record marked."""
    # Prepare
    run_dir, saved = _interrupted(tmp_path, with_state=False)
    point = resume_point(run_dir)
    assert point is not None and not point.state.exists()
    model, strategy = _tiny_model(3), Adam()
    recorder = RunRecorder(None, {"run_id": 12, "num_rounds": 5})
    # Execute
    offset = continue_run(point, 12, model, strategy, recorder)
    # Assert
    assert offset == 2
    np.testing.assert_almost_equal(model.get_weights()[0], saved.get_weights()[0])
    assert strategy.m_t is None and strategy.v_t is None
    assert recorder.record["run"]["resumed_from"] == {"run_id": 11, "round": 2}
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["run-11"]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
