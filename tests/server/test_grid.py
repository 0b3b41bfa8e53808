"""PromptGrid: replies collected as they come; a round closes at quorum + grace.

The grid runs on a fake clock (sleeping advances it), so the timing is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from fakeclock import FakeClock as Clock
from flwr.app import Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfleet.server.run import grid as grid_module
from fedfleet.server.run.grid import PromptGrid, WrappedGrid
from fedfleet.server.run.intake import DEADLINE_CODE
from fedfleet.server.run.pace import ALPHA, CLIP, Pace, PaceBook
from fedfleet.server.run.progress import ProgressFile, read_progress

SILENT = None
ERROR = -1.0


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    """Run PromptGrid on a fake clock; Flower messages need a task identity."""
    fake = Clock(start=1000.0)
    monkeypatch.setattr(grid_module, "time", fake)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield fake


class ScriptedGrid:
    """Node n answers ``delays[n]`` seconds after a message reaches it.

    SILENT: never; ERROR: an error (from the SuperLink's id with ``from_superlink``).
    A node in ``away`` is offline until that many seconds after the first push: the
    SuperLink answers its messages "node unavailable" and ``get_node_ids`` leaves it out.
    """

    def __init__(self, clock: Clock, delays: dict[int, float | None],
                 from_superlink: bool = False, away: dict[int, float] | None = None) -> None:
        self.clock = clock
        self.delays = delays
        self.from_superlink = from_superlink
        self.away = away or {}
        self.start: float | None = None
        self.pulls = 0
        self.sent: dict[str, tuple[Message, float]] = {}
        self.given: set[str] = set()

    def _offline(self, node: int) -> bool:
        assert self.start is not None
        return self.clock.now - self.start < self.away.get(node, 0.0)

    def get_node_ids(self) -> list[int]:
        return [node for node in self.delays if not self._offline(node)]

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        if self.start is None:
            self.start = self.clock.now
        ids = []
        for msg in messages:
            mid = f"m{len(self.sent)}"
            msg.metadata.__dict__["_message_id"] = mid
            self.sent[mid] = (msg, self.clock.now)
            ids.append(mid)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        self.pulls += 1
        out = []
        for mid in ids:
            msg, pushed = self.sent[mid]
            node = msg.metadata.dst_node_id
            delay = self.delays[node]
            if mid in self.given:
                continue
            if self._offline(node):
                reply = Message(Error(5, "Error: Node Unavailable"), reply_to=msg)
                reply.metadata.__dict__["_src_node_id"] = 1
            elif delay is SILENT or self.clock.now - pushed < abs(delay):
                continue
            elif delay == ERROR:
                reply = Message(Error(5, "node unavailable"), reply_to=msg)
                if self.from_superlink:
                    reply.metadata.__dict__["_src_node_id"] = 1
            else:
                reply = Message(RecordDict(), reply_to=msg)
            self.given.add(mid)
            out.append(reply)
        return out


def _send(clock: Clock, delays: dict[int, float | None], timeout: float = 300.0,
          away: dict[int, float] | None = None, **options: float
          ) -> tuple[dict[int, Message], float]:
    inner = ScriptedGrid(clock, delays, bool(options.pop("from_superlink", False)), away)
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


def test_a_device_that_restarts_mid_round_is_asked_again(clock: Clock) -> None:
    """Its SuperNode stops (an update): back after 20 s, it gets the message again."""
    replies, took = _send(clock, {1: 3.0, 2: 3.0}, away={2: 20.0})
    assert not any(r.has_error() for r in replies.values())
    assert 23.0 <= took <= 23.0 + grid_module.RETURN_CHECK + 0.5


def test_a_device_away_past_the_grace_keeps_the_superlinks_reason(clock: Clock) -> None:
    """Not back when the round closes (quorum + grace): the SuperLink's error stands."""
    replies, took = _send(clock, {1: 3.0, 2: 3.0}, away={2: 60.0}, quorum=0.5, grace=1.0)
    assert took == pytest.approx(13.0, abs=0.3)
    assert replies[2].has_error() and replies[2].error.reason == "Error: Node Unavailable"
    assert replies[2].metadata.src_node_id == 2


def test_a_device_that_keeps_going_away_is_asked_a_bounded_number_of_times(
        clock: Clock) -> None:
    """Online in the node list but unavailable on every pull: asked MAX_RESENDS times."""
    inner = ScriptedGrid(clock, {1: 1.0, 2: 1.0}, away={2: 1e9})
    inner.get_node_ids = lambda: [1, 2]  # type: ignore[method-assign]
    grid = PromptGrid(inner)  # type: ignore[arg-type]
    messages = [Message(RecordDict(), dst_node_id=node, message_type="train")
                for node in (1, 2)]
    replies = list(grid.send_and_receive(messages, timeout=300))
    assert len(replies) == 2 and sum(r.has_error() for r in replies) == 1
    pushed_to_2 = [m for m, _ in inner.sent.values() if m.metadata.dst_node_id == 2]
    assert len(pushed_to_2) == 1 + grid_module.MAX_RESENDS


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


# -- the paced deadline (--round-deadline paced) --------------------------------------

FAST, SLOW = 4.0, 28.0
"""Two devices answer after 4 s: the fixed policy closes at 4 + max(10, 4) = 14 s; the
third needs 28 s, twice that."""


def _rounds(clock: Clock, delays: dict[int, float | None], rounds: int,
            pace: PaceBook | None, changes: dict[int, dict[int, float | None]] | None = None
            ) -> list[tuple[set[int], float]]:
    """Run ``rounds`` rounds on one grid; per round the late nodes and its length.

    ``changes[r]`` updates the delays before round ``r`` (1-based).
    """
    inner = ScriptedGrid(clock, dict(delays))
    grid = PromptGrid(inner, quorum=0.5, grace=1.0, pace=pace)  # type: ignore[arg-type]
    out = []
    for run_round in range(1, rounds + 1):
        inner.delays.update((changes or {}).get(run_round, {}))
        start = clock.now
        messages = [Message(RecordDict(), dst_node_id=node, message_type="train")
                    for node in delays]
        replies = list(grid.send_and_receive(messages, timeout=300))
        assert len(replies) == len(delays)
        out.append(({r.metadata.src_node_id for r in replies if _late(r)},
                     clock.now - start))
        clock.sleep(5.0)  # aggregation between rounds
    return out


def test_the_fixed_deadline_drops_a_device_twice_as_slow_as_the_grace_every_round(
        clock: Clock) -> None:
    """Default policy: the slow device is 'no reply by the deadline' in every round."""
    # Prepare
    delays: dict[int, float | None] = {1: FAST, 2: FAST, 3: SLOW}
    # Execute
    rounds = _rounds(clock, delays, 4, pace=None)
    # Assert
    assert [late for late, _ in rounds] == [{3}] * 4
    assert [took for _, took in rounds] == pytest.approx([14.0] * 4, abs=0.3)


def test_the_paced_deadline_waits_for_a_known_slow_device_every_round(
        clock: Clock) -> None:
    """Paced: left out once (never seen: plain grace), then waited for every round."""
    # Prepare
    delays: dict[int, float | None] = {1: FAST, 2: FAST, 3: SLOW}
    pace = PaceBook(margin=1.5, cap=10.0)
    # Execute
    rounds = _rounds(clock, delays, 5, pace)
    # Assert
    assert [late for late, _ in rounds] == [{3}, set(), set(), set(), set()]
    assert rounds[0][1] == pytest.approx(14.0, abs=0.3)
    assert [took for _, took in rounds[1:]] == pytest.approx([SLOW] * 4, abs=0.3)
    learned = pace.get("train", 3)
    assert learned is not None and learned.observed
    assert learned.seconds == pytest.approx(SLOW, abs=0.3)


def test_a_known_device_that_goes_silent_is_cut_at_the_cap(clock: Clock) -> None:
    """Known at 28 s (x 1.5 = 42 s expected), silent from round 3: cut at 10 x 4 s = 40 s.

    The round after, its guess (2 x 40 s) is still over the cap: cut at the cap again.
    """
    # Prepare
    delays: dict[int, float | None] = {1: FAST, 2: FAST, 3: SLOW}
    pace = PaceBook(margin=1.5, cap=10.0, min_cap_s=0.0)
    # Execute
    rounds = _rounds(clock, delays, 4, pace, changes={3: {3: SILENT}})
    # Assert
    assert [late for late, _ in rounds] == [{3}, set(), {3}, {3}]
    assert [took for _, took in rounds[2:]] == pytest.approx([40.0, 40.0], abs=0.3)


def test_a_quick_quorum_does_not_cut_a_known_slow_device(clock: Clock) -> None:
    """A device known at 28 s is waited for (42 s), not cut at 10 x 4 s.

    The cap's 60 s floor; silent, the device costs at most the floor.
    """
    # Prepare
    delays: dict[int, float | None] = {1: FAST, 2: FAST, 3: SLOW}
    pace = PaceBook(margin=1.5, cap=10.0)
    # Execute
    rounds = _rounds(clock, delays, 4, pace, changes={3: {3: SILENT}})
    # Assert: silent from round 3, it holds that round until its expected 42 s, and
    # the next (its guess now 2 x 42 s) until the floor
    assert [late for late, _ in rounds] == [{3}, set(), {3}, {3}]
    assert [took for _, took in rounds[2:]] == pytest.approx([42.0, 60.0], abs=0.5)


def test_a_silent_device_costs_its_expected_time_when_under_the_cap(
        clock: Clock) -> None:
    """Known at 10 s: silent, it holds the round until 1.5 x 10 s, not the cap (40 s)."""
    # Prepare
    delays: dict[int, float | None] = {1: FAST, 2: FAST, 3: 10.0}
    pace = PaceBook(margin=1.5, cap=10.0)
    # Execute
    rounds = _rounds(clock, delays, 3, pace, changes={3: {3: SILENT}})
    # Assert
    assert [late for late, _ in rounds] == [set(), set(), {3}]
    assert rounds[2][1] == pytest.approx(15.0, abs=0.3)


def test_a_paced_round_closes_at_the_grace_once_the_known_devices_answered(
        clock: Clock) -> None:
    """A never-seen silent device gets the plain grace, also next to a known slow one."""
    # Prepare
    delays: dict[int, float | None] = {1: FAST, 2: FAST, 3: 12.0}
    pace = PaceBook(margin=1.5, cap=10.0)
    _rounds(clock, delays, 1, pace)
    inner = ScriptedGrid(clock, {1: FAST, 2: FAST, 3: 12.0, 4: SILENT})
    grid = PromptGrid(inner, quorum=0.5, grace=1.0, pace=pace)  # type: ignore[arg-type]
    messages = [Message(RecordDict(), dst_node_id=node, message_type="train")
                for node in (1, 2, 3, 4)]
    start = clock.now
    # Execute
    replies = list(grid.send_and_receive(messages, timeout=300))
    # Assert: 3 (expected by 18 s) answers at 12 s; 4 is cut at the grace, 14 s
    assert {r.metadata.src_node_id for r in replies if _late(r)} == {4}
    assert clock.now - start == pytest.approx(14.0, abs=0.3)


def test_the_pace_estimate_is_robust_to_one_outlier() -> None:
    """One reply 10x slower moves the estimate by ALPHA x (CLIP - 1) x, not 10x."""
    # Prepare
    book = PaceBook()
    for _ in range(3):
        book.replied("train", 7, 10.0)
    # Execute
    book.replied("train", 7, 100.0)
    # Assert
    pace = book.get("train", 7)
    assert pace is not None
    assert pace.seconds == pytest.approx(10.0 + ALPHA * (CLIP - 1) * 10.0)
    assert book.get("evaluate", 7) is None  # paces are per message type


def test_a_paced_round_only_looks_at_its_own_devices(clock: Clock) -> None:
    """The book of a thousand idle devices is not read: a round's work is its devices."""
    # Prepare
    pace = PaceBook()
    for node in range(1000, 2000):
        pace.replied("train", node, 250.0)  # slow, but not in this round

    class Counting(dict[tuple[str, int], Pace]):
        """Counts lookups; reading the whole book fails the test."""

        reads = 0

        def get(self, key: object, default: object = None) -> object:  # type: ignore[override]
            Counting.reads += 1
            return super().get(key, default)  # type: ignore[arg-type]

        def _whole(self, *_: object) -> object:
            raise AssertionError("the whole pace book was read")

        __iter__ = items = values = keys = _whole  # type: ignore[assignment]

    pace._paces = Counting(pace._paces)  # count the reads
    # Execute
    replies, took = _send(clock, {1: FAST, 2: FAST, 3: SILENT}, quorum=0.5, grace=1.0,
                          pace=pace)  # type: ignore[arg-type]
    # Assert
    assert _late(replies[3]) and took == pytest.approx(14.0, abs=0.3)
    assert Counting.reads <= 6


class _Recording:
    """A grid stand-in that records every call and returns its name."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = []
        self.run = "the run"

    def __getattr__(self, name: str) -> object:
        def call(*args: object, **kwargs: object) -> str:
            self.calls.append((name, args, kwargs))
            return name
        return call


def test_a_wrapped_grid_passes_every_call_through() -> None:
    """Each of Flower's Grid methods reaches the wrapped grid unchanged."""
    # Prepare
    inner = _Recording()
    wrapped = WrappedGrid(inner)  # type: ignore[arg-type]
    message = Message(RecordDict(), dst_node_id=1, message_type="train")
    # Execute
    answers = [wrapped.set_run(7), wrapped.create_message(1, key="v"),
               wrapped.get_node_ids(), wrapped.push_messages([message]),
               wrapped.pull_messages(["id"]),
               wrapped.send_and_receive([message], timeout=3.0)]
    # Assert
    assert wrapped.run == "the run"
    assert answers == [None, "create_message", "get_node_ids", "push_messages",
                       "pull_messages", "send_and_receive"]
    assert inner.calls == [("set_run", (7,), {}), ("create_message", (1,), {"key": "v"}),
                           ("get_node_ids", (), {}), ("push_messages", ([message],), {}),
                           ("pull_messages", (["id"],), {}),
                           ("send_and_receive", ([message],), {"timeout": 3.0})]
