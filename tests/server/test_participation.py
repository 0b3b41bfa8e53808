"""Per device: rounds asked in and contributed to, and the straggler warning.

The recorder counts what the intake made of each round's train replies; readers (the
report, the live view, ``fedfleet fleet status``) show it, and read older records
that have no ``participation`` by counting their rounds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from records import NODES, sample_record

from fedfleet.server.fleet.records import newest_records, participation
from fedfleet.server.fleet.status import render as _table
from fedfleet.server.host.live import frame
from fedfleet.server.results.report import render_report
from fedfleet.server.results.run_files import RunFiles
from fedfleet.server.run.intake import IntakeResult, Rejection, ReplyReport
from fedfleet.server.run.progress import RoundProgress
from fedfleet.server.run.recorder import RunRecorder
from fedfleet.shared.recordview import RecordView
from fedfleet.shared.runrecord import read_record, round_line

LATE = "no reply by the deadline (the round closed after 14.0s with 2 of 3 replies)"


def _round(recorder: RunRecorder, run_round: int, contributed: list[str],
           late: list[str]) -> None:
    """One round in which ``contributed`` were accepted and ``late`` did not answer."""
    recorder.begin_round(run_round)
    result = IntakeResult(
        reports=[ReplyReport(node, {"train_time_s": 1.0}, weight=100.0)
                 for node in contributed],
        rejected=[Rejection(node, "deadline", LATE) for node in late])
    recorder.train_replies(result)
    recorder.end_round(None, None)


def test_contributions_are_counted_per_device_in_the_record(tmp_path: Path) -> None:
    """Asked in 4 rounds, device 3 contributed to 2; the written record says so."""
    # Prepare
    files = RunFiles(tmp_path / "run-1")
    recorder = RunRecorder(files, {"run_id": 1, "num_rounds": 4})
    # Execute
    _round(recorder, 1, ["1", "2"], ["3"])
    _round(recorder, 2, ["1", "2", "3"], [])
    _round(recorder, 3, ["1", "3"], [])  # device 2 not sampled in round 3
    _round(recorder, 4, ["1", "2"], ["3"])
    # Assert
    saved = read_record(files.directory)
    assert saved is not None
    assert saved["participation"] == {
        "1": {"asked": 4, "contributed": 4, "missed_in_a_row": 0, "last_contributed": 4},
        "2": {"asked": 3, "contributed": 3, "missed_in_a_row": 0, "last_contributed": 4},
        "3": {"asked": 4, "contributed": 2, "missed_in_a_row": 1, "last_contributed": 3}}
    assert RecordView(saved).participation() == saved["participation"]


def test_the_straggler_warning_fires_after_k_missed_rounds_and_not_before(
        caplog: pytest.LogCaptureFixture) -> None:
    """K = 3: warned in the round of its third miss in a row, once; a reply resets it."""
    # Prepare
    recorder = RunRecorder(None, {"run_id": 1, "num_rounds": 9}, straggler_rounds=3)
    caplog.set_level(logging.WARNING, logger="fedfleet")
    warned: list[list[str]] = []
    # Execute
    for run_round, ok in enumerate([False, False, False, False, True, False, False,
                                    False, False], start=1):
        caplog.clear()
        _round(recorder, run_round, ["1", "2"] + (["3"] if ok else []),
               [] if ok else ["3"])
        warned.append(recorder.rounds[-1].get("stragglers", []))
        assert ("Node 3 contributed to none of the last 3 rounds" in caplog.text) == \
            bool(warned[-1])
    # Assert
    assert warned == [[], [], ["3"], [], [], [], [], ["3"], []]
    assert "1 straggling" in round_line(recorder.rounds[2])
    assert "straggling" not in round_line(recorder.rounds[1])
    assert recorder.record["participation"]["3"]["missed_in_a_row"] == 4


def test_a_device_not_asked_keeps_its_streak() -> None:
    """Rounds a device was not sampled in count neither way (K = 2)."""
    # Prepare
    recorder = RunRecorder(None, {"run_id": 1, "num_rounds": 3}, straggler_rounds=2)
    # Execute
    _round(recorder, 1, ["1"], ["3"])
    _round(recorder, 2, ["1"], [])
    _round(recorder, 3, ["1"], ["3"])
    # Assert
    assert [r.get("stragglers") for r in recorder.rounds] == [None, None, ["3"]]
    assert recorder.record["participation"]["3"]["asked"] == 2


def test_an_old_record_without_participation_still_reads(tmp_path: Path) -> None:
    """Counted from its rounds: the last node was rejected in round 2, silent in 3."""
    # Prepare
    record = sample_record(rounds=5)
    assert "participation" not in record
    # Execute
    book = RecordView(record).participation()
    page = render_report(tmp_path, record)
    # Assert
    assert book[NODES[0]] == {"asked": 5, "contributed": 5, "missed_in_a_row": 0,
                              "last_contributed": 5}
    assert book[NODES[2]] == {"asked": 5, "contributed": 3, "missed_in_a_row": 0,
                              "last_contributed": 5}
    assert "<h2>Devices</h2>" in page and f"<td class=\"text\">{NODES[2]}</td>" in page
    assert RecordView({"participation": {"7": "junk", "8": {"asked": "x"}}}
                      ).participation() == {"8": {"asked": 0, "contributed": 0,
                                                   "missed_in_a_row": 0,
                                                   "last_contributed": None}}


def test_the_report_flags_a_straggler() -> None:
    """The devices table shows asked/contributed and the warning past K misses."""
    # Prepare
    recorder = RunRecorder(None, {"run_id": 1, "num_rounds": 3,
                                  "settings": {"straggler-rounds": 2}},
                           straggler_rounds=2)
    for run_round in (1, 2, 3):
        _round(recorder, run_round, ["1"], ["3"])
    # Execute
    page = render_report(Path("."), dict(recorder.record))
    # Assert
    assert "<td>3</td><td>0</td><td>0%</td><td></td><td>3</td>" \
           "<td class=\"text\">contributed to none of its last 3 rounds</td>" in page
    assert "<td>3</td><td>3</td><td>100%</td><td>3</td><td>0</td>" in page


def test_the_live_view_shows_contributions_and_stragglers() -> None:
    """Each device line says contributed/asked; a line names the stragglers."""
    # Prepare
    recorder = RunRecorder(None, {"run_id": 7, "num_rounds": 5, "started_at": 1000.0,
                                  "settings": {"straggler-rounds": 2}},
                           straggler_rounds=2)
    for run_round in (1, 2):
        _round(recorder, run_round, ["1"], ["3"])
    progress: RoundProgress = {"round": 3, "num_rounds": 5, "phase": "train",
                               "started_at": 1090.0,
                               "devices": {"1": "replied", "3": "working"}}
    # Execute
    lines = frame(recorder.record, progress, 7, now=1100.0)
    # Assert
    assert lines[1].split() == ["node", "1", "replied", "contributed", "to", "2", "of",
                                "2", "rounds"]
    assert lines[2].split()[:4] == ["node", "3", "working", "10s"]
    assert lines[2].endswith("contributed to 0 of 2 rounds")
    assert lines[3] == ("  ! contributed to none of the last 2 rounds they were asked "
                        "in: node 3")


def test_fleet_status_shows_the_newest_runs_counts(tmp_path: Path) -> None:
    """ROUNDS is contributed/asked from the newest run that asked the node."""
    # Prepare
    old = sample_record(rounds=5)  # no participation: counted from rounds
    old["run"]["run_id"], old["run"]["started_at"] = 1, 100.0
    new = {"run": {"run_id": 2, "started_at": 200.0}, "rounds": [],
           "participation": {NODES[0]: {"asked": 4, "contributed": 1,
                                        "missed_in_a_row": 3, "last_contributed": 1}}}
    for record in (old, new):
        folder = tmp_path / f"run-{record['run']['run_id']}"
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps(record))
    # Execute
    taken = participation(newest_records(tmp_path))
    table = _table([{"device": "edge-1", "reachable": True, "node_id": NODES[0],
                     "rounds": f"{taken[NODES[0]][1]}/{taken[NODES[0]][2]}"}])
    # Assert
    assert taken[NODES[0]] == (2, 1, 4)
    assert taken[NODES[2]] == (1, 3, 5)
    assert "ROUNDS" in table.splitlines()[0] and " 1/4 " in table.splitlines()[1]
