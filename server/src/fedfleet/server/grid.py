"""A Grid that collects replies promptly.

Flower 1.42's deployment grid checks for replies every 3 seconds, so every message
round trip is rounded up to the next 3-second tick. ``PromptGrid`` wraps it and
polls with the same public ``pull_messages`` call every ``poll`` seconds; everything
else is passed through unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

DEFAULT_POLL = 0.2


class PromptGrid(Grid):
    """Delegates to ``grid``; ``send_and_receive`` polls every ``poll`` seconds."""

    def __init__(self, grid: Grid, poll: float = DEFAULT_POLL) -> None:
        """Wrap ``grid``."""
        self._grid = grid
        self._poll = poll

    def set_run(self, run: Any) -> None:
        """Pass through."""
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        """Pass through."""
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        """Pass through."""
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        """Pass through."""
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Pass through."""
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pass through."""
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages`` and collect replies until all arrived or ``timeout``."""
        pending = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending and (deadline is None or time.monotonic() < deadline):
            got = list(self.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if pending:
                time.sleep(self._poll)
        return replies
