"""PromptGrid: replies collected as they come; a round closes at quorum + grace.

The grid runs on a fake clock (sleeping advances it), so the timing is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from flwr.app import Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfleet.server import grid as grid_module
from fedfleet.server.grid import PromptGrid
from fedfleet.server.intake import DEADLINE_CODE
from fedfleet.server.progress import ProgressFile, read_progress

SILENT = None
ERROR = -1.0


class Clock:
    """monotonic() and sleep() of a clock that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """Run PromptGrid on a fake clock; Flower messages need a task identity."""
    fake = Clock()
    monkeypatch.setattr(grid_module, "time", fake)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield fake


class ScriptedGrid:
    """Node n answers after ``delays[n]`` seconds (SILENT: never; ERROR: an error)."""

    def __init__(self, clock: Clock, delays: dict[int, float | None],
                 from_superlink: bool = False) -> None:
        self.clock = clock
        self.delays = delays
        self.from_superlink = from_superlink
        self.start = 0.0
        self.pulls = 0
        self.sent: dict[str, Message] = {}
        self.given: set[str] = set()

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        self.start = self.clock.now
        ids = []
        for i, msg in enumerate(messages):
            msg.metadata.__dict__["_message_id"] = f"m{i}"
            self.sent[f"m{i}"] = msg
            ids.append(f"m{i}")
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        out = []
        for mid in ids:
            msg = self.sent[mid]
            delay = self.delays[msg.metadata.dst_node_id]
            if mid in self.given or delay is SILENT or \
                    self.clock.now - self.start < abs(delay):
                continue
            self.given.add(mid)
            if delay == ERROR:
                reply = Message(Error(5, "node unavailable"), reply_to=msg)
                if self.from_superlink:
                    reply.metadata.__dict__["_src_node_id"] = 1
            else:
                reply = Message(RecordDict(), reply_to=msg)
            out.append(reply)
        return out


def _send(clock: Clock, delays: dict[int, float | None], timeout: float = 300.0,
          **options: float) -> tuple[dict[int, Message], float]:
    inner = ScriptedGrid(clock, delays, bool(options.pop("from_superlink", False)))
    grid = PromptGrid(inner, **options)  # type: ignore[arg-type]
    start = clock.now
    messages = [Message(RecordDict(), dst_node_id=node, message_type="train")
                for node in delays]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    assert len(replies) == len(delays)
    return {r.metadata.src_node_id: r for r in replies}, clock.now - start


def _late(reply: Message) -> bool:
    return reply.has_error() and reply.error.code == DEADLINE_CODE


def test_replies_are_collected_promptly(clock: Clock) -> None:
    """Replies are pulled every poll interval, not on Flower's 3-second tick."""
    replies, took = _send(clock, {11: 0.3, 12: 0.6, 13: 0.9}, poll=0.05)
    assert not any(r.has_error() for r in replies.values())
    assert took == pytest.approx(0.9, abs=0.06)


def test_a_silent_device_costs_the_grace_not_the_deadline(clock: Clock) -> None:
    """Two of three answer at 8 s: the round closes at 8 + max(10, 1.0 x 8) s."""
    replies, took = _send(clock, {1: 8.0, 2: 8.0, 3: SILENT}, quorum=0.5, grace=1.0)
    assert took == pytest.approx(18.0, abs=0.3)
    assert _late(replies[3]) and not replies[1].has_error()
    assert replies[3].error.reason.startswith(
        "no reply by the deadline (the round closed after 18.")
    assert "with 2 of 3 replies" in replies[3].error.reason


def test_a_slow_but_honest_device_makes_the_grace(clock: Clock) -> None:
    """The grace scales with the quorum's time: a device 1.9x slower still counts."""
    replies, took = _send(clock, {1: 20.0, 2: 21.0, 3: 38.0}, quorum=0.5, grace=1.0)
    assert not any(r.has_error() for r in replies.values())
    assert took == pytest.approx(38.0, abs=0.3)
    replies, _ = _send(clock, {1: 20.0, 2: 21.0, 3: 45.0}, quorum=0.5, grace=1.0)
    assert _late(replies[3])


def test_errors_do_not_count_towards_the_quorum(clock: Clock) -> None:
    """Two devices fail at once: the round still waits for the third's real reply."""
    replies, took = _send(clock, {1: ERROR, 2: ERROR, 3: 60.0}, quorum=0.5)
    assert not replies[3].has_error() and took == pytest.approx(60.0, abs=0.3)


def test_quorum_one_waits_for_everyone_up_to_the_timeout(clock: Clock) -> None:
    """With quorum 1 the deadline is the timeout; who missed it is named."""
    delays: dict[int, float | None] = {n: 0.3 * n for n in range(1, 11)}
    replies, took = _send(clock, delays, timeout=1.05, poll=0.05)
    assert took == pytest.approx(1.05, abs=0.06)
    assert sorted(n for n, r in replies.items() if _late(r)) == [4, 5, 6, 7, 8, 9, 10]


def test_a_superlink_error_reply_names_the_device(clock: Clock) -> None:
    """Node-unavailable replies come from the SuperLink's id; they are re-addressed."""
    replies, _ = _send(clock, {7: 1.0, 8: ERROR}, from_superlink=True)
    assert set(replies) == {7, 8}
    assert replies[8].error.reason == "node unavailable"


def test_live_progress_hears_of_every_device(clock: Clock, tmp_path: Path) -> None:
    """The progress file says who was asked, who answered, who failed, who was silent."""
    progress = ProgressFile(tmp_path, num_rounds=3)
    progress.round(2)
    inner = ScriptedGrid(clock, {1: 2.0, 2: ERROR, 3: SILENT})
    grid = PromptGrid(inner, quorum=0.5, grace=1.0, progress=progress)  # type: ignore[arg-type]
    messages = [Message(RecordDict(), dst_node_id=node, message_type="train")
                for node in (1, 2, 3)]
    list(grid.send_and_receive(messages, timeout=300))
    state = read_progress(tmp_path)
    assert state is not None and (state["round"], state["phase"]) == (2, "train")
    assert state["devices"] == {"1": "replied", "2": "failed", "3": "no reply"}
