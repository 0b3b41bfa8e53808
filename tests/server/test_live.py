"""The live view: the round in flight, its devices, the finished rounds, the estimate."""

from __future__ import annotations

import io
from pathlib import Path

from fedfleet.server.host.live import LiveView, estimate_left, frame
from fedfleet.server.run.progress import ProgressFile, RoundProgress, read_progress
from fedfleet.shared.runrecord import RoundRow, RunRecord

NOW = 10_000.0


def _record(done: int, total: int = 5) -> RunRecord:
    rows: list[RoundRow] = [
        {"round": n, "wall_s": 10.0 + n, "train_replies": 3, "train_failures": 0,
         "train_loss": 1.0 / n, "eval_accuracy": 0.5 + n / 20,
         "central_accuracy": 0.6 + n / 20} for n in range(1, done + 1)]
    if rows:
        rows[-1].update(train_replies=2, train_failures=1, rejected_replies=1)
    return {"run": {"run_id": 7, "num_rounds": total, "started_at": NOW - 95},
            "status": "running", "initial": None, "rounds": rows}


def _progress(run_round: int, started: float) -> RoundProgress:
    return {"round": run_round, "num_rounds": 5, "phase": "train", "started_at": started,
            "devices": {"31": "replied", "32": "working", "33": "rejected"}}


def test_a_round_in_flight_shows_every_device_and_the_table() -> None:
    lines = frame(_record(2), _progress(3, NOW - 4), 7, now=NOW)
    assert lines[0] == ("run 7 · round 3/5 (train, 4s in) · elapsed 1m35s · "
                        "about 30s left")  # 30.5 s, rounded to even
    assert lines[1:4] == ["  node 31                     replied",
                          "  node 32                     working 4s",
                          "  node 33                     rejected"]
    assert lines[4].split() == ["round", "time", "replies", "train", "loss", "client",
                                "acc", "test", "acc"]
    assert lines[5].split() == ["1", "11.0s", "3", "1.0000", "55.00%", "65.00%"]
    assert lines[6].split() == ["2", "12.0s", "2", "(1", "rej)", "0.5000", "60.00%",
                                "70.00%"]


def test_the_estimate_is_the_median_round_times_the_rounds_to_go() -> None:
    record = _record(2)  # rounds of 11 and 12 s: median 11.5 s, 3 rounds to go
    assert estimate_left(record, None, NOW) == 34.5
    assert estimate_left(record, _progress(3, NOW - 4), NOW) == 30.5
    assert estimate_left(_record(0), None, NOW) is None


def test_a_finished_run_shows_its_status_and_no_devices() -> None:
    record = _record(5)
    record["status"] = "completed"
    lines = frame(record, _progress(5, NOW - 50), 7, now=NOW)
    assert lines[0] == "run 7 · 5/5 rounds completed · elapsed 1m35s"
    assert not any(line.startswith("  node") for line in lines)


def test_a_long_run_keeps_the_table_short() -> None:
    lines = frame(_record(30, total=40), None, 7, now=NOW)
    assert "... 18 earlier rounds in metrics.json" in lines[2]
    assert lines[-1].split()[0] == "30" and len(lines) == 3 + 12


def test_many_devices_are_counted_not_listed() -> None:
    progress = _progress(1, NOW)
    progress["devices"] = {str(n): "replied" if n % 3 else "working" for n in range(40)}
    lines = frame(_record(0), progress, 7, now=NOW)
    assert lines[1] == "  26 replied, 14 working (of 40 devices asked)"


def test_before_the_first_record() -> None:
    assert frame(None, None, 7) == ["run 7: starting (waiting for its first record)"]


def test_the_view_redraws_in_place() -> None:
    """The second frame first moves the cursor up over the first and clears it."""
    out = io.StringIO()
    view = LiveView(out, 7)
    view.show(_record(1), None)
    first = out.getvalue()
    view.show(_record(2), None)
    second = out.getvalue()[len(first):]
    assert not first.startswith("\x1b")
    assert second.startswith(f"\x1b[{first.count(chr(10))}F\x1b[J")


def test_the_progress_file_follows_a_round(tmp_path: Path) -> None:
    progress = ProgressFile(tmp_path, num_rounds=5)
    progress.round(2)
    progress.asked("train", ["1", "2", "3"])
    progress.answered("1", ok=True)
    progress.answered("2", ok=False)
    progress.rejected(["1"])
    progress.silent(["3"])
    state = read_progress(tmp_path)
    assert state is not None
    assert (state["round"], state["phase"]) == (2, "train")
    assert state["devices"] == {"1": "rejected", "2": "failed", "3": "no reply"}
    assert read_progress(tmp_path / "nowhere") is None
    ProgressFile(None, 5).asked("train", ["1"])  # no folder: nothing written, no error
