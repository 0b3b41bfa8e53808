"""--keep-checkpoints: newest N and the best stay, nothing outside the folder is touched."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fedfleet.server.results.retention import best_round, prune_checkpoints, rounds_to_keep
from fedfleet.server.run.resume import resume_point
from fedfleet.server.run.watch import RunWatch
from fedfleet.shared.cli import cli
from fedfleet.shared.errors import ConfigError
from fedfleet.shared.registry import read_registry, verify_entry
from fedfleet.shared.settings import RunSettings


def _row(r: int, acc: float | None = None, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"round": r, "checkpoint": f"round-{r:03d}.keras", **extra}
    if acc is not None:
        row["central_accuracy"] = acc
    return row


def _save(run_dir: Path, r: int) -> Path:
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"round-{r:03d}.state.npz").write_bytes(b"state %d" % r)
    path = folder / f"round-{r:03d}.keras"
    path.write_bytes(b"model %d" % r)
    return path


def _rounds_on_disk(run_dir: Path) -> list[int]:
    keras = sorted(int(p.name[6:9]) for p in (run_dir / "checkpoints").glob("*.keras"))
    state = sorted(int(p.name[6:9]) for p in (run_dir / "checkpoints").glob("*.state.npz"))
    assert keras == state  # a round's two files go together
    return keras


def test_round_by_round_the_newest_and_the_best_stay(tmp_path: Path) -> None:
    """Keep 2 over 8 rounds, best in round 3: 3 and the newest two remain; registry marked."""
    accuracies = [0.5, 0.7, 0.95, 0.8, 0.85, 0.9, 0.6, 0.92]
    watch = RunWatch(tmp_path, None, keep_checkpoints=2)
    record: dict[str, Any] = {"run": {"run_id": 1, "num_rounds": 8}, "rounds": []}
    for r, acc in enumerate(accuracies, start=1):
        record["rounds"].append(_row(r, acc))
        watch.round_done(record, _save(tmp_path, r))
        on_disk = _rounds_on_disk(tmp_path)
        assert r in on_disk and len(on_disk) <= 3
        if r >= 3:
            assert 3 in on_disk
    assert _rounds_on_disk(tmp_path) == [3, 7, 8]

    entries = {e["file"]: e for e in read_registry(tmp_path) or []}
    assert len(entries) == 8  # deleted checkpoints stay listed, marked
    removed = sorted(f for f, e in entries.items() if e.get("removed"))
    assert removed == [f"checkpoints/round-{r:03d}.keras" for r in (1, 2, 4, 5, 6)]
    assert all("--keep-checkpoints 2" in entries[f]["removed"] and entries[f]["removed_at"]
               for f in removed)
    assert {verify_entry(tmp_path, e) for e in entries.values()} == {"ok", "removed"}
    listed = CliRunner().invoke(cli, ["models", str(tmp_path), "--verify"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("removed") == 5


def test_best_and_last_are_never_deleted_whatever_the_scores(tmp_path: Path) -> None:
    """Random scores, random N: best and last present, at most N + 1 rounds."""
    rng = random.Random(7)
    for trial in range(30):
        run_dir = tmp_path / f"run-{trial}"
        keep = rng.randint(1, 4)
        rows: list[dict[str, Any]] = []
        for r in range(1, rng.randint(1, 12) + 1):
            rows.append(_row(r, rng.choice([0.1, 0.5, 0.9, None])))
            _save(run_dir, r)
            prune_checkpoints(run_dir, rows, keep)
            on_disk = _rounds_on_disk(run_dir)
            best = best_round(rows)
            assert r in on_disk and len(on_disk) <= keep + 1, (keep, rows, on_disk)
            assert best is None or best in on_disk
            assert on_disk[-min(keep, r):] == list(range(max(1, r - keep + 1), r + 1))


def test_best_falls_back_to_client_evaluation_and_ties_keep_the_earliest() -> None:
    """No test set: eval_accuracy decides; equal scores: the earlier round."""
    assert best_round([_row(1, 0.8), _row(2, 0.9), _row(3, 0.9)]) == 2
    rows = [_row(1, eval_accuracy=0.4), _row(2, eval_accuracy=0.7), _row(3)]
    assert best_round(rows) == 2
    assert best_round([_row(1), _row(2)]) is None
    assert rounds_to_keep([1, 2, 3, 4], 0, None) == {1, 2, 3, 4}
    assert rounds_to_keep([1, 2, 3, 4], 1, 2, last=4) == {2, 4}
    assert rounds_to_keep([1, 2, 3, 4], 1, 9, last=3) == {3, 4}  # absent best ignored


def test_keep_zero_keeps_everything(tmp_path: Path) -> None:
    """The default: today's behaviour, every checkpoint stays."""
    watch = RunWatch(tmp_path, None)
    record: dict[str, Any] = {"rounds": []}
    for r in range(1, 5):
        record["rounds"].append(_row(r, 0.1 * r))
        watch.round_done(record, _save(tmp_path, r))
    assert _rounds_on_disk(tmp_path) == [1, 2, 3, 4]
    assert not any(e.get("removed") for e in read_registry(tmp_path) or [])


