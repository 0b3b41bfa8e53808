"""Each device's learned reply time, and the paced round deadline built on it.

With ``--round-deadline paced`` :class:`~fedfleet.server.run.grid.PromptGrid` keeps a
:class:`PaceBook`: per device (and message type) an estimate of the seconds from the
push of its instruction to its usable reply.

- A usable reply after ``t`` seconds updates the estimate with a robust EWMA: the
  observation is clipped to :data:`CLIP` times (or 1/:data:`CLIP` of) the estimate, then
  weighted :data:`ALPHA`. One hiccup (a busy device, a slow network) moves the
  estimate a little; a lasting change moves it within a few rounds.
- A device that has not answered when its round closed after ``w`` seconds needed
  more than ``w``: its estimate becomes ``max(estimate, PROBE x w)``, marked as a guess;
  its next real reply replaces a guess outright. The next round therefore waits
  ``PROBE x margin`` (3) times as long for it, at most up to the cap: a device up to
  that much slower than the round that left it out contributes from the next round
  on, a slower one within a few rounds. Waiting for a device that then answers costs
  only its own reply time; waiting for one that stays silent costs at most the cap.
- A reply that is an error, and a device that was offline, tell nothing about pace.

When a round has its quorum after ``q`` seconds (:class:`PacedClose`), it closes at
the latest of the plain grace deadline (``q + max(10 s, grace x q)``, what
``--round-deadline fixed`` does) and the expected reply time (estimate x ``margin``) of
the slowest device of the round that has not answered yet, but no later than ``cap x
q`` (or :data:`MIN_CAP_S` after the round's start, if later) and the round timeout,
the grid's hard deadline. Devices without an estimate (never asked) get the plain
grace. Once every known device of the round has answered,
the round closes at the plain deadline again. The work is per device of the round: a
sort at the quorum, an amortized pop per reply; idle devices cost nothing.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass

ALPHA = 0.3
"""Weight of a new reply time in the estimate."""
CLIP = 3.0
"""A reply time counts at most this many times the estimate (at least 1/CLIP of it)."""
PROBE = 2.0
"""A device that missed a round that closed after ``w`` seconds is guessed to need
this many times ``w``."""
DEFAULT_MARGIN = 1.5
DEFAULT_CAP = 10.0
MIN_CAP_S = 60.0
"""Seconds the cap allows at least: with a quick quorum (2-3 s) ``cap x q`` alone would
leave out a device only ~10x slower than the fastest, e.g. a 20 s device beside a
fast one (measured: round closed at 26.4 s with the slow device 34 s away)."""


@dataclass(frozen=True)
class Pace:
    """A device's expected reply time; ``observed`` False: a guess after a miss."""

    seconds: float
    observed: bool


class PaceBook:
    """Reply-time estimates of the devices asked so far, by message type and node."""

    def __init__(self, margin: float = DEFAULT_MARGIN, cap: float = DEFAULT_CAP,
                 min_cap_s: float = MIN_CAP_S) -> None:
        """Wait ``margin`` x a device's estimate, at most ``cap`` x the quorum's time.

        (or ``min_cap_s`` after the round's start, if that is later).

        Raises
        ------
        ValueError
            If ``margin`` or ``cap`` is below 1.
        """
        if margin < 1 or cap < 1:
            raise ValueError(f"pace margin ({margin}) and cap ({cap}) must be >= 1")
        self.margin = margin
        self.cap = cap
        self.min_cap_s = min_cap_s
        self._paces: dict[tuple[str, int], Pace] = {}

    def get(self, kind: str, node: int) -> Pace | None:
        """Return the estimate of ``node`` for messages of type ``kind``, if any."""
        return self._paces.get((kind, node))

    def replied(self, kind: str, node: int, seconds: float) -> None:
        """Learn from a usable reply that came ``seconds`` after the push."""
        old = self._paces.get((kind, node))
        if old is None or not old.observed or old.seconds <= 0:
            self._paces[(kind, node)] = Pace(seconds, True)
            return
        seen = min(max(seconds, old.seconds / CLIP), old.seconds * CLIP)
        self._paces[(kind, node)] = Pace((1 - ALPHA) * old.seconds + ALPHA * seen, True)

    def missed(self, kind: str, nodes: Iterable[int], waited: float) -> None:
        """Learn that ``nodes`` had not answered when their round closed after ``waited``."""
        guess = PROBE * waited
        for node in nodes:
            old = self._paces.get((kind, node))
            if old is None or old.seconds < guess:
                self._paces[(kind, node)] = Pace(guess, False)

    def close(self, kind: str, start: float, took: float, plain: float,
              pending: Iterable[int]) -> PacedClose:
        """Return when a round that had its quorum ``took`` seconds in may close.

        ``start`` is when its instructions were pushed, ``plain`` the fixed policy's
        deadline, ``pending`` the devices that have not answered yet.
        """
        expected = []
        for node in pending:
            pace = self._paces.get((kind, node))
            if pace is not None:
                expected.append((pace.seconds * self.margin, node))
        return PacedClose(start, plain, start + max(self.cap * took, self.min_cap_s),
                          expected)


class PacedClose:
    """The closing time of one round, as its known devices answer."""

    def __init__(self, start: float, plain: float, cap_at: float,
                 expected: list[tuple[float, int]]) -> None:
        """Close after ``plain`` and by ``cap_at``; ``expected``: (seconds, node)."""
        self.start = start
        self.plain = plain
        self.cap_at = cap_at
        self._queue = sorted(expected)

    def deadline(self, pending: Container[int]) -> float:
        """Return the closing time while ``pending`` devices have not answered."""
        while self._queue and self._queue[-1][1] not in pending:
            self._queue.pop()
        if not self._queue:
            return self.plain
        return max(self.plain, min(self.cap_at, self.start + self._queue[-1][0]))
