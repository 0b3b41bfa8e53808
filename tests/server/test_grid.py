"""PromptGrid collects replies as they come, within the timeout."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from fedfleet.server.grid import PromptGrid


class _Reply:
    def __init__(self, reply_to: str) -> None:
        self.metadata = type("M", (), {"reply_to_message_id": reply_to})()


class SlowGrid:
    """Replies to message i after i * 0.3 s; records how often it was polled."""

    def __init__(self) -> None:
        self.start = 0.0
        self.pulls = 0
        self.given: set[str] = set()

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        self.start = time.monotonic()
        return [str(i) for i, _ in enumerate(messages)]

    def pull_messages(self, ids: Iterable[str]) -> list[_Reply]:
        self.pulls += 1
        ready = [i for i in ids if time.monotonic() - self.start >= int(i) * 0.3
                 and i not in self.given]
        self.given.update(ready)
        return [_Reply(i) for i in ready]


def test_replies_are_collected_promptly() -> None:
    """Replies are pulled every poll interval, not on Flower's 3-second tick."""
    inner = SlowGrid()
    grid = PromptGrid(inner, poll=0.05)  # type: ignore[arg-type]
    replies = list(grid.send_and_receive([object()] * 3, timeout=10))
    assert len(replies) == 3
    assert inner.pulls > 3


def test_timeout_returns_what_arrived() -> None:
    """Late replies are left behind when the timeout passes."""
    grid = PromptGrid(SlowGrid(), poll=0.05)  # type: ignore[arg-type]
    replies = list(grid.send_and_receive([object()] * 10, timeout=0.5))
    assert 1 <= len(replies) < 10
