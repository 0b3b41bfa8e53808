"""RunWatch: what the run loop calls; it keeps files current and never ends a run."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
from records import sample_record

from fedfleet.server.run.watch import RunWatch
from fedfleet.shared.registry import read_registry


def test_a_run_seen_round_by_round(tmp_path: Path) -> None:
    """Checkpoints registered, plots and TensorBoard after each round, report at the end."""
    full = sample_record(3)
    (tmp_path / "checkpoints").mkdir()
    watch = RunWatch(tmp_path, tmp_path / "tb")
    record = {**copy.deepcopy(full), "rounds": []}
    watch.initial(record)
    for row in full["rounds"]:
        record["rounds"].append(row)
        checkpoint = tmp_path / "checkpoints" / row["checkpoint"]
        checkpoint.write_bytes(b"weights %d" % row["round"])
        watch.round_done(record, checkpoint)
        assert len(read_registry(tmp_path) or []) == row["round"]
        assert (tmp_path / "plots" / "accuracy.png").is_file()
    (tmp_path / "final_model.keras").write_bytes(b"final")
    report = watch.run_done(record, tmp_path / "final_model.keras")
    assert report == tmp_path / "report.html" and report.is_file()
    entries = read_registry(tmp_path) or []
    assert [e["file"] for e in entries][-1] == "final_model.keras" and entries[-1]["final"]
    assert any((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert watch.plot_seconds > 0


def test_failures_are_warnings_not_the_end_of_the_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An unwritable run folder: every call returns, each failure is logged."""
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    watch = RunWatch(blocked, None)
    with caplog.at_level(logging.WARNING, logger="fedfleet"):
        watch.round_done(sample_record(2), blocked / "nope.keras")
        assert watch.run_done(sample_record(2)) is None
    assert "Could not draw the plots" in caplog.text
    assert "Could not write the report" in caplog.text


def test_without_outputs_nothing_is_written(tmp_path: Path) -> None:
    """A run without an output folder (output-dir '') only feeds TensorBoard."""
    watch = RunWatch(None, tmp_path / "tb")
    watch.round_done(sample_record(1))
    assert watch.run_done(sample_record(1)) is None
    assert [p.parent.name for p in tmp_path.rglob("events.out.tfevents.*")] == ["tb"]
