"""A Grid that collects replies promptly and closes a round once enough have arrived.

Flower 1.42's deployment grid checks for replies every 3 seconds, so every message
round trip is rounded up to the next 3-second tick, and a round waits for every
device until its timeout. ``PromptGrid`` wraps it and polls with the same public
``pull_messages`` call every ``poll`` seconds, and closes the round early:

- once ``quorum`` (a fraction) of the sampled devices have sent a usable reply (not an
  error), the round waits ``grace`` times as long again as the quorum took, but at
  least :data:`MIN_GRACE` seconds, for the rest; the timeout stays the hard deadline.
  A silent device therefore costs a round about twice the median device's time, not
  the whole timeout, and an honest device up to twice as slow as the median still
  makes it.
- every device that has not answered when the round closes gets an error reply
  (code :data:`~fedfleet.server.intake.DEADLINE_CODE`, "no reply by the deadline")
  in its name, so the record names it; its reply, if it comes later, is never pulled.
- an error reply the SuperLink made for a device (node unavailable: sent from the
  SuperLink's own node id) is put back in the name of the device it was meant for.

Everything else is passed through unchanged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Error, Message
from flwr.serverapp import Grid

from fedfleet.server.intake import DEADLINE_CODE, DEADLINE_REASON
from fedfleet.server.progress import ProgressFile

DEFAULT_POLL = 0.2
MIN_GRACE = 10.0
"""Seconds a round waits after its quorum at least: an idle SuperNode looks for work
every 3 s and starting a ClientApp takes 3-5 s on a busy device, so devices of the
same speed can finish that far apart."""


class PromptGrid(Grid):
    """Delegates to ``grid``; ``send_and_receive`` polls and closes rounds early."""

    def __init__(self, grid: Grid, poll: float = DEFAULT_POLL, quorum: float = 1.0,
                 grace: float = 1.0, min_grace: float = MIN_GRACE,
                 progress: ProgressFile | None = None) -> None:
        """Wrap ``grid``; ``quorum`` 1.0 waits for every device (up to the timeout).

        ``progress`` hears of instructions sent and replies received, for live views.
        """
        self._grid = grid
        self._poll = poll
        self._quorum = quorum
        self._grace = grace
        self._min_grace = min_grace
        self._progress = progress

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
        """Push ``messages``; collect replies until all arrived or the round closes.

        Returns one reply per message pushed: the device's, or one made here saying
        it did not answer in time.
        """
        messages = list(messages)
        start = time.monotonic()
        ids = list(self.push_messages(messages))
        sent = {mid: msg for mid, msg in zip(ids, messages, strict=False) if mid}
        pending = set(sent)
        if self._progress is not None and sent:
            self._progress.asked(messages[0].metadata.message_type,
                                 [_node(msg) for msg in sent.values()])
        deadline = math.inf if timeout is None else start + timeout
        needed = max(1, math.ceil(self._quorum * len(sent)))
        usable = 0
        replies: list[Message] = []
        while pending and time.monotonic() < deadline:
            for reply in self.pull_messages(pending):
                mid = reply.metadata.reply_to_message_id
                if mid not in pending:
                    continue
                pending.discard(mid)
                replies.append(_in_name_of(reply, sent[mid]))
                if self._progress is not None:
                    self._progress.answered(_node(sent[mid]), not reply.has_error())
                if not reply.has_error():
                    usable += 1
                    if usable == needed and pending:
                        took = time.monotonic() - start
                        deadline = min(deadline, time.monotonic()
                                       + max(self._min_grace, self._grace * took))
            if pending:
                time.sleep(self._poll)
        waited = time.monotonic() - start
        if self._progress is not None:
            self._progress.silent(_node(sent[mid]) for mid in pending)
        for mid in sorted(pending):
            replies.append(Message(Error(DEADLINE_CODE, f"{DEADLINE_REASON} (the round "
                                         f"closed after {waited:.1f}s with {usable} of "
                                         f"{len(sent)} replies)"), reply_to=sent[mid]))
        return replies


def _node(instruction: Message) -> str:
    return str(instruction.metadata.dst_node_id)


def _in_name_of(reply: Message, instruction: Message) -> Message:
    """Return ``reply``, an error from the SuperLink re-addressed to its device."""
    if reply.has_error() and reply.metadata.src_node_id != instruction.metadata.dst_node_id:
        return Message(reply.error, reply_to=instruction)
    return reply
