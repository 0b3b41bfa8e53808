"""Following a run: rounds printed once each, every way a run ends is told apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fakeclock import FakeClock

from fedfleet.server.host import follower as follower_module
from fedfleet.server.host.follower import RunFollower
from fedfleet.shared.errors import FedfleetError
from fedfleet.shared.runrecord import summary

RUN_ID = 17


class FakeControl:
    """Answers ``run()`` with a status row; counts the calls."""

    def __init__(self, status: str = "running", details: str = "") -> None:
        self.status, self.details, self.calls = status, details, 0

    def run(self, run_id: int) -> dict[str, Any]:
        self.calls += 1
        return {"run-id": run_id, "status": self.status, "status-details": self.details}


def _row(n: int) -> dict[str, Any]:
    return {"round": n, "wall_s": 1.5, "train_replies": 2, "train_failures": 0,
            "train_loss": 0.5 / n, "central_accuracy": 0.5 + n / 10}


def _write(out: Path, status: str, rounds: int, error: str | None = None) -> None:
    run_dir = out / f"run-{RUN_ID}"
    run_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"run": {"run_id": RUN_ID, "num_rounds": 3},
                              "status": status, "rounds": [_row(n) for n in
                                                           range(1, rounds + 1)]}
    if error:
        record["error"] = error
    (run_dir / "metrics.json").write_text(json.dumps(record))


def _follower(out: Path, control: FakeControl, lines: list[str]) -> RunFollower:
    return RunFollower(control, RUN_ID, out, on_line=lines.append,  # type: ignore[arg-type]
                       status_every=0.0)


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Run the follower on a fake clock: no test here sleeps for real."""
    fake = FakeClock()
    monkeypatch.setattr(follower_module, "time", fake)
    return fake


def test_each_round_is_printed_once_and_the_record_returned(tmp_path: Path,
                                                            clock: FakeClock) -> None:
    """Rounds appear while the run goes on; each is printed exactly once."""
    # Prepare: a round every 1.2 s, the follower looking every second
    lines: list[str] = []
    _write(tmp_path, "running", 1)
    clock.at(1.2, lambda: _write(tmp_path, "running", 2))
    clock.at(2.4, lambda: _write(tmp_path, "completed", 3))
    # Execute
    record = _follower(tmp_path, FakeControl(), lines).follow()
    # Assert
    assert record["status"] == "completed"
    assert [line.split(" | ")[0] for line in lines] == ["round 1/3", "round 2/3",
                                                        "round 3/3"]
    assert summary(record, tmp_path / "run-17") == (
        f"done: run 17 finished 3 rounds, final accuracy 80.00%; outputs in "
        f"{tmp_path / 'run-17'}")


def test_a_failed_run_raises_with_its_error(tmp_path: Path) -> None:
    _write(tmp_path, "failed", 1, error="no client could train in round 2")
    lines: list[str] = []
    with pytest.raises(FedfleetError, match="run 17 failed: no client could train"):
        _follower(tmp_path, FakeControl(), lines).follow()
    assert len(lines) == 1  # the round that did finish is still shown


def test_a_superlink_that_died_ends_the_wait(tmp_path: Path) -> None:
    with pytest.raises(FedfleetError, match="the SuperLink exited during the run"):
        _follower(tmp_path, FakeControl(), []).follow(alive=lambda: False)


def test_a_run_flower_ended_before_its_record_did(tmp_path: Path) -> None:
    """Flower says finished (e.g. stopped or crashed) but the record still runs."""
    _write(tmp_path, "running", 1)
    control = FakeControl("finished:failed", "ServerApp crashed")
    with pytest.raises(FedfleetError, match="run 17 ended as finished:failed: "
                       "ServerApp crashed before it finished"):
        _follower(tmp_path, control, []).follow()
    assert control.calls >= 1


def test_a_run_that_never_wrote_a_record(tmp_path: Path) -> None:
    with pytest.raises(FedfleetError, match="ended as finished:stopped"):
        _follower(tmp_path, FakeControl("finished:stopped"), []).follow()


def test_a_live_view_gets_the_record_and_the_round_in_flight(tmp_path: Path) -> None:
    """With a view, rounds are not printed as lines; the view sees both files."""
    _write(tmp_path, "completed", 3)
    (tmp_path / "run-17" / "progress.json").write_text(json.dumps(
        {"round": 3, "num_rounds": 3, "phase": "evaluate", "started_at": 1.0,
         "devices": {"5": "replied"}}))
    lines: list[str] = []
    seen: list[tuple[Any, Any]] = []
    follower = _follower(tmp_path, FakeControl(), lines)
    follower.show = lambda record, progress: seen.append((record, progress))
    follower.follow()
    assert lines == []
    (record, progress), = seen
    assert record["status"] == "completed" and progress["devices"] == {"5": "replied"}
