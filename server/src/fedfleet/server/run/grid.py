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
- with a :class:`~fedfleet.server.run.pace.PaceBook` (``--round-deadline paced``) the
  round may wait longer after its quorum: until the slowest device of the round that
  has not answered is expected to (its learned reply time x a margin), at most ``cap``
  times as long as the quorum took; see :mod:`fedfleet.server.run.pace`. The grid tells the
  book every usable reply's time and every device still silent at the close.
- every device that has not answered when the round closes gets an error reply
  (code :data:`~fedfleet.server.run.intake.DEADLINE_CODE`, "no reply by the deadline")
  in its name, so the record names it; its reply, if it comes later, is never pulled:
  it was computed on the previous global model, and Flower's strategies (and the reply
  intake's norm check against the round's global model) have no notion of a stale
  update, so folding it into the next round would be unsound for most of them. The
  paced deadline waits for a known-slow device instead, so it is not late at all.
- an error reply the SuperLink made for a device (node unavailable: sent from the
  SuperLink's own node id) is put back in the name of the device it was meant for.
- a device the SuperLink calls unavailable (its SuperNode stopped: a restart, an update
  by ``fedfleet fleet``) is asked again when it is back online while the round is still
  open: the message is sent once more, and the device counts as pending until then.
  If it is not back when the round closes, the SuperLink's error stands.

Everything else is passed through unchanged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Error, Message
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedfleet.server.run.intake import DEADLINE_CODE, DEADLINE_REASON
from fedfleet.server.run.pace import PaceBook, PacedClose
from fedfleet.server.run.progress import ProgressFile

log = logging.getLogger("fedfleet")

DEFAULT_POLL = 0.2
MIN_GRACE = 10.0
"""Seconds a round waits after its quorum at least: an idle SuperNode looks for work
every 3 s and starting a ClientApp takes 3-5 s on a busy device, so devices of the
same speed can finish that far apart."""
RETURN_CHECK = 2.0
"""Seconds between looks at the online nodes while a device of the round is away."""
MAX_RESENDS = 3
"""Times one message is sent again in a round to a device that went away and came back."""


class WrappedGrid(Grid):
    """A grid that passes every call through to the ``grid`` it wraps.

    Subclasses override what they change (:class:`PromptGrid`,
    :class:`~fedfleet.server.simulation.availability.AvailabilityGrid`).
    """

    def __init__(self, grid: Grid) -> None:
        """Wrap ``grid``."""
        self._grid = grid

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
        """Pass through."""
        return self._grid.send_and_receive(messages, timeout=timeout)


class PromptGrid(WrappedGrid):
    """Delegates to ``grid``; ``send_and_receive`` polls and closes rounds early."""

    def __init__(self, grid: Grid, poll: float = DEFAULT_POLL, quorum: float = 1.0,
                 grace: float = 1.0, min_grace: float = MIN_GRACE,
                 progress: ProgressFile | None = None, pace: PaceBook | None = None
                 ) -> None:
        """Wrap ``grid``; ``quorum`` 1.0 waits for every device (up to the timeout).

        ``progress`` hears of instructions sent and replies received, for live views;
        ``pace`` (the paced deadline) learns each device's reply time and may keep a
        round open after the quorum for the devices it expects.
        """
        super().__init__(grid)
        self._poll = poll
        self._quorum = quorum
        self._grace = grace
        self._min_grace = min_grace
        self._progress = progress
        self.pace = pace

    def round_started(self, run_round: int) -> None:
        """Tell the wrapped grid which run round starts, if it wants to know.

        (The simulation's availability grid does: which virtual devices are online
        depends on the round.)
        """
        started = getattr(self._grid, "round_started", None)
        if callable(started):
            started(run_round)

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
        instruction = dict(sent)  # message id (first or re-sent) -> the round's message
        pending = set(sent)
        away: dict[int, tuple[Message, Message]] = {}  # node -> (message, "unavailable")
        resends: dict[int, int] = {}
        if self._progress is not None and sent:
            self._progress.asked(messages[0].metadata.message_type,
                                 [_node(msg) for msg in sent.values()])
        kind = messages[0].metadata.message_type if messages else ""
        hard = math.inf if timeout is None else start + timeout
        deadline = hard
        closing: PacedClose | None = None
        waiting = {instruction[mid].metadata.dst_node_id for mid in pending}
        needed = max(1, math.ceil(self._quorum * len(sent)))
        usable = 0
        replies: list[Message] = []
        next_check = start + RETURN_CHECK
        while (pending or away) and time.monotonic() < deadline:
            for reply in self.pull_messages(pending) if pending else ():
                mid = reply.metadata.reply_to_message_id
                if mid not in pending:
                    continue
                pending.discard(mid)
                original = instruction[mid]
                node = original.metadata.dst_node_id
                if _unavailable(reply, original) and resends.get(node, 0) < MAX_RESENDS:
                    away[node] = (original, _in_name_of(reply, original))
                    log.info("Node %s went offline before its %s reply; it is asked again "
                             "if it is back while the round is open", node,
                             original.metadata.message_type)
                    continue
                waiting.discard(node)
                replies.append(_in_name_of(reply, original))
                if self._progress is not None:
                    self._progress.answered(_node(original), not reply.has_error())
                if not reply.has_error():
                    usable += 1
                    took = time.monotonic() - start
                    if self.pace is not None:
                        self.pace.replied(kind, node, took)
                    if usable == needed and (pending or away):
                        plain = time.monotonic() + max(self._min_grace, self._grace * took)
                        deadline = min(hard, plain)
                        if self.pace is not None:
                            closing = self.pace.close(kind, start, took, plain, waiting)
                if closing is not None:
                    deadline = min(hard, closing.deadline(waiting))
            if away and time.monotonic() >= next_check:
                next_check = time.monotonic() + RETURN_CHECK
                pending |= self._ask_again(away, resends, instruction)
            if pending or away:
                time.sleep(self._poll)
        waited = time.monotonic() - start
        if self.pace is not None:
            self.pace.missed(kind, (instruction[mid].metadata.dst_node_id
                                    for mid in pending), waited)
        replies.extend(error for _, error in away.values())
        if self._progress is not None:
            self._progress.silent(_node(instruction[mid]) for mid in pending)
            for node in away:
                self._progress.answered(str(node), False)
        for mid in sorted(pending):
            replies.append(Message(Error(DEADLINE_CODE, f"{DEADLINE_REASON} (the round "
                                         f"closed after {waited:.1f}s with {usable} of "
                                         f"{len(sent)} replies)"), reply_to=instruction[mid]))
        return replies

    def _ask_again(self, away: dict[int, tuple[Message, Message]], resends: dict[int, int],
                   instruction: dict[str, Message]) -> set[str]:
        """Send the round's message again to the devices in ``away`` that are back.

        Returns the new message ids; ``instruction`` maps them to the round's messages.
        """
        online = set(self.get_node_ids())
        back = [node for node in away if node in online]
        if not back:
            return set()
        new_ids = set()
        for node in back:
            resends[node] = resends.get(node, 0) + 1
            try:
                mid = next(iter(self.push_messages([_copy(away[node][0])])), "")
            except Exception:  # it stays away; the round goes on
                continue
            if mid:
                instruction[mid] = away.pop(node)[0]
                new_ids.add(mid)
                log.info("Node %s is back online; sent its %s message again", node,
                         instruction[mid].metadata.message_type)
        return new_ids


def _unavailable(reply: Message, instruction: Message) -> bool:
    """Whether ``reply`` is the SuperLink saying the device is offline."""
    return (reply.has_error() and reply.error.code == ErrorCode.NODE_UNAVAILABLE
            and reply.metadata.src_node_id != instruction.metadata.dst_node_id)


def _copy(instruction: Message) -> Message:
    """Return a new message with ``instruction``'s content, destination and type."""
    meta = instruction.metadata
    return Message(instruction.content, dst_node_id=meta.dst_node_id,
                   message_type=meta.message_type, group_id=meta.group_id)


def _node(instruction: Message) -> str:
    return str(instruction.metadata.dst_node_id)


def _in_name_of(reply: Message, instruction: Message) -> Message:
    """Return ``reply``, an error from the SuperLink re-addressed to its device."""
    if reply.has_error() and reply.metadata.src_node_id != instruction.metadata.dst_node_id:
        return Message(reply.error, reply_to=instruction)
    return reply
