"""A stand-in for a module's ``time``: it moves only when slept on, and runs what is due."""

from __future__ import annotations

from collections.abc import Callable


class FakeClock:
    """``monotonic()`` and ``sleep()`` of a clock that only moves when slept on.

    ``at(when, action)`` runs ``action`` once the clock has been slept past ``when``,
    in time order, so a test can script what happens while the code under test waits.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self._due: list[tuple[float, Callable[[], None]]] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        while self._due and self._due[0][0] <= self.now:
            _, action = self._due.pop(0)
            action()

    def at(self, when: float, action: Callable[[], None]) -> None:
        self._due.append((when, action))
        self._due.sort(key=lambda item: item[0])