def test_an_interrupted_pruned_run_resumes_from_its_last_round(tmp_path: Path) -> None:
    """After pruning, resume still finds the last checkpoint.

    The continuation's own folder (holding the round it started from) is pruned the
    same way.
    """
    first = tmp_path / "run-1"
    settings = RunSettings(num_rounds=10, keep_checkpoints=1).to_run_config()
    rows = [_row(r, acc) for r, acc in enumerate([0.9, 0.5, 0.6, 0.7], start=1)]
    for r in range(1, 5):
        _save(first, r)
        prune_checkpoints(first, rows[:r], 1)
    (first / "metrics.json").write_text(json.dumps({
        "run": {"run_id": 1, "num_rounds": 10, "settings": settings},
        "status": "running", "rounds": rows}))
    assert _rounds_on_disk(first) == [1, 4]
    point = resume_point(first)
    assert point is not None and point.last_round == 4 and point.checkpoint.exists()

    second = tmp_path / "run-2"  # continue_run copied round 4 in; rounds 5, 6 follow
    _save(second, 4)
    rows += [_row(5, 0.65), _row(6, 0.66)]
    for r in (5, 6):
        _save(second, r)
        prune_checkpoints(second, rows[:r], 1)
    assert _rounds_on_disk(second) == [6]  # the best (round 1) lives in run-1
    assert _rounds_on_disk(first) == [1, 4]


def test_a_planted_symlink_never_deletes_outside_the_folder(tmp_path: Path) -> None:
    """Symlinks named like checkpoints, or in place of checkpoints/, delete nothing."""
    outside = tmp_path / "precious"
    outside.mkdir()
    victim = outside / "round-001.keras"
    victim.write_bytes(b"not ours")
    (outside / "round-002.keras").write_bytes(b"not ours either")

    run_dir = tmp_path / "run"
    for r in (3, 4, 5):
        _save(run_dir, r)
    planted = run_dir / "checkpoints" / "round-001.keras"
    planted.symlink_to(victim)
    (run_dir / "checkpoints" / "round-002.state.npz").mkdir()  # not a regular file
    rows = [_row(r, acc) for r, acc in enumerate([0.5, 0.5, 0.9, 0.5, 0.5], start=1)]
    pruned = prune_checkpoints(run_dir, rows, 1)
    assert victim.read_bytes() == b"not ours" and planted.is_symlink()
    assert (run_dir / "checkpoints" / "round-002.state.npz").is_dir()
    assert pruned.removed == (4,) and pruned.kept == (3, 5)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "round-001.keras", "round-002.state.npz", "round-003.keras",
        "round-003.state.npz", "round-005.keras", "round-005.state.npz"]

    elsewhere = tmp_path / "run-b"
    elsewhere.mkdir()
    (elsewhere / "checkpoints").symlink_to(outside)
    assert prune_checkpoints(elsewhere, rows, 1).removed == ()
    assert sorted(p.name for p in outside.iterdir()) == ["round-001.keras",
                                                         "round-002.keras"]


def test_the_setting_is_checked_and_travels_in_the_run_config() -> None:
    """Negative is refused; the value survives the run config round trip."""
    with pytest.raises(ConfigError, match="keep-checkpoints must be >= 0"):
        RunSettings(keep_checkpoints=-1)
    config = RunSettings(keep_checkpoints=3).to_run_config()
    assert config["keep-checkpoints"] == 3
    assert RunSettings.from_run_config(config).keep_checkpoints == 3
